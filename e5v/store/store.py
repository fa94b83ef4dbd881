"""``Store``: a persistent, resumable multimodal vector store on LanceDB.

Why LanceDB: embedded (a directory, no server), every ``add`` is one atomic versioned commit (a process
killed mid-write leaves the previous version intact and no half-written row), vector + scalar filters in
one query, optional ANN indexes, and the same code works on object storage.

Why this file is a little over 300 lines: it is the ``Store`` class alone (open/validate, add, search, ANN
index, stats); ingestion and search already live in ``ingest.py`` and ``search.py``, and what remains is the
public surface of one object, kept together on purpose.

Example:
    >>> store = Store.open("photos.e5v", E5V.from_pretrained("royokong/e5-v"))
    >>> print(store.add(["~/Pictures", "captions.csv"]))
    >>> store.search("a dog on a beach", k=5, where="json_get_string(metadata, 'split') = 'test'")
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigMismatchError, StoreError, require
from ..items import KINDS
from . import ann, exact as exact_search
from .filters import check_raw_where, compile_filter
from .lock import LOCK_NAME, WriterLock
from .pg_schema import is_postgres_url
from .ingest import AddReport, commit_vector_rows, embed_and_commit
from .schema import TABLE, check_config, make_schema, model_config, stored_config, to_arrow
from .search import as_json, query_vector, search_in_memory, search_lance
from .walk import discover

#: Rows per commit unless told otherwise: small enough that a kill loses little work, large enough
#: that a store does not drown in tiny fragments (they are compacted at the end of ``add`` anyway).
DEFAULT_COMMIT_EVERY = 64


class Store:
    """A directory of embedded items searchable by text, image, image+text or vector. Use ``Store.open``."""

    backend = "lancedb"

    def __init__(self, root: Path, table: Any, model: Any, config: dict):
        self.root = root
        self._table = table
        self.model = model
        self.config = config
        self.dim = int(table.schema.field("vector").type.list_size)
        self._schema = make_schema(self.dim, config)  # the write schema (read-back types differ for JSON)
        self._exact = exact_search.ExactIndex()  # in-memory vectors for exact search (see exact.py)
        self._exact_queries = 0  # the copy is made from the 2nd exact query on: a one-shot search only scans

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, db_dir: str | os.PathLike, model: Any = None, *, create: bool = True,
             config: dict | None = None) -> Any:
        """Open the store in ``db_dir`` (created if missing and ``create``) for ``model``.

        A ``postgresql://...[#table]`` address opens the PostgreSQL + pgvector store instead (``PgStore``:
        the same methods, many concurrent writers; see ``e5v.store.postgres``).

        Raises ConfigMismatchError if the store was built with another embedding config, StoreError if the
        directory is not an e5v store, is corrupted, or cannot be created. ``model=None`` opens for
        vector-only search (no config check, no ``add``); with ``config`` (an ``E5V.embedding_config()``
        computed elsewhere, e.g. on a Spark worker) it is checked/created like a model's, for ``add_vectors``.
        """
        if is_postgres_url(db_dir):
            from .postgres import PgStore

            return PgStore.open(str(db_dir), model, create=create, config=config)
        lancedb = require("lancedb", "store")
        root = Path(db_dir).expanduser()
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root} is a file, not a store directory")
        config = model_config(model) if model is not None else config
        _remove_uncommitted_creation(root)
        if (root / f"{TABLE}.lance").exists():
            try:
                table = lancedb.connect(root).open_table(TABLE)
                schema = table.schema
            except Exception as exc:  # noqa: BLE001 - any failure to open the dataset means it is unusable
                raise StoreError(f"the store at {root} is corrupted or unreadable: {exc}") from None
            stored = stored_config(schema)
            if stored is None or "vector" not in schema.names:
                raise StoreError(f"{root} holds a LanceDB table that e5v did not create; use another directory")
            if config is not None:
                check_config(stored, config, str(root))
            return cls(root, table, model, stored)
        if root.exists():
            foreign = sorted(p.name for p in root.iterdir() if p.name != LOCK_NAME)
            if foreign:
                raise StoreError(f"{root} is not an e5v store (it contains {', '.join(foreign[:5])}); "
                                 "give a new or empty directory for --db")
        if not create or config is None:
            raise StoreError(f"no store at {root}; create one with `e5v index ... --db {root}` first")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create a store at {root}: {exc.strerror or exc}") from None
        if not os.access(root, os.W_OK):
            raise StoreError(f"cannot create a store at {root}: the directory is read-only")
        with WriterLock(root):
            db = lancedb.connect(root)
            try:
                table = db.create_table(TABLE, schema=make_schema(config["dim"], config))
            except (ValueError, OSError) as exc:
                if (root / f"{TABLE}.lance" / "_versions").is_dir():  # created meanwhile by another process
                    return cls.open(root, model, create=False, config=config)
                raise StoreError(f"cannot create a store at {root}: {exc}") from None
        return cls(root, table, model, config)

    # ----------------------------------------------------------------- adding
    def add(self, sources: Any, batch_size: int = 32, show_progress: bool = True, *, text_unit: str = "line",
            pairs: str = "composed", commit_every: int = DEFAULT_COMMIT_EVERY,
            build_ann: bool | None = None) -> AddReport:
        """Embed ``sources`` and store them; content already in the store (same hash) is skipped.

        Args:
            sources: paths (folders, files, CSV/JSONL manifests; see ``e5v.store.walk``) and/or in-memory
                items (PIL/bytes, ``{"text"}``, ``{"image"}``, ``{"image", "text"}``, each may carry
                ``"metadata"``). A plain ``str`` is a path.
            batch_size: items per model forward pass.
            commit_every: items per atomic commit (a kill loses at most this much work).
            build_ann: True builds/rebuilds the ANN index; None builds it once the store reaches
                ``ann.AUTO_ANN_ROWS`` rows; False never.
        Returns:
            AddReport (added, skipped_existing, failed, unsupported, ...).
        """
        if self.model is None:
            raise StoreError("this store was opened without a model; pass one to Store.open to add items")
        if not os.access(self.root, os.W_OK):
            raise StoreError(f"the store at {self.root} is read-only; cannot add items")
        start = time.perf_counter()
        report = AddReport()
        with WriterLock(self.root):
            self._table.checkout_latest()
            existing = self._existing_hashes()
            commits = embed_and_commit(self.model, lambda rows: self._commit(rows, report),
                                       discover(sources, text_unit=text_unit, pairs=pairs), existing, batch_size,
                                       max(1, commit_every), show_progress, report)
            if commits > 8:
                self._table.optimize()  # compact the small per-commit fragments (and update an ANN index)
            report.total_rows = self._table.count_rows()
            wanted = build_ann or (build_ann is None and report.total_rows >= ann.AUTO_ANN_ROWS
                                   and not ann.has_ann(self._table))
            if wanted:
                try:
                    ann.build_ann(self._table, self.dim)
                    report.ann_built = True
                except ValueError as exc:
                    if build_ann:
                        raise StoreError(str(exc)) from None
        report.seconds = time.perf_counter() - start
        return report

    def add_vectors(self, rows: Any, *, commit_every: int = 1024) -> AddReport:
        """Store vectors embedded elsewhere (e.g. by the Spark stage) under this store's config.

        Each row is a dict: ``vector`` (dim floats), ``kind`` (text/image/composed), ``hash`` (content hash,
        see ``e5v.store.walk.content_hash``; rows already stored are skipped), optional ``path``, ``text``,
        ``metadata``. The caller vouches that the vectors were made under ``self.config`` (open the store with
        that model or ``config=``, which is checked). Bad rows are reported, not stored. Commits every
        ``commit_every`` rows, under the writer lock.
        """
        if not os.access(self.root, os.W_OK):
            raise StoreError(f"the store at {self.root} is read-only; cannot add items")
        start = time.perf_counter()
        report = AddReport()
        with WriterLock(self.root):
            self._table.checkout_latest()
            commit_vector_rows(rows, self.dim, self._existing_hashes(), lambda batch: self._commit(batch, report),
                               commit_every, report)
            report.total_rows = self._table.count_rows()
        report.seconds = time.perf_counter() - start
        return report

    def _commit(self, rows: list[dict], report: AddReport) -> int:
        """One atomic LanceDB commit of ``rows`` (nothing for none); returns the number of commits made."""
        if not rows:
            return 0
        self._table.add(to_arrow(rows, self._schema))
        report.added += len(rows)
        return 1

    def _existing_hashes(self) -> set[str]:
        n = self._table.count_rows()
        if n == 0:
            return set()
        return set(self._table.search().select(["hash"]).limit(n).to_arrow()["hash"].to_pylist())

    # ----------------------------------------------------------------- searching
    def search(self, query: Any, k: int = 10, where: str | None = None, kind: str | None = None, *,
               filter: dict | None = None, exact: bool | None = None, nprobes: int | None = None,
               refine_factor: int = ann.REFINE_FACTOR, ef_search: int | None = None) -> list[dict]:
        """Top-``k`` items by cosine similarity to ``query``.

        Args:
            query: str (text), PIL/Path/bytes (image), ``{"image", "text"}`` (composed) or a vector.
            where: SQL filter on the columns (``kind``, ``path``, ``text``, ``hash``, ``added_at``) and
                metadata via ``json_get_string(metadata, 'key')`` / ``json_get_int`` / ``json_get_float``.
            kind: only "text", "image" or "composed" items.
            filter: a structured metadata filter (``e5v.store.filters``: ``{"source": "web", "year": {"$gte":
                2020}}``), compiled with every value quoted: the form to take from untrusted callers.
            exact: None uses the ANN index when the store has one, else an exact search; True is always exact.
                The first exact query of a ``Store`` is LanceDB's flat scan; later ones rank an in-memory copy
                of the vectors (read once per table version, about two scans' worth of time) for stores up to
                ``exact.MAX_ROWS`` rows, so a one-shot CLI search does not pay for a copy it will not reuse.
            nprobes / refine_factor: ANN only: partitions probed (default ``ann.default_nprobes(len(store))``:
                5% of them, at least 20), and re-ranking of refine_factor x k
                candidates with the full vectors (the scores returned are exact cosines either way).
            ef_search: the PostgreSQL store's HNSW setting; refused here.
        Returns:
            dicts with id, score (cosine), path, kind, text, metadata; best first.
        """
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if k < 1:
            raise ValueError("k must be >= 1")
        if ef_search is not None:
            raise ValueError("ef_search tunes a PostgreSQL store's HNSW index; LanceDB's IVF index takes nprobes")
        vector = query_vector(self.model, self.dim, query)
        self._table.checkout_latest()
        filters = [check_raw_where(where)] if where else []
        if filter is not None:
            filters.append(compile_filter(filter))
        if kind:
            filters.append(f"kind = '{kind}'")
        use_ann = not exact and ann.has_ann(self._table)
        try:
            if not use_ann:
                self._exact_queries += 1
                if self._exact_queries > 1 and self._table.count_rows() <= exact_search.MAX_ROWS:
                    return search_in_memory(self._table, self._exact, vector, k, filters)
            return search_lance(self._table, vector, k, filters, use_ann, nprobes, refine_factor)
        except (ValueError, RuntimeError, OSError) as exc:
            if where:
                raise StoreError(f"search failed (check the filter {where!r}): {exc}") from None
            raise StoreError(f"search failed on the store at {self.root}: {exc}") from None

    def get(self, item_id: str) -> dict | None:
        """One stored item by id (id, path, kind, text, metadata, vector), or None if absent.

        Used for "more like this" (search with an item's own vector) and by the server's thumbnail route,
        which may only read paths recorded here.
        """
        if not isinstance(item_id, str) or not item_id.isalnum():
            return None
        self._table.checkout_latest()
        rows = (self._table.search().where(f"id = '{item_id}'")
                .select(["id", "path", "kind", "text", "metadata", "vector"]).limit(1).to_arrow().to_pylist())
        if not rows:
            return None
        row = rows[0]
        return {"id": row["id"], "path": row["path"], "kind": row["kind"], "text": row["text"],
                "metadata": as_json(row["metadata"]), "vector": np.asarray(row["vector"], dtype=np.float32)}

    # ----------------------------------------------------------------- facts
    def __len__(self) -> int:
        self._table.checkout_latest()
        return self._table.count_rows()

    def build_ann(self) -> dict:
        """Build (or rebuild) the ANN index now; returns its parameters."""
        with WriterLock(self.root):
            try:
                return ann.build_ann(self._table, self.dim)
            except ValueError as exc:
                raise StoreError(str(exc)) from None

    @property
    def has_ann(self) -> bool:
        return ann.has_ann(self._table)

    def close(self) -> None:
        """Nothing to release (LanceDB holds no connection); here so both store kinds close alike."""

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r}, rows={len(self)}, model={self.config.get('model')!r}, dim={self.dim})"


def _remove_uncommitted_creation(root: Path) -> None:
    """A process killed while creating the table can leave ``items.lance`` without any committed manifest.

    Such a directory holds no row by construction (nothing is visible before the first manifest), so it
    is removed and the store is created afresh instead of being reported as corrupted.
    """
    table_dir = root / f"{TABLE}.lance"
    versions = table_dir / "_versions"
    if not table_dir.is_dir() or (versions.is_dir() and any(versions.glob("*.manifest"))):
        return
    import shutil

    with WriterLock(root):
        if not (versions.is_dir() and any(versions.glob("*.manifest"))):
            shutil.rmtree(table_dir)


def store_exists(db: str | os.PathLike) -> bool:
    """Whether ``db`` (a directory or a ``postgresql://`` URL) already holds an e5v store."""
    if is_postgres_url(db):
        try:
            Store.open(str(db), None, create=False).close()
            return True
        except StoreError:
            return False
    return (Path(db).expanduser() / f"{TABLE}.lance").exists()


__all__ = ["Store", "AddReport", "ConfigMismatchError", "StoreError"]
