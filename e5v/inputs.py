"""Turn what users pass to ``encode`` into uniform items; images are probed here, decoded per batch.

Accepted item shapes:
    str                              -> text item
    PIL.Image / pathlib.Path / bytes -> image item (a Path is read from disk, bytes are decoded)
    {"image": ..., "text": ...}      -> composed item (image + modification text)
    {"image": ...} / {"text": ...}   -> image item / text item

An image item holds an :class:`~e5v.imagefile.ImageSource`: its header was read and checked (format
allowlist, pixel budget, aspect ratio) but no pixel was decoded, so a call over many large photos holds
their encoded bytes or paths only; the encoder decodes one batch at a time (``ImageSource.decode``).
Every failure raises :class:`~e5v.errors.InputError` naming the item's index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import InputError
from .items import Kind
from .imagefile import (DEFAULT_FORMATS, DEFAULT_MAX_PIXELS, MAX_ASPECT_RATIO, MIN_SIDE, ImageLimits,  # noqa: F401
                        ImageSource, load_image, probe, to_rgb)



@dataclass(frozen=True)
class Item:
    """One thing to embed. ``kind`` decides the prompt; ``image`` is probed, decoded at batch time."""

    kind: Kind
    text: str | None = None
    image: ImageSource | None = None


def to_item(obj: Any, index: int | None = None, limits: ImageLimits = ImageLimits()) -> Item:
    """Normalise one input; see the module docstring for accepted shapes."""
    if isinstance(obj, Item):
        return obj
    if isinstance(obj, str):
        return Item("text", text=check_text(obj, index))
    if isinstance(obj, (ImageSource, Image.Image, Path, bytes, bytearray, memoryview)):
        return Item("image", image=probe(obj, index, limits))
    if isinstance(obj, dict):
        unknown = set(obj) - {"image", "text"}
        if unknown:
            raise InputError(f"unknown keys {sorted(unknown)} in dict item; use 'image' and/or 'text'", index)
        has_image = obj.get("image") is not None
        has_text = obj.get("text") is not None
        if has_image and has_text:
            return Item("composed", text=check_text(obj["text"], index), image=probe(obj["image"], index, limits))
        if has_image:
            return Item("image", image=probe(obj["image"], index, limits))
        if has_text:
            return Item("text", text=check_text(obj["text"], index))
        raise InputError("dict item needs an 'image' and/or a 'text' value", index)
    if isinstance(obj, os.PathLike):
        return Item("image", image=probe(Path(obj), index, limits))
    raise InputError(
        f"cannot embed an item of type {type(obj).__name__}; pass str (text), PIL.Image/Path/bytes (image) "
        "or a dict with 'image' and 'text' (composed)",
        index,
    )


def check_text(text: Any, index: int | None) -> str:
    """Text must be a non-blank string: a blank one would embed the bare prompt, a silent wrong vector."""
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}", index)
    if not text.strip():
        raise InputError("text is empty", index)
    return text
