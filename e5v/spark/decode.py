"""Spark column values -> inputs ``E5V.encode`` understands (text, PIL image, encoded bytes, composed dict).

Why a separate module: Spark's image source does not hand us an encoded file but raw OpenCV pixels
(``data`` = row-major ``height x width x nChannels`` bytes in **BGR(A)** order), so those rows must be rebuilt
as RGB(A) images here. Everything else (decoding files, RGBA -> RGB on white, size limits) stays in
``e5v.inputs`` via ``E5V.encode``: one data path.

Pure Python (no pyspark import): the functions run inside Python workers on pandas values and are tested
without a JVM as well.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError
from ..items import kind_of

#: Field names of Spark's image-source struct (``pyspark.ml.image.ImageSchema.imageFields``).
IMAGE_FIELDS = ("origin", "height", "width", "nChannels", "mode", "data")
#: OpenCV type codes Spark's image source produces for 8-bit images: CV_8UC1, CV_8UC3, CV_8UC4.
OPENCV_8U = {0: 1, 16: 3, 24: 4}


class Skip:
    """Marker for a null row: it gets a null embedding and no error."""


SKIP = Skip()


def is_null(value: Any) -> bool:
    """None, NaN and pandas' NA all mean "no value" in an Arrow-backed pandas batch."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        import pandas as pd

        return value is pd.NA or value is pd.NaT
    except ImportError:  # pragma: no cover - pandas is part of the spark extra
        return False


def struct_to_image(row: dict) -> Image.Image:
    """Rebuild an image-source struct as a PIL image in RGB order (L for 1 channel, RGBA for 4).

    Raises InputError for Spark's "invalid image" rows (height/width -1, empty data: a file Java ImageIO
    could not decode) and for structs whose byte count does not match their shape.
    """
    origin = row.get("origin") or "<unknown origin>"
    height, width, channels, mode = (row.get(k) for k in ("height", "width", "nChannels", "mode"))
    data = row.get("data")
    missing = any(is_null(v) for v in (height, width, channels, data))
    if missing or height <= 0 or width <= 0 or len(data) == 0:
        raise InputError(f"Spark could not decode the image {origin} (invalid image row)")
    height, width, channels = int(height), int(width), int(channels)
    if not is_null(mode) and int(mode) in OPENCV_8U and OPENCV_8U[int(mode)] != channels:
        raise InputError(f"image {origin}: OpenCV mode {mode} does not match nChannels={channels}")
    if channels not in (1, 3, 4):
        raise InputError(f"image {origin}: unsupported nChannels={channels} (expected 1, 3 or 4)")
    expected = height * width * channels
    if len(data) != expected:
        raise InputError(f"image {origin}: {len(data)} bytes of pixel data, expected "
                         f"{height}x{width}x{channels} = {expected}")
    pixels = np.frombuffer(bytes(data), dtype=np.uint8).reshape(height, width, channels)
    if channels == 1:
        return Image.fromarray(pixels[:, :, 0], mode="L")
    if channels == 3:
        return Image.fromarray(np.ascontiguousarray(pixels[:, :, ::-1]), mode="RGB")  # BGR -> RGB
    return Image.fromarray(np.ascontiguousarray(pixels[:, :, [2, 1, 0, 3]]), mode="RGBA")  # BGRA -> RGBA


def image_value(value: Any) -> Any:
    """One image-column value -> a PIL image or encoded bytes for ``E5V.encode``; SKIP when null.

    Accepts the image-source struct (a dict in pandas), ``binaryFile``'s ``content`` bytes, or any other
    bytes holding an encoded image file.
    """
    if is_null(value):
        return SKIP
    if isinstance(value, dict):
        if is_null(value.get("data")) and all(is_null(value.get(k)) for k in IMAGE_FIELDS):
            return SKIP
        return struct_to_image(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InputError(f"cannot read an image from a {type(value).__name__} value; use an image-source struct "
                     "or binary (encoded file) column")


def text_value(value: Any) -> Any:
    """One text-column value -> str, SKIP when null. Non-strings are refused rather than str()-ed."""
    if is_null(value):
        return SKIP
    if not isinstance(value, str):
        raise InputError(f"text must be a string, got {type(value).__name__}")
    return value


def row_input(image: Any = SKIP, text: Any = SKIP) -> Any:
    """Compose one row's input from its (already converted) image and text; SKIP when both are null.

    Image and text -> composed ``{"image", "text"}``; only one present -> that alone (the same rule as
    ``E5V.encode``'s dict items).
    """
    if image is SKIP and text is SKIP:
        return SKIP
    return {"composed": {"image": image, "text": text}, "image": image,
            "text": text}[kind_of(image is not SKIP, text is not SKIP)]
