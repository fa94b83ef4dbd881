"""Model families, chosen from the model config by a registry, never guessed (see ``base.Family``).

``REGISTRY`` maps ``config.model_type`` to the family's class, imported lazily; a new family is a module here
and one line below.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Family

#: config.model_type -> "module:Class"
REGISTRY: dict[str, str] = {
    "llava_next": "e5v.families.llava_next:LlavaNext",
    "qwen2_vl": "e5v.families.qwen2_vl:Qwen2VL",
    "qwen2_5_vl": "e5v.families.qwen2_vl:Qwen2VL",
}

_LOADED: dict[str, Family] = {}


def load_family(target: str) -> Family:
    if target not in _LOADED:
        module, _, attr = target.partition(":")
        _LOADED[target] = getattr(importlib.import_module(module), attr)()
    return _LOADED[target]


def all_families() -> list[Family]:
    """Every registered family, once each."""
    return [load_family(t) for t in dict.fromkeys(REGISTRY.values())]


def family_for(config: Any) -> Family:
    """The family of a model config; unsupported architectures get an error listing the supported ones."""
    from ..errors import ModelLoadError

    model_type = getattr(config, "model_type", None)
    if model_type in REGISTRY:
        return load_family(REGISTRY[model_type])
    supported = ", ".join(a for f in all_families() for a in f.architectures)
    architectures = ", ".join(getattr(config, "architectures", None) or []) or "no architecture"
    raise ModelLoadError(f"unsupported model: {model_type} ({architectures}); e5v supports: {supported}")


__all__ = ["Family", "REGISTRY", "all_families", "family_for"]
