"""e5v: universal multimodal embeddings with E5-V (text, images and image+text in one space).

Heavy modules (torch, transformers) load on first use of ``E5V``, so ``e5v --help`` stays instant.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "E5V",
    "EncodeResult",
    "PromptSet",
    "E5VError",
    "InputError",
    "ModelLoadError",
    "ConfigMismatchError",
    "MissingExtraError",
    "__version__",
]

_LAZY = {
    "E5V": "e5v.encoder",
    "EncodeResult": "e5v.encoder",
    "PromptSet": "e5v.prompts",
    "E5VError": "e5v.errors",
    "InputError": "e5v.errors",
    "ModelLoadError": "e5v.errors",
    "ConfigMismatchError": "e5v.errors",
    "MissingExtraError": "e5v.errors",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'e5v' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
