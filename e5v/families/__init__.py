"""Model families, chosen from the model config, never guessed (see ``base.Family``).

Every module in this package that defines a ``Family`` subclass with a ``name`` is a family: adding one is adding
its module (no list to edit). Each family lists the ``config.model_type`` values it covers; for each model_type
exactly one family is its default (``default_for_config``), the others on the same architecture (GME, VLM2Vec,
... on Qwen2-VL) are chosen by name, by their marker architectures in the config, or by marker files in the
checkpoint directory.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from .base import Family

_FAMILIES: dict[str, Family] = {}


def _discover() -> dict[str, Family]:
    """name -> family instance, from this package's modules (imported once; they import no torch)."""
    if not _FAMILIES:
        found: dict[str, Family] = {}
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
            module = importlib.import_module(f"{__name__}.{info.name}")
            for obj in vars(module).values():
                if (isinstance(obj, type) and issubclass(obj, Family) and obj.__module__ == module.__name__
                        and obj.name):
                    if obj.name in found:
                        raise RuntimeError(f"two model families are named {obj.name!r}")
                    found[obj.name] = obj()
        defaults: dict[str, str] = {}
        for family in found.values():
            for model_type in family.model_types if family.default_for_config else ():
                if model_type in defaults:
                    raise RuntimeError(f"{defaults[model_type]} and {family.name} are both the default family for "
                                       f"{model_type!r}; set default_for_config = False on one")
                defaults[model_type] = family.name
        _FAMILIES.update(found)
    return _FAMILIES


def all_families() -> list[Family]:
    """Every family: for each model_type its default first, then the others, by name."""
    return sorted(_discover().values(), key=lambda f: (not f.default_for_config, f.name))


def family_names() -> list[str]:
    return sorted(_discover())


def pooler_names() -> list[str]:
    """Every pooler some family offers (CLI choices; each model checks its own family's)."""
    return sorted({name for family in all_families() for name in family.poolers})


def family_for(config: Any, path: Path | None = None, name: str | None = None) -> Family:
    """The family of a model: ``name`` if given (it must cover the config's model_type), else a family whose
    config names one of its marker architectures or whose marker files are in ``path``, else the default family
    of the model_type. Unsupported architectures get an error listing the supported ones."""
    from ..errors import ModelLoadError

    model_type = getattr(config, "model_type", None)
    if name is not None:
        if name not in _discover():
            raise ValueError(f"unknown model family {name!r}; choose one of {family_names()}")
        family = _discover()[name]
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
    defaults = [f for f in covering if f.default_for_config]
    if defaults:
        return defaults[0]
    supported = ", ".join(dict.fromkeys(a for f in all_families() for a in f.architectures))
    found = ", ".join(getattr(config, "architectures", None) or []) or "no architecture"
    raise ModelLoadError(f"unsupported model: {model_type} ({found}); e5v supports: {supported}")


__all__ = ["Family", "all_families", "family_for", "family_names", "pooler_names"]
