"""Readers for the image benchmarks' distributed file layouts (we ship no data; users point at theirs).

* Image-text retrieval: Karpathy split JSON (``dataset_coco.json``, ``dataset_flickr30k.json``) or a
  JSONL of ``{"image": path, "captions": [...]}``.
* CIRR: ``captions/cap.rc2.val.json`` + ``image_splits/split.rc2.val.json`` (name -> "./dev/x.png").
* FashionIQ: ``captions/cap.{category}.val.json`` + ``image_splits/split.{category}.val.json`` (names),
  images in ``images/{name}.png`` (or .jpg).

Every reader checks that all image files exist before anything is embedded, and names the file
(and line / record) on any problem. STS text formats live in ``sts_formats.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")


@dataclass
class RetrievalSet:
    """Images and their captions; ``caption_image[j]`` is the image index of caption j."""

    name: str
    images: list[Path]
    captions: list[str]
    caption_image: list[int]


@dataclass
class ComposedQuery:
    reference: str  # image name of the reference image
    text: str  # modification text (FashionIQ: the two captions joined, see ``fashioniq_texts``)
    target: str  # image name of the correct result
    members: list[str] = field(default_factory=list)  # CIRR subset (img_set members), else empty
    texts: tuple[str, ...] = ()  # FashionIQ: both caption orders


@dataclass
class ComposedSet:
    name: str
    queries: list[ComposedQuery]
    gallery: dict[str, Path]  # image name -> file; insertion order is the gallery order
    references: dict[str, Path] = field(default_factory=dict)  # reference images not in the gallery


def _load_json(path: Path):
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None


def _check_exist(paths, what: str) -> None:
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        listing = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise InputError(f"{len(missing)} {what} image file(s) not found: {listing}")


# ---------------------------------------------------------------------------------------- retrieval
def read_retrieval(captions_file: str | Path, images_dir: str | Path, split: str = "test",
                   captions_per_image: int = 5, limit: int | None = None) -> RetrievalSet:
    """Read a Karpathy JSON (``.json``) or a JSONL (``.jsonl``) caption file; first N captions per image."""
    path, root = Path(captions_file), Path(images_dir)
    if path.suffix.lower() == ".jsonl":
        records = _read_jsonl(path)
    else:
        records = _read_karpathy(path, root, split)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise InputError(f"{path}: no images found" + (f" in split {split!r}" if path.suffix != ".jsonl" else ""))
    images, captions, owner = [], [], []
    for i, (image, caps) in enumerate(records):
        images.append(image if image.is_absolute() else root / image)
        for caption in caps[:captions_per_image]:
            captions.append(caption)
            owner.append(i)
    _check_exist(images, "retrieval")
    return RetrievalSet(name=path.name, images=images, captions=captions, caption_image=owner)


def _read_karpathy(path: Path, root: Path, split: str) -> list[tuple[Path, list[str]]]:
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{path}: expected a Karpathy split file with an 'images' list")
    records = []
    for n, entry in enumerate(data["images"]):
        if entry.get("split") != split:
            continue
        try:
            filename = entry["filename"]
            caps = [" ".join(str(s["raw"]).split()) for s in entry["sentences"]]
        except (KeyError, TypeError):
            raise InputError(f"{path}: images[{n}] lacks 'filename' or 'sentences[].raw'") from None
        rel = Path(entry.get("filepath", "")) / filename
        # COCO entries carry filepath (val2014/...); accept images stored flat in the directory too.
        if entry.get("filepath") and not (root / rel).is_file() and (root / filename).is_file():
            rel = Path(filename)
        records.append((rel, [c for c in caps if c]))
    return records


def _read_jsonl(path: Path) -> list[tuple[Path, list[str]]]:
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            image, caps = row["image"], row["captions"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(f'{path}:{lineno}: expected {{"image": ..., "captions": [...]}}') from None
        if isinstance(caps, str) or not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise InputError(f"{path}:{lineno}: 'captions' must be a list of strings")
        caps = [" ".join(c.split()) for c in caps]
        if not any(caps):
            raise InputError(f"{path}:{lineno}: no non-empty caption")
        records.append((Path(image), [c for c in caps if c]))
    return records


# ---------------------------------------------------------------------------------------- composed
def _annotation_dir(root: Path, marker: str) -> Path:
    """The directory holding ``captions/`` and ``image_splits/``: root itself or root/cirr (CIRR repo)."""
    for candidate in (root, root / "cirr", root / "fashionIQ_dataset"):
        if (candidate / "captions" / marker).is_file():
            return candidate
    raise InputError(f"{root}: cannot find captions/{marker} (looked in {root} and {root / 'cirr'})")


def read_cirr(root: str | Path, images_dir: str | Path | None = None, limit: int | None = None) -> ComposedSet:
    """CIRR validation set. Image paths in the split file are relative to ``images_dir`` (default: root,
    falling back to root's parent, matching the layouts of the CIRR repo and of CLIP4Cir)."""
    root = Path(root)
    ann = _annotation_dir(root, "cap.rc2.val.json")
    caps = _load_json(ann / "captions" / "cap.rc2.val.json")
    split = _load_json(ann / "image_splits" / "split.rc2.val.json")
    if not isinstance(caps, list) or not isinstance(split, dict):
        raise InputError(f"{ann}: cap.rc2.val.json must be a list and split.rc2.val.json a name->path dict")
    queries = []
    for n, c in enumerate(caps[:limit] if limit is not None else caps):
        try:
            members = list(c.get("img_set", {}).get("members", []))
            queries.append(ComposedQuery(reference=c["reference"], text=" ".join(str(c["caption"]).split()),
                                         target=c["target_hard"], members=members))
        except (KeyError, TypeError, AttributeError):
            raise InputError(f"{ann}/captions/cap.rc2.val.json: record {n} lacks reference/caption/target_hard") from None
    names = list(split)
    if limit is not None:  # a quick run ranks among the images its queries mention
        used = {name for q in queries for name in (q.reference, q.target, *q.members)}
        names = [name for name in names if name in used]
    bases = [Path(images_dir)] if images_dir is not None else [root, root.parent]
    base = next((b for b in bases if names and (b / split[names[0]]).is_file()), bases[0])
    gallery = {name: base / split[name] for name in names}
    _check_in_gallery(queries, gallery, "cap.rc2.val.json")
    _check_exist(gallery.values(), "CIRR")
    return ComposedSet(name="cirr-val", queries=queries, gallery=gallery)


def fashioniq_texts(captions: list[str]) -> tuple[str, str]:
    """Both orders of a FashionIQ caption pair, each stripped of '.?, ' and joined by ', ' (E5-V code)."""
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
        raise ValueError("captions must be a non-empty list of strings")
    parts = [c.strip(".?, ") for c in captions]
    return ", ".join(parts), ", ".join(reversed(parts))


def read_fashioniq(root: str | Path, category: str, images_dir: str | Path | None = None,
                   limit: int | None = None) -> ComposedSet:
    """FashionIQ validation set of one category; gallery = the category's val split."""
    if category not in FASHIONIQ_CATEGORIES:
        raise InputError(f"unknown FashionIQ category {category!r}; choose from {FASHIONIQ_CATEGORIES}")
    root = Path(root)
    ann = _annotation_dir(root, f"cap.{category}.val.json")
    caps = _load_json(ann / "captions" / f"cap.{category}.val.json")
    split = _load_json(ann / "image_splits" / f"split.{category}.val.json")
    if not isinstance(caps, list) or not isinstance(split, list):
        raise InputError(f"{ann}: cap.{category}.val.json and split.{category}.val.json must be JSON lists")
    queries = []
    for n, c in enumerate(caps[:limit] if limit is not None else caps):
        try:
            texts = fashioniq_texts(c["captions"])
            queries.append(ComposedQuery(reference=c["candidate"], text=texts[0], target=c["target"], texts=texts))
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{ann}/captions/cap.{category}.val.json: record {n} lacks candidate/target/captions") from None
    names = list(split)
    if limit is not None:
        used = {name for q in queries for name in (q.reference, q.target)}
        names = [name for name in names if name in used]
    images = Path(images_dir) if images_dir is not None else ann / "images"
    gallery = {name: _fashioniq_file(images, name) for name in names}
    _check_in_gallery(queries, gallery, f"cap.{category}.val.json", check_reference=False)
    # A reference image need not be in the val split (the gallery); it is still read from images/.
    references = {q.reference: _fashioniq_file(images, q.reference) for q in queries if q.reference not in gallery}
    _check_exist([*gallery.values(), *references.values()], "FashionIQ")
    return ComposedSet(name=f"fashioniq-{category}-val", queries=queries, gallery=gallery, references=references)


def _fashioniq_file(images: Path, name: str) -> Path:
    for ext in (".png", ".jpg", ".jpeg"):
        if (images / f"{name}{ext}").is_file():
            return images / f"{name}{ext}"
    return images / f"{name}.png"


def _check_in_gallery(queries: list[ComposedQuery], gallery: dict, source: str, check_reference: bool = True) -> None:
    for n, q in enumerate(queries):
        for role, name in (("target", q.target), ("reference", q.reference)):
            if (role == "target" or check_reference) and name not in gallery:
                raise InputError(f"{source}: record {n}'s {role} {name!r} is not in the image split")
