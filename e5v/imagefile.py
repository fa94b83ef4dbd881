"""The one boundary where untrusted image bytes become pixels.

Two steps, with every check between them (Pillow's ``Image.open`` is lazy: it reads the header only):

    probe(source)  -> ImageSource   header only: format allowlist, pixel budget, aspect ratio, upright size
    ImageSource.decode()  -> RGB    the pixels: complete-data check, first frame, EXIF orientation, 8-bit RGB

``probe`` is cheap (no pixel is decoded), so callers can plan batches and budgets from sizes and decode
one batch at a time. Whatever a decoder raises inside either step (``OSError``, ``struct.error``,
``ValueError``, ``TypeError``, ``NotImplementedError``, ``MemoryError``, ...) leaves as
:class:`~e5v.errors.InputError`: a hostile file is a bad *item*, never a crashed job.

Why each guard exists (docs/inputs.md has the defaults):
* format allowlist: Pillow otherwise runs Ghostscript for EPS and rarely used decoders (SGI, DDS, IM, ...)
  widen the attack surface;
* pixel budget from the header: a 1 kB lossless WebP can claim 5000x5000 (100 MB decoded);
* complete-data check for JPEG: libjpeg fills missing data with grey and only *warns* (Pillow drops the
  warning), so a truncated file with its end marker put back would give a silently wrong vector.
  ``simplejpeg`` (libjpeg-turbo) re-runs the entropy decoder at 1/8 scale with warnings as errors.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .errors import InputError

#: Default cap on decoded pixels per image (about 8k x 8k). Larger images are refused, not decoded.
DEFAULT_MAX_PIXELS = 64_000_000
#: Default cap on an image file's encoded size (bytes read before anything is decoded).
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: Pillow format ids decoded by default; MPO (multi-picture JPEG from phones) counts as JPEG.
DEFAULT_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
#: Smallest accepted side and the largest accepted aspect ratio. LLaVA-NeXT's anyres packing
#: un-pads feature maps by aspect ratio; past ~1:400 a side rounds to zero features.
MIN_SIDE = 1
MAX_ASPECT_RATIO = 200.0
#: libjpeg warnings that lose no pixel data (camera quirks); any other warning refuses the file.
HARMLESS_JPEG_WARNINGS = ("extraneous bytes", "JFIF revision", "Adobe color transform", "ICC marker")
#: EXIF orientations that swap width and height (90 / 270 degree rotations, with or without a flip).
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class ImageLimits:
    """Safety limits applied to every image before and while it is decoded."""

    max_pixels: int = DEFAULT_MAX_PIXELS  # refuse images with more pixels than this (bomb guard)
    max_aspect_ratio: float = MAX_ASPECT_RATIO  # refuse extremely thin images
    formats: tuple[str, ...] = DEFAULT_FORMATS  # Pillow format ids that may be decoded
    max_bytes: int = DEFAULT_MAX_BYTES  # refuse encoded files larger than this

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(f.upper() for f in self.formats))
        unknown = [f for f in self.formats if f not in Image.registered_extensions().values() and f != "MPO"]
        if unknown:
            raise ValueError(f"unknown image formats {unknown}; Pillow knows "
                             f"{sorted(set(Image.registered_extensions().values()))}")
        if self.max_pixels < 1 or self.max_bytes < 1 or self.max_aspect_ratio < 1:
            raise ValueError("max_pixels and max_bytes must be >= 1 and max_aspect_ratio >= 1")

    def allows(self, fmt: str | None) -> bool:
        return fmt in self.formats or (fmt == "MPO" and "JPEG" in self.formats)


@dataclass(frozen=True, eq=False)
class ImageSource:
    """A probed, not yet decoded image: where its bytes are, what its header says.

    ``size`` is the upright (width, height) after EXIF orientation, so token counts estimated from it match
    the decoded image. An in-memory PIL image is held as is (already decoded by the caller).
    """

    source: Any  # bytes, Path or PIL.Image.Image
    size: tuple[int, int]
    format: str | None
    limits: ImageLimits

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]

    def decode(self, index: int | None = None, *, alpha: str = "white") -> Image.Image:
        """Decode to 8-bit RGB; every failure is an InputError naming ``index``. ``alpha``: "white" composites
        transparency onto white (transformers' convert_to_rgb), "drop" discards it (PIL's ``convert("RGB")``,
        what some model cards' recipes do)."""
        try:
            if isinstance(self.source, Image.Image):
                return _upright_rgb(self.source, alpha)
            data = _read(self.source, index, self.limits)
            image = _open(io.BytesIO(data), self.source, index, self.limits)
            check_size(image.size, index, self.limits)  # a file may have changed since it was probed
            if image.format in ("JPEG", "MPO"):
                check_jpeg_complete(data, self.source, index)
            return _upright_rgb(image, alpha)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - the decode boundary: any decoder failure is a bad item
            raise InputError(f"cannot decode image ({describe(self.source)}): {type(exc).__name__}: {exc}",
                             index) from None


def probe(source: Any, index: int | None = None, limits: ImageLimits = ImageLimits()) -> ImageSource:
    """Read an image's header and check it against ``limits``; nothing is decoded."""
    if isinstance(source, ImageSource):
        return source
    try:
        if isinstance(source, Image.Image):
            check_size(source.size, index, limits)
            return ImageSource(source, source.size, source.format, limits)
        if isinstance(source, (bytes, bytearray, memoryview)):
            held: Any = _read(source, index, limits)
            stream: Any = io.BytesIO(held)
        else:
            held = Path(_check_path(source, index, limits))
            stream = held
        with _open(stream, source, index, limits) as image:
            check_size(image.size, index, limits)
            return ImageSource(held, _upright_size(image), image.format, limits)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - see ImageSource.decode
        raise InputError(f"not a readable image ({describe(source)}): {type(exc).__name__}: {exc}", index) from None


def load_image(source: Any, index: int | None = None, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Probe and decode in one step: 8-bit RGB or InputError."""
    return probe(source, index, limits).decode(index)


def check_size(size: tuple[int, int], index: int | None, limits: ImageLimits) -> None:
    """Dimensions from the header, checked before any pixel data is decoded."""
    width, height = size
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


def check_jpeg_complete(data: bytes, source: Any, index: int | None) -> None:
    """Refuse a JPEG whose entropy-coded data is cut short or corrupt (libjpeg would fill it with grey)."""
    import simplejpeg

    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", min_factor=8, strict=True)
    except ValueError as exc:
        message = str(exc)
        if any(h in message for h in HARMLESS_JPEG_WARNINGS):
            return
        raise InputError(f"incomplete or corrupt JPEG data ({describe(source)}): {message}; "
                         "the file would decode with missing (grey) regions", index) from None


def to_rgb(image: Image.Image, alpha: str = "white") -> Image.Image:
    """8-bit RGB, transparency composited onto white (as transformers' ``convert_to_rgb``), or dropped
    (``alpha="drop"``: PIL's plain conversion).

    16-bit and 32-bit integer/float greyscale are rescaled to 0..255 first: PIL's own conversion clips
    them, which would turn most 16-bit photos white (a silent wrong vector).
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        if image.mode == "I" and array.max() <= 255:
            top = 255.0
        array = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(array, mode="L")
    if image.mode == "RGB":
        return image
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha and alpha == "white":
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def describe(source: Any) -> str:
    """How an error message names an image source (a path, or a byte count)."""
    if isinstance(source, (str, Path, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"{len(source)} bytes"
    return type(source).__name__


# ------------------------------------------------------------------ internals
def _read(source: Any, index: int | None, limits: ImageLimits) -> bytes:
    """The encoded bytes of a bytes-like or path source, within ``limits.max_bytes``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise InputError("image bytes are empty", index)
    elif isinstance(source, (str, Path, os.PathLike)):
        path = _check_path(source, index, limits)
        with path.open("rb") as f:
            data = f.read(limits.max_bytes + 1)
    else:
        raise InputError(f"cannot read an image from {type(source).__name__}", index)
    if len(data) > limits.max_bytes:
        raise InputError(f"image is {len(data):,} bytes, over the limit of {limits.max_bytes:,}", index)
    return data


def _check_path(source: Any, index: int | None, limits: ImageLimits) -> Path:
    path = Path(source)
    if not path.is_file():
        raise InputError(f"image file not found: {path}", index)
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"image file is empty (0 bytes): {path}", index)
    if size > limits.max_bytes:
        raise InputError(f"image file is {size:,} bytes, over the limit of {limits.max_bytes:,}: {path}", index)
    return path


def _open(stream: Any, source: Any, index: int | None, limits: ImageLimits) -> Image.Image:
    """Pillow's lazy open, restricted to the allowed formats (header read, nothing decoded).

    Pillow's own bomb warning is silenced: ``check_size`` applies the configured limit right after.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(stream, formats=_pillow_formats(limits))
        except Image.UnidentifiedImageError:
            detected = _detect_format(stream)
            if detected is not None and not limits.allows(detected):
                raise InputError(f"image format {detected} is not allowed ({describe(source)}); allowed: "
                                 f"{', '.join(limits.formats)}", index) from None
            raise InputError(f"not a readable image ({describe(source)}): no allowed format "
                             f"({', '.join(limits.formats)}) recognises it", index) from None
    if not limits.allows(image.format):
        raise InputError(f"image format {image.format} is not allowed ({describe(source)})", index)
    return image


def _pillow_formats(limits: ImageLimits) -> list[str]:
    return [f for f in limits.formats if f != "MPO"]


def _detect_format(stream: Any) -> str | None:
    """Which registered plugin would accept these bytes (header tests only, no decoder is opened)."""
    Image.init()
    if isinstance(stream, Path):
        with stream.open("rb") as f:
            prefix = f.read(64)
    else:
        stream.seek(0)
        prefix = stream.read(64)
    for fmt, (_factory, accept) in Image.OPEN.items():
        try:
            if accept is not None and accept(prefix):
                return fmt
        except Exception:  # noqa: BLE001 - a plugin's header test failing means "not this format"
            continue
    return None


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header's EXIF when it has one."""
    raw = image.info.get("exif")
    if not raw:
        return image.size
    try:
        exif = Image.Exif()
        exif.load(raw)
        orientation = int(exif.get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF only affects this estimate; decode() reports it
        return image.size
    width, height = image.size
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def _upright_rgb(image: Image.Image, alpha: str = "white") -> Image.Image:
    """First frame, decoded, EXIF-upright, 8-bit RGB."""
    try:
        image.seek(0)  # animated GIF/WebP/APNG: the first frame, as browsers show as a still
    except (EOFError, AttributeError, ValueError):
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the configured limit was checked
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image, alpha)
