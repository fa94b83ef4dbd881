"""What ``Store.add`` does with discovered records: embed them chunk by chunk through ``E5V.encode_iter``,
turn each chunk into table rows, commit it; plus the checks on rows embedded elsewhere, and the report."""

from __future__ import annotations

import itertools
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..items import KINDS
from .walk import Problem, Record

#: Content hashes are sha256 hex digests; ids are their first 16 digits and are quoted into SQL, so anything
#: else is refused at the door (a quote in a hash would otherwise break every later exact search).
HEX_HASH = re.compile(r"[0-9a-f]{16,128}")

#: Records looked up at once in the store's hashes: one round trip per window on PostgreSQL (a resumed job over
#: a million stored files makes a few thousand queries, not a million), and discovery's look-ahead.
LOOKUP_WINDOW = 64


@dataclass
class AddReport:
    """What ``Store.add`` did. ``failed``/``unsupported`` hold (source, reason) pairs."""

    added: int = 0
    skipped_existing: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    unsupported: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    total_rows: int = 0
    ann_built: bool = False

    def __str__(self) -> str:
        lines = [f"added {self.added}, skipped {self.skipped_existing} already present, failed {len(self.failed)}, "
                 f"unsupported {len(self.unsupported)} in {self.seconds:.1f}s; store now holds {self.total_rows} rows"
                 + (" (ANN index built)" if self.ann_built else "")]
        lines += [f"  failed: {s}: {r}" for s, r in self.failed[:20]]
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more failures")
        lines += [f"  unsupported: {s}: {r}" for s, r in self.unsupported[:5]]
        if len(self.unsupported) > 5:
            lines.append(f"  ... and {len(self.unsupported) - 5} more unsupported files")
        return "\n".join(lines)


def table_row(content_hash: str, kind: str, path: str | None, text: str | None, metadata: dict | None,
         vector: np.ndarray, added_at: datetime) -> dict:
    """A table row; the id is the content hash's first 16 hex digits (ids are alphanumeric: safe in filters)."""
    return {"id": content_hash[:16], "hash": content_hash, "kind": kind, "path": path, "text": text,
            "metadata": metadata or {}, "added_at": added_at, "vector": vector}


def embed_and_commit(model: Any, commit: Callable[[list[dict]], int], found: Iterable[Record | Problem],
                     existing: set[str], batch_size: int, commit_every: int, show: bool, report: AddReport) -> int:
    """Embed what discovery yields through ``E5V.encode_iter`` (chunks of ``commit_every`` new records),
    each chunk one atomic commit: memory holds one chunk whatever the sources hold, and a kill loses at most
    one chunk. Returns the number of commits."""
    from tqdm.auto import tqdm

    pending: deque[Record] = deque()  # records whose items encode_iter has read, in order

    def new_items() -> Iterator[Any]:
        for window in _windows(found, LOOKUP_WINDOW):
            known = stored_among(existing, [r.hash for r in window if isinstance(r, Record)])
            for record in window:
                if isinstance(record, Problem):
                    (report.unsupported if record.unsupported else report.failed).append((record.source, record.reason))
                elif record.hash in known:
                    report.skipped_existing += 1
                else:
                    known.add(record.hash)  # the same content twice in one window is embedded once
                    existing.add(record.hash)
                    pending.append(record)
                    yield record.item

    commits = 0
    with tqdm(unit="item", desc="indexing", disable=not show) as bar:
        for result in model.encode_iter(new_items(), chunk_size=commit_every, batch_size=batch_size,
                                             show_progress_bar=False):
            chunk = [pending.popleft() for _ in range(len(result.vectors))]
            commits += commit(chunk_rows(chunk, result, report))
            bar.update(len(chunk))
    return commits


def stored_among(existing: Any, hashes: list[str]) -> set[str]:
    """The hashes ``existing`` holds: a set, or a store's view with ``among`` (one database query per call
    instead of one per record)."""
    among = getattr(existing, "among", None)
    return among(hashes) if among is not None else {h for h in hashes if h in existing}


def _windows(found: Iterable[Record | Problem], size: int) -> Iterator[list[Record | Problem]]:
    """``found`` in lists of ``size``: discovery runs at most this many records ahead of embedding."""
    iterator = iter(found)
    while window := list(itertools.islice(iterator, size)):
        yield window


def chunk_rows(chunk: list[Record], result: Any, report: AddReport) -> list[dict]:
    """Store rows for a chunk's embedded records; failed ones go to the report."""
    now = datetime.now(timezone.utc)
    rows = []
    for j, rec in enumerate(chunk):
        vec = result.vectors[j]
        if j in result.errors or not np.isfinite(vec).all():
            where = rec.path or f"item {result.offset + j}"
            report.failed.append((where, result.errors.get(j, "non-finite vector")))
            continue
        rows.append(table_row(rec.hash, rec.kind, rec.path, rec.text, rec.metadata, vec, now))
    return rows


def commit_vector_rows(rows: Iterable[Any], dim: int, existing: Any, commit: Callable[[list[dict]], int],
                       commit_every: int, report: AddReport) -> None:
    """``add_vectors`` for both stores: check each row (bad ones reported), skip hashes in ``existing`` (and
    remember new ones), and hand table rows to ``commit`` ``commit_every`` at a time."""
    pending: list[dict] = []
    for n, row in enumerate(rows):
        problem = check_row(row, dim)
        if problem:
            report.failed.append((str(row.get("path") or f"row {n}") if isinstance(row, dict) else f"row {n}", problem))
            continue
        if row["hash"] in existing:
            report.skipped_existing += 1
            continue
        existing.add(row["hash"])
        pending.append(table_row(row["hash"], row["kind"], row.get("path"), row.get("text"), row.get("metadata"),
                                 np.asarray(row["vector"], dtype=np.float32), datetime.now(timezone.utc)))
        if len(pending) >= max(1, commit_every):
            commit(pending)
            pending = []
    commit(pending)


def check_row(row: Any, dim: int) -> str | None:
    """Why an ``add_vectors`` row cannot be stored, or None."""
    if not isinstance(row, dict):
        return f"expected a dict, got {type(row).__name__}"
    if row.get("kind") not in KINDS:
        return f"kind must be one of {KINDS}, got {row.get('kind')!r}"
    if not isinstance(row.get("hash"), str) or not HEX_HASH.fullmatch(row["hash"]):
        return ("hash must be a lower-case hex content hash of 16 to 128 digits (see "
                "e5v.store.walk.content_hash), got " + repr(row.get("hash"))[:80])
    vector = row.get("vector")
    if vector is None:
        return f"no vector: {row.get('error') or 'the item failed to embed'}"
    vec = np.asarray(vector, dtype=np.float32).reshape(-1)
    if vec.shape[0] != dim or not np.isfinite(vec).all():
        return f"vector must be {dim} finite floats"
    return None
