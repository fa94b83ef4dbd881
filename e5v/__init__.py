"""e5v: universal multimodal embeddings with E5-V (text, images and image+text in one space)."""

from __future__ import annotations

__version__ = "0.1.0"

from .encoder import E5V, EncodeResult  # noqa: E402
from .errors import ConfigMismatchError, E5VError, InputError, MissingExtraError, ModelLoadError  # noqa: E402
from .prompts import PromptSet  # noqa: E402

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
