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


def backend_class(name: str, family=None) -> type[Backend]:
    """The backend class registered under ``name`` (for ``family``, an ``e5v.families.Family``).

    An unknown name lists the valid ones; a backend that does not support the family says which do.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    target = BACKENDS[name]
    if family is not None:
        if name not in family.backends:
            raise ValueError(f"the {name} backend does not support {family.name} models; use one of {list(family.backends)}")
        if name == "torch":
            target = family.torch_backend
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["BACKENDS", "Backend", "backend_class"]
