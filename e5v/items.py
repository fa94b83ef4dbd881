"""What kind an item is, and what its content key is: one rule each, for every caller.

The kind decides which prompt template embeds an item; the content key identifies its content (not its
path or its position) so re-runs and other writers deduplicate against each other. The store, the eval
cache, the Spark writer, the server and ``E5V.encode`` all use these two functions.

Kinds: text alone -> "text"; an image alone -> "image"; an image with text -> "composed".
Content keys are SHA-256 over length-prefixed parts (kind tag, image digest, text). They are the store's
keys since its first release (``hash`` column; ids are their first 16 hex digits), so existing stores
keep deduplicating. Images are keyed by their encoded bytes (files streamed), or a PIL image by its mode,
size and pixels.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

Kind = Literal["text", "image", "composed"]
KINDS: tuple[Kind, ...] = ("text", "image", "composed")


def kind_of(has_image: bool, has_text: bool) -> Kind:
    """The kind of an item with (or without) an image and a text."""
    if has_image:
        return "composed" if has_text else "image"
    return "text"


def item_kind(item: Any) -> Kind:
    """The kind ``E5V.encode`` gives an input: ``str`` is text, a dict by its keys, anything else an image."""
    if isinstance(item, str):
        return "text"
    if isinstance(item, dict):
        return kind_of(item.get("image") is not None, item.get("text") is not None)
    return "image"


def content_key(kind: Kind, image: Any = None, text: str | None = None, *, image_digest: str | None = None) -> str:
    """The content key of an item (hex SHA-256). ``image_digest`` (from ``image_digest()``) saves re-hashing
    an image used by several items."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "text":
        raw = text.encode() if isinstance(text, str) else repr(text).encode()
        return sha(b"text", raw)
    digest = image_digest if image_digest is not None else globals()["image_digest"](image)
    if kind == "image":
        return sha(b"image", digest.encode())
    return sha(b"composed", digest.encode(), str(text).encode())


def image_digest(image: Any) -> str:
    """Digest of an image's content: a file's bytes (streamed), bytes, or a PIL image's mode, size and pixels.

    Raises OSError for an unreadable file."""
    from PIL import Image

    if isinstance(image, Path):
        return file_digest(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return sha(bytes(image))
    if isinstance(image, Image.Image):
        return sha(image.mode.encode(), repr(image.size).encode(), image.tobytes())
    return sha(repr(image).encode())  # unknown types fail later in encode with a clear InputError


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, streamed, length-prefixed like ``sha`` of the whole content."""
    h = hashlib.sha256()
    h.update(path.stat().st_size.to_bytes(8, "little"))
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def sha(*parts: bytes) -> str:
    """SHA-256 hex of length-prefixed parts (so ("ab", "c") and ("a", "bc") differ)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()
