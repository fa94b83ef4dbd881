"""Model families, chosen from the model config by a registry, never guessed (see ``base.Family``).

``REGISTRY`` maps a family name to its class, imported lazily; each family lists the ``config.model_type``
values it covers. A new family is a module here and one line below.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .base import Family

#: family name -> "module:Class". Several families may cover one model_type (GME is a Qwen2-VL): the first
#: listed for a model_type is its default; the others are chosen by name or by their marker files.
REGISTRY: dict[str, str] = {
    "llava_next": "e5v.families.llava_next:LlavaNext",
    "qwen2_vl": "e5v.families.qwen2_vl:Qwen2VL",
    "gme": "e5v.families.gme:GME",
    "vlm2vec": "e5v.families.vlm2vec:VLM2Vec",
    "jina_v4": "e5v.families.jina_v4:JinaV4",
    "qwen3_vl_embedding": "e5v.families.qwen3_vl_embedding:Qwen3VLEmbedding",
}

_LOADED: dict[str, Family] = {}


def load_family(target: str) -> Family:
    if target not in _LOADED:
        module, _, attr = target.partition(":")
        _LOADED[target] = getattr(importlib.import_module(module), attr)()
    return _LOADED[target]


def all_families() -> list[Family]:
    """Every registered family, once each, in registry order."""
    return [load_family(t) for t in dict.fromkeys(REGISTRY.values())]


def family_names() -> list[str]:
    return list(REGISTRY)


def pooler_names() -> list[str]:
    """Every pooler some family offers (CLI choices; each model checks its own family's)."""
    return sorted({name for family in all_families() for name in family.poolers})


def family_for(config: Any, path: Path | None = None, name: str | None = None) -> Family:
    """The family of a model: ``name`` if given (it must cover the config's model_type), else a family whose
    config names one of its marker architectures or whose marker files are in ``path``, else the first family registered for the model_type. Unsupported
    architectures get an error listing the supported ones."""
    from ..errors import ModelLoadError

    model_type = getattr(config, "model_type", None)
    if name is not None:
        if name not in REGISTRY:
            raise ValueError(f"unknown model family {name!r}; choose one of {family_names()}")
        family = load_family(REGISTRY[name])
        if model_type not in family.model_types:
            raise ModelLoadError(f"the {name} family covers {list(family.model_types)} models, not {model_type!r}")
        return family
    covering = [f for f in all_families() if model_type in f.model_types]
    architectures = set(getattr(config, "architectures", None) or [])
    for family in covering:
        if architectures & set(family.marker_architectures):
            return family
    if path is not None:
        for family in covering:
            if family.marker_files and all((Path(path) / m).exists() for m in family.marker_files):
                return family
    if covering:
        return covering[0]
    supported = ", ".join(dict.fromkeys(a for f in all_families() for a in f.architectures))
    architectures = ", ".join(getattr(config, "architectures", None) or []) or "no architecture"
    raise ModelLoadError(f"unsupported model: {model_type} ({architectures}); e5v supports: {supported}")


__all__ = ["Family", "REGISTRY", "all_families", "family_for", "family_names", "pooler_names"]
