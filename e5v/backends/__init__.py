"""Backends run the three model parts the encoder needs; everything else is shared.

A backend implements :class:`~e5v.backends.base.Backend`. They are looked up by name here, lazily, so
that ``import e5v`` does not import OpenVINO.
"""

from __future__ import annotations

import importlib

from .base import Backend

#: name -> "module:Class"; a new backend is one line here.
BACKENDS: dict[str, str] = {
    "torch": "e5v.backends.torch_backend:TorchBackend",
    "openvino": "e5v.backends.openvino_backend:OpenVINOBackend",
}


def backend_class(name: str) -> type[Backend]:
    """The backend class registered under ``name``; an unknown name lists the valid ones."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["BACKENDS", "Backend", "backend_class"]
