"""On-disk embedding cache and the chunked, cached encoder every eval goes through.

Why a cache: a COCO run embeds 30k items; re-running with another metric, ``--limit`` grown, or after
an interruption should not redo any of them. Vectors are stored per *space* (a directory named by the
hash of the model's ``embedding_config()`` without its prompts, a fingerprint of the weight files and
of the LoRA adapter) and per *item key* (a hash of the item's prompt template and of the input: text,
image file bytes, image + text, or render spec + text). Raw (unnormalised) vectors are stored so evals that sum before
normalising (FashionIQ) can share them.

Layout: ``<root>/<space>/space.json`` (what the hash stands for, for humans) and shards
``<uuid>.npy`` + ``<uuid>.keys`` (one key per row; written last, so a shard without keys is ignored).
Writers never touch existing files, so concurrent runs cannot corrupt each other.

Encoding runs in chunks (default 128 items): only one chunk of decoded images is in memory at a time
and each finished chunk is saved at once, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..items import content_key, image_digest, item_kind
from ..prompts import PromptSet, resolve_prompts


def default_cache_dir() -> Path:
    """``$E5V_CACHE_DIR/eval`` or ``~/.cache/e5v/eval``."""
    base = os.environ.get("E5V_CACHE_DIR") or Path.home() / ".cache" / "e5v"
    return Path(base) / "eval"


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\x00")
    return h.hexdigest()


def text_key(text: str) -> str:
    """The item's content key (``e5v.items``: the store's scheme)."""
    return content_key("text", text=text)


def file_digest_of(path: Path) -> str:
    """Digest of an image file's bytes: a moved or renamed copy of the same image still hits the cache."""
    try:
        return image_digest(Path(path))
    except OSError as exc:
        raise InputError(f"cannot read image {path}: {exc.strerror or exc}") from None


def file_key(path: Path) -> str:
    return content_key("image", image_digest=file_digest_of(path))


def composed_key(digest_of_image: str, text: str) -> str:
    """Key of an image (by its ``file_digest_of``) with a modification text."""
    return content_key("composed", text=text, image_digest=digest_of_image)


def files_fingerprint(directory: Path | None) -> list[list[Any]]:
    """(name, size, mtime_ns) of the weight/config files in a directory: changes when weights change."""
    if directory is None:
        return []
    directory = Path(directory)
    wanted = (".safetensors", ".bin", ".json", ".xml", ".model")
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(directory.iterdir())
            if p.is_file() and p.suffix in wanted]


def lora_fingerprint(lora: str | os.PathLike | None) -> list | None:
    """Resolved path and file fingerprint of a LoRA adapter directory (None without one)."""
    if lora is None:
        return None
    return [str(Path(lora).resolve()), files_fingerprint(Path(lora))]


class EmbeddingCache:
    """Content-addressed store of raw vectors, one directory per embedding space."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def space(self, description: dict) -> "CacheSpace":
        name = digest(json.dumps(description, sort_keys=True, default=str))[:24]
        return CacheSpace(self.root / name, description)


class CacheSpace:
    """The vectors of one embedding space; loads shard keys lazily, appends new shards."""

    def __init__(self, path: Path, description: dict):
        self.path = path
        self.description = description
        self._index: dict[str, tuple[Path, int]] | None = None

    def _load_index(self) -> dict[str, tuple[Path, int]]:
        if self._index is None:
            self._index = {}
            if self.path.is_dir():
                for keys_file in sorted(self.path.glob("*.keys")):
                    shard = keys_file.with_suffix(".npy")
                    if shard.is_file():
                        for row, key in enumerate(keys_file.read_text().split()):
                            self._index[key] = (shard, row)
        return self._index

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``keys``."""
        index = self._load_index()
        found: dict[str, np.ndarray] = {}
        by_shard: dict[Path, list[tuple[str, int]]] = {}
        for key in keys:
            if key in index:
                shard, row = index[key]
                by_shard.setdefault(shard, []).append((key, row))
        for shard, rows in by_shard.items():
            data = np.load(shard, mmap_mode="r")
            for key, row in rows:
                found[key] = np.array(data[row], dtype=np.float32)
        return found

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Save a new shard (vectors first, keys last, each by atomic rename)."""
        if not len(keys):
            return
        self.path.mkdir(parents=True, exist_ok=True)
        meta = self.path / "space.json"
        if not meta.exists():
            atomic_write(meta, json.dumps(self.description, indent=2, sort_keys=True, default=str).encode())
        name = uuid.uuid4().hex
        tmp = self.path / f".{name}.npy.tmp"
        with tmp.open("wb") as f:
            np.save(f, np.asarray(vectors, dtype=np.float32))
        os.replace(tmp, self.path / f"{name}.npy")
        atomic_write(self.path / f"{name}.keys", ("\n".join(keys) + "\n").encode())
        index = self._load_index()
        for row, key in enumerate(keys):
            index[key] = (self.path / f"{name}.npy", row)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class Embedder:
    """Encodes eval inputs through ``model.encode`` with caching, chunking and one progress bar.

    model:      the E5V to evaluate.
    cache:      where vectors are kept; None disables caching.
    batch_size: passed to ``model.encode``.
    chunk_size: items per ``encode`` call (bounds memory; each chunk is cached when done).
    progress:   show progress bars (None: only when stderr is a terminal).
    extra:      more facts that define the space, beyond the model's config, weights and ``model.lora``.
    """

    model: Any
    cache: EmbeddingCache | None = None
    batch_size: int = 8
    chunk_size: int = 128
    progress: bool | None = None
    extra: dict = field(default_factory=dict)

    def space_description(self) -> dict:
        """Everything but the prompt that determines the vectors (each item's key carries its template)."""
        m = self.model
        config = {k: v for k, v in m.embedding_config().items() if k != "prompts"}
        return {"config": config, "weights_files": files_fingerprint(getattr(m.components, "path", None)),
                "lora": lora_fingerprint(getattr(m, "lora", None)), **self.extra}

    def effective_prompts(self, prompt: PromptSet | None) -> PromptSet:
        """The prompts ``encode`` will really use (the model's instruction applies to explicit sets too)."""
        if prompt is None:
            return self.model.prompts
        return resolve_prompts(prompt, self.model.instruction)

    def encode(self, items: Sequence[Any], keys: Sequence[str], labels: Sequence[str],
               prompt: PromptSet | None = None, desc: str = "embedding", kind: str | None = None) -> np.ndarray:
        """Raw vectors (N, D) for ``items`` (deduplicated by key); bad items raise naming their label.

        ``kind`` ("text", "image", "composed") names the items' prompt template when all share one;
        otherwise it is inferred per item (which touches every item: pass it for lazy sequences).
        """
        if not (len(items) == len(keys) == len(labels)):
            raise ValueError("items, keys and labels must have the same length")
        if kind not in (None, "text", "image", "composed"):
            raise ValueError(f"kind must be text, image or composed, not {kind!r}")
        prompts = self.effective_prompts(prompt)
        # An item's vector depends on its own kind's template only: a CIRR run (other image prompt)
        # reuses the text vectors of a retrieval run.
        kinds = [kind] * len(keys) if kind is not None else [item_kind(item) for item in items]
        keys = [digest(k, getattr(prompts, k), key) for k, key in zip(kinds, keys)]
        space = self.cache.space(self.space_description()) if self.cache is not None else None
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        found = space.get(list(first)) if space is not None else {}
        todo = [i for key, i in first.items() if key not in found]
        bar = _bar(len(first), len(first) - len(todo), desc, self.progress)
        try:
            results = self.model.encode_iter((items[i] for i in todo), chunk_size=self.chunk_size,
                                             batch_size=self.batch_size, normalize=False, prompt=prompt,
                                             show_progress_bar=False) if todo else ()  # all cached: no model
            for result in results:
                chunk = todo[result.offset:result.offset + len(result.vectors)]
                if result.errors:
                    index, message = sorted(result.errors.items())[0]
                    more = f" (and {len(result.errors) - 1} more)" if len(result.errors) > 1 else ""
                    raise InputError(f"cannot embed {labels[chunk[index]]}: {message}{more}")
                chunk_keys = [keys[i] for i in chunk]
                if space is not None:
                    space.put(chunk_keys, result.vectors)
                found.update(zip(chunk_keys, result.vectors))
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return np.stack([found[key] for key in keys]).astype(np.float32) if keys else \
            np.zeros((0, self.model.embedding_dim), np.float32)


def _bar(total: int, done: int, desc: str, show: bool | None):
    if show is None:
        show = sys.stderr.isatty()
    if not show or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="item", desc=desc)
