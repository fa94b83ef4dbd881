"""Turn what users pass to ``encode`` into uniform items, and decode images safely.

Accepted item shapes:
    str                              -> text item
    PIL.Image / pathlib.Path / bytes -> image item (a Path is read from disk, bytes are decoded)
    {"image": ..., "text": ...}      -> composed item (image + modification text)
    {"image": ...} / {"text": ...}   -> image item / text item

Images are opened with guards against decompression bombs, reduced to their first frame when
animated, turned upright per EXIF, and converted to 8-bit RGB the way transformers does
(transparency composited onto white), except that 16-bit images are scaled, not clipped.
Every failure raises :class:`~e5v.errors.InputError` naming the item's index.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

Kind = Literal["text", "image", "composed"]

#: Default cap on decoded pixels per image (about 8k x 8k). Larger images are refused, not decoded.
DEFAULT_MAX_PIXELS = 64_000_000
#: Smallest accepted side and the largest accepted aspect ratio. LLaVA-NeXT's anyres packing
#: un-pads feature maps by aspect ratio; past ~1:400 a side rounds to zero features.
MIN_SIDE = 1
MAX_ASPECT_RATIO = 200.0


@dataclass(frozen=True)
class Item:
    """One thing to embed. ``kind`` decides the prompt; ``image`` is already RGB."""

    kind: Kind
    text: str | None = None
    image: Image.Image | None = None


@dataclass(frozen=True)
class ImageLimits:
    """Safety limits applied when decoding images."""

    max_pixels: int = DEFAULT_MAX_PIXELS  # refuse images with more pixels than this (bomb guard)
    max_aspect_ratio: float = MAX_ASPECT_RATIO  # refuse extremely thin images


def to_item(obj: Any, index: int | None = None, limits: ImageLimits = ImageLimits()) -> Item:
    """Normalise one input; see the module docstring for accepted shapes."""
    if isinstance(obj, Item):
        return obj
    if isinstance(obj, str):
        return Item("text", text=check_text(obj, index))
    if isinstance(obj, (Image.Image, Path, bytes, bytearray, memoryview)):
        return Item("image", image=load_image(obj, index, limits))
    if isinstance(obj, dict):
        unknown = set(obj) - {"image", "text"}
        if unknown:
            raise InputError(f"unknown keys {sorted(unknown)} in dict item; use 'image' and/or 'text'", index)
        has_image = obj.get("image") is not None
        has_text = obj.get("text") is not None
        if has_image and has_text:
            return Item("composed", text=check_text(obj["text"], index), image=load_image(obj["image"], index, limits))
        if has_image:
            return Item("image", image=load_image(obj["image"], index, limits))
        if has_text:
            return Item("text", text=check_text(obj["text"], index))
        raise InputError("dict item needs an 'image' and/or a 'text' value", index)
    if isinstance(obj, os.PathLike):
        return Item("image", image=load_image(Path(obj), index, limits))
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


def load_image(source: Any, index: int | None = None, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Open and decode an image safely and return it as 8-bit RGB."""
    if isinstance(source, Image.Image):
        image = source
    else:
        image = _open(source, index)
    _check_size(image, index, limits)
    try:
        image.seek(0)  # animated GIF/WebP/APNG: the first frame, as browsers show as a still
    except (EOFError, AttributeError, ValueError):
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot decode image ({_describe(source)}): {exc}", index) from None
    return rgb


def _open(source: Any, index: int | None) -> Image.Image:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise InputError("image bytes are empty", index)
        stream: Any = io.BytesIO(data)
    elif isinstance(source, (str, Path, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"image file not found: {path}", index)
        if path.stat().st_size == 0:
            raise InputError(f"image file is empty (0 bytes): {path}", index)
        stream = path
    else:
        raise InputError(f"cannot read an image from {type(source).__name__}", index)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(stream)
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InputError(f"not a readable image ({_describe(source)}): {exc}", index) from None
    except OSError as exc:
        raise InputError(f"not a readable image ({_describe(source)}): {exc}", index) from None


def _check_size(image: Image.Image, index: int | None, limits: ImageLimits) -> None:
    """Check dimensions from the header, before decoding any pixel data."""
    width, height = image.size
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InputError(f"image has no pixels ({width}x{height})", index)
    if width * height > limits.max_pixels:
        raise InputError(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {limits.max_pixels:,} "
            "(possible decompression bomb); resize it or raise max_pixels",
            index,
        )
    ratio = max(width, height) / min(width, height)
    if ratio > limits.max_aspect_ratio:
        raise InputError(
            f"image is {width}x{height}, aspect ratio {ratio:.0f}:1 is over the limit of "
            f"{limits.max_aspect_ratio:.0f}:1; crop or pad it first",
            index,
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, transparency composited onto white (as transformers' ``convert_to_rgb``).

    16-bit and 32-bit integer/float greyscale are rescaled to 0..255 first: PIL's own conversion clips
    them, which would turn most 16-bit photos white (a silent wrong vector).
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        if image.mode == "I" and array.max() <= 255:
            top = 255.0
        array = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(array, mode="L")
    if image.mode == "RGB":
        return image
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _describe(source: Any) -> str:
    if isinstance(source, (str, Path, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"{len(source)} bytes"
    return type(source).__name__
