"""Turn what ``Store.add`` is given (folders, files, manifests, in-memory items) into records to embed.

Discovery rules (documented in docs/store.md):
  * folders are walked recursively in sorted order; hidden files and folders (".name") are skipped;
  * ``.csv`` / ``.jsonl`` files are manifests: columns ``image`` (path, relative to the manifest) and/or
    ``text``; every other column is kept as metadata. A row with both is one composed item
    (``pairs="composed"``) or an image item plus a text item (``pairs="separate"``);
  * any other file is sniffed by content, not extension: PIL recognises it -> image; valid UTF-8 without
    NUL bytes -> text document, one passage per non-blank line (``text_unit="line"``) or per file
    (``text_unit="file"``); anything else is reported as unsupported.

Each record carries a content hash (sha256 of kind + content bytes) used for idempotent re-runs: the
same content added twice, from any path, is stored once.
"""

from __future__ import annotations

import codecs
import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from PIL import Image

from ..items import content_key, image_digest, kind_of
from ..jsonl import numbered_objects

MANIFEST_SUFFIXES = (".csv", ".jsonl")
TEXT_UNITS = ("line", "file")
PAIRS = ("composed", "separate")
_SNIFF_BYTES = 8192
#: Non-image files larger than this are not read as text documents (videos, archives, ...).
MAX_TEXT_BYTES = 64 << 20


@dataclass
class Record:
    """One item to embed plus what the store keeps about it."""

    kind: str  # "text" | "image" | "composed"
    item: Any  # what E5V.encode accepts: str, Path/PIL/bytes, or {"image", "text"}
    hash: str  # sha256 hex of kind + content
    path: str | None = None  # source file (or "manifest#row"); None for in-memory items
    text: str | None = None  # the passage, or the modification text of a composed item
    metadata: dict = field(default_factory=dict)


@dataclass
class Problem:
    """A source that produced no record: ``failed`` (unreadable/broken) or ``unsupported`` (not image/text)."""

    source: str
    reason: str
    unsupported: bool = False


def discover(sources: Iterable[Any], text_unit: str = "line", pairs: str = "composed") -> Iterator[Record | Problem]:
    """Yield a Record for every embeddable item in ``sources`` and a Problem for every source that fails."""
    if text_unit not in TEXT_UNITS:
        raise ValueError(f"text_unit must be one of {TEXT_UNITS}, got {text_unit!r}")
    if pairs not in PAIRS:
        raise ValueError(f"pairs must be one of {PAIRS}, got {pairs!r}")
    if isinstance(sources, (str, os.PathLike, dict, bytes, Image.Image)):
        sources = [sources]
    for source in sources:
        if isinstance(source, (str, os.PathLike)):
            yield from _from_path(Path(source), text_unit, pairs)
        else:
            yield from _from_memory(source)


def _from_path(path: Path, text_unit: str, pairs: str) -> Iterator[Record | Problem]:
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith("."):
                    yield from _from_file(Path(root) / name, text_unit, pairs)
    elif path.exists():
        yield from _from_file(path, text_unit, pairs)
    else:
        yield Problem(str(path), "no such file or directory (to add a text, pass {'text': ...})")


def _from_file(path: Path, text_unit: str, pairs: str) -> Iterator[Record | Problem]:
    """Sniff one file by content. Images are hashed by streaming; text files and manifests are read line by
    line (a 300k-line file is not held as records: ``Store.add`` embeds and commits as they come)."""
    try:
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            yield from _manifest(path, pairs)
        elif _is_image(path):
            yield Record("image", path, content_key("image", path), str(path.resolve()), None, {})
        elif path.stat().st_size > MAX_TEXT_BYTES:
            yield Problem(str(path), f"not an image, and larger than {MAX_TEXT_BYTES >> 20} MB for a text file",
                          unsupported=True)
        elif path.stat().st_size == 0:
            yield Problem(str(path), "empty file", unsupported=True)
        elif not _looks_like_text(path):
            yield Problem(str(path), "neither an image PIL can read nor UTF-8 text", unsupported=True)
        else:
            yield from _text_records(path, text_unit)
    except OSError as exc:
        yield Problem(str(path), f"cannot read: {exc.strerror or exc}")


def _is_image(path: Path) -> bool:
    """Content sniffing: PIL identifies the format from the file header (no decode, extension ignored)."""
    try:
        with Image.open(path) as im:
            return bool(im.format)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise  # unreadable: reported by the caller
    except Exception:  # noqa: BLE001 - any failure to identify a header means "not an image"
        return False


def _looks_like_text(path: Path) -> bool:
    """No NUL byte and valid UTF-8 in the first bytes (the rest is checked while reading)."""
    with path.open("rb") as f:
        head = f.read(_SNIFF_BYTES)
    if b"\x00" in head:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a cut multi-byte char is fine
    except UnicodeDecodeError:
        return False
    return True


def _lines(path: Path) -> Iterator[str]:
    """A UTF-8 file's lines, split exactly as ``str.splitlines`` splits the whole text (so line numbers and
    content hashes match stores built when whole files were read), without holding the file."""
    with path.open(encoding="utf-8-sig", newline=None) as f:
        for raw in f:
            yield from raw.splitlines() or [""]


def _text_records(path: Path, unit: str) -> Iterator[Record | Problem]:
    where = str(path.resolve())
    number = 0
    try:
        if unit == "file":
            text = path.read_text(encoding="utf-8-sig")
            if text.strip():
                yield text_record(text.strip(), where, {})
            return
        for number, line in enumerate(_lines(path), start=1):
            if line.strip():
                yield text_record(line.strip(), f"{where}#L{number}", {"line": number})
    except UnicodeDecodeError as exc:
        yield Problem(f"{where}#L{number + 1}", f"invalid UTF-8 ({exc.reason}); the lines before it were added")


def _manifest(path: Path, pairs: str) -> Iterator[Record | Problem]:
    if not _looks_like_text(path):
        yield Problem(str(path), "manifest is not UTF-8 text")
        return
    base = path.resolve().parent
    try:
        for number, row in _manifest_rows(path):
            yield from _manifest_row(path, base, number, row, pairs)
    except UnicodeDecodeError as exc:
        yield Problem(str(path), f"manifest is not UTF-8 text ({exc.reason}); the rows before it were added")


def _manifest_row(path: Path, base: Path, number: int, row: dict | str, pairs: str) -> Iterator[Record | Problem]:
    where = f"{path.resolve()}#{number}"
    if isinstance(row, str):
        yield Problem(where, row)
        return
    image, caption = row.pop("image", None), row.pop("text", None)
    image = image if image not in ("", None) else None
    caption = caption if caption not in ("", None) else None
    meta = {k: v for k, v in row.items() if k is not None}
    if image is None and caption is None:
        yield Problem(where, "row has neither an 'image' nor a 'text' value")
        return
    if caption is not None and not isinstance(caption, str):
        yield Problem(where, f"'text' must be a string, got {type(caption).__name__}")
        return
    if image is None:
        yield text_record(caption, where, meta)
        return
    if not isinstance(image, str):
        yield Problem(where, f"'image' must be a path string, got {type(image).__name__}")
        return
    image_path = Path(image) if Path(image).is_absolute() else base / image
    try:
        digest = image_digest(image_path)
    except OSError as exc:
        yield Problem(where, f"image {image_path}: {exc.strerror or exc}")
        return
    if caption is None or pairs == "separate":
        yield Record("image", image_path, content_key("image", image_digest=digest), str(image_path), None, meta)
        if caption is not None:
            yield text_record(caption, where, meta)
    else:
        key = content_key("composed", text=caption, image_digest=digest)
        yield Record("composed", {"image": image_path, "text": caption}, key, str(image_path), caption, meta)


def _manifest_rows(path: Path) -> Iterator[tuple[int, dict | str]]:
    """(row number, row dict or error message), streamed; numbers are 1-based data rows."""
    if path.suffix.lower() == ".csv":
        yield from csv_rows(path)
        return
    yield from numbered_objects(_lines(path))


def csv_rows(path: Path) -> Iterator[tuple[int, dict | str]]:
    """CSV data rows as dicts, streamed; a malformed row (e.g. a field over the csv module's limit) is its
    error message, and reading goes on with the next row."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        number = 0
        while True:
            number += 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield number, f"malformed CSV row: {exc}"
                continue
            yield number, dict(row)


def _from_memory(obj: Any) -> Iterator[Record | Problem]:
    """In-memory items: PIL/bytes (image), {"text"}, {"image"}, {"image","text"}, each with optional "metadata"."""
    if isinstance(obj, Record):
        yield obj
        return
    if isinstance(obj, (Image.Image, bytes, bytearray)):
        obj = {"image": obj}
    if not isinstance(obj, dict):
        yield Problem(repr(obj)[:80], f"cannot add an item of type {type(obj).__name__}")
        return
    meta = dict(obj.get("metadata") or {})
    image, text = obj.get("image"), obj.get("text")
    if image is None and text is None:
        yield Problem(repr(obj)[:80], "item needs an 'image' and/or a 'text'")
        return
    if image is None:
        yield text_record(text, None, meta)
        return
    path = str(Path(image).resolve()) if isinstance(image, (str, os.PathLike)) else None
    if isinstance(image, (str, os.PathLike)):
        image = Path(image)
    try:
        digest = image_digest(image)
    except OSError as exc:
        yield Problem(str(path or "image"), f"cannot read: {exc.strerror or exc}")
        return
    kind = kind_of(True, text is not None)
    yield Record(kind, image if text is None else {"image": image, "text": text},
                 content_key(kind, text=text, image_digest=digest), path, text, meta)


def text_record(text: Any, where: str | None, meta: dict) -> Record:
    return Record("text", text, content_key("text", text=text), where, text if isinstance(text, str) else None, meta)


def content_hash(kind: str, image: Any = None, text: str | None = None) -> str:
    """The store's content hash of in-memory content (``e5v.items.content_key``), as ``add`` computes it, so
    vectors written from elsewhere (e.g. Spark) dedupe against indexed files with the same bytes or text."""
    return content_key(kind, image=image, text=text)
