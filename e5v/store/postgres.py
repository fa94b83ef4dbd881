"""``PgStore``: the vector store on PostgreSQL + pgvector, for many writers and machines.

``Store.open("postgresql://user@host/db#photos", model)`` returns one. It has the LanceDB store's surface
(``add``, ``add_vectors``, ``search``, ``get``, ``len``, ``build_ann``) and guarantees, with what a database
server adds:

- **Many concurrent writers.** Rows are keyed by content hash; each commit copies its rows into a session
  temp table (binary ``COPY``) and inserts them with ``ON CONFLICT (hash) DO NOTHING`` in one transaction.
  Two writers embedding the same item store it once; a writer killed mid-commit leaves nothing of that
  commit; a rerun skips what is stored. No lock file, so Spark executors write their partitions directly.
- **Search while indexing** (MVCC): searches run in read-only transactions under a statement timeout, so
  even an owner's raw ``where`` cannot write or run forever.
- **ANN for 4,096 dims**: HNSW (default) on ``binary_quantize(vector)::bit(dim)`` (Hamming), or IVFFlat on a
  halfvec of the first 1,024 dims, candidates re-ranked by exact cosine on the full vectors (``pg_ann`` explains
  why and which). Built concurrently, so writers and searches go on meanwhile; PostgreSQL then maintains it on
  every insert.

Needs the ``pgvector`` extra (``pip install "e5v[pgvector]"``) and pgvector >= 0.7 in the database.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from typing import Any, Iterator

import numpy as np

from ..errors import StoreError
from ..items import KINDS
from . import ann, pg_ann, pg_schema as schema
from .filters import check_raw_where, compile_filter_pg
from .ingest import AddReport, commit_vector_rows, embed_and_commit
from .schema import check_config, model_config
from .search import query_vector
from .walk import discover

#: Server-side limits for one search (raw filters included) and for building the ANN index.
SEARCH_TIMEOUT = os.environ.get("E5V_PG_SEARCH_TIMEOUT", "60s")
BUILD_MEMORY = os.environ.get("E5V_PG_BUILD_MEMORY", "1GB")
#: Seconds a search trusts what it last read of the table's ANN index (another process may build or switch
#: one meanwhile; this store's own builds update it at once). Saves a catalog query per search.
ANN_FACTS_TTL = 5.0


class PgStore:
    """A store in a PostgreSQL table. Use ``Store.open(url, model)`` (or ``PgStore.open``)."""

    backend = "postgresql"

    def __init__(self, url: str, table: str, model: Any, config: dict, dim: int, conn: Any = None,
                 pgvector: tuple[int, ...] = schema.MIN_PGVECTOR):
        self._url, self.table, self.model, self.config, self.dim = url, table, model, config, dim
        self.pgvector = pgvector  # the server's pgvector version: which index settings it knows
        self.root = f"{schema.redact(url)}#{table}"  # what messages call this store (no password)
        self._lock = threading.Lock()  # one connection, used by one thread at a time (the server's threads)
        self._conn = conn if conn is not None else schema.connect(url)
        self._ann_facts: tuple[float, pg_ann.AnnIndex | None] = (-ANN_FACTS_TTL, None)

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, db: str, model: Any = None, *, create: bool = True, config: dict | None = None,
             table: str | None = None) -> "PgStore":
        """Open (or, with ``create`` and a model/config, create) the store ``table`` in the database at ``db``.

        Raises StoreError (unreachable server, no pgvector, a table e5v did not create, no store and nothing
        to create it from) or ConfigMismatchError (another embedding config).
        """
        url, name = schema.split_url(db, table)
        config = model_config(model) if model is not None else config
        conn = schema.connect(url)
        where = f"{schema.redact(url)}#{name}"
        try:
            version = schema.ensure_pgvector(conn, where)
            stored = schema.registered(conn, name)
            if stored is None:
                if schema.table_exists(conn, name):
                    raise StoreError(f"{where}: the table {name!r} exists but e5v did not create it; "
                                     "name another table after '#' in the URL")
                if not create or config is None:
                    raise StoreError(f"no store at {where}; create one with `e5v index ... --db '{db}'` first")
                stored = schema.create_store(conn, name, config)
            if config is not None:
                check_config(stored["config"], config, where)
            from pgvector.psycopg import register_vector

            register_vector(conn)  # the extension exists now (it may have been created just above)
        except BaseException:
            conn.close()
            raise
        return cls(url, name, model, stored["config"], stored["dim"], conn, version)

    # ----------------------------------------------------------------- adding
    def add(self, sources: Any, batch_size: int = 32, show_progress: bool = True, *, text_unit: str = "line",
            pairs: str = "composed", commit_every: int = 64, build_ann: bool | None = None,
            ann_kind: str | None = None) -> AddReport:
        """Embed ``sources`` and store them (``Store.add``'s contract); content already stored is skipped.

        Other writers may add to the same store at the same time: an item both embed is stored once.
        ``ann_kind`` is the index ``build_ann`` builds (``pg_ann.KINDS``; default: the table's, else HNSW).
        """
        if self.model is None:
            raise StoreError("this store was opened without a model; pass one to Store.open to add items")
        start = time.perf_counter()
        report = AddReport()
        embed_and_commit(self.model, lambda rows: self._commit(rows, report),
                                   discover(sources, text_unit=text_unit, pairs=pairs), _StoredHashes(self),
                                   batch_size, max(1, commit_every), show_progress, report)
        report.total_rows = len(self)
        if build_ann or (build_ann is None and report.total_rows >= ann.AUTO_ANN_ROWS and not self.has_ann):
            self.build_ann(ann_kind)
            report.ann_built = True
        report.seconds = time.perf_counter() - start
        return report

    def add_vectors(self, rows: Any, *, commit_every: int = 1024) -> AddReport:
        """Store vectors embedded elsewhere (``Store.add_vectors``'s rows); hashes already stored are skipped."""
        start = time.perf_counter()
        report = AddReport()
        # hashes already stored are skipped by the insert itself (another writer may be adding them right now)
        commit_vector_rows(rows, self.dim, set(), lambda batch: self._commit(batch, report), commit_every, report)
        report.total_rows = len(self)
        report.seconds = time.perf_counter() - start
        return report

    def _commit(self, rows: list[dict], report: AddReport) -> int:
        """One transaction: binary COPY into the session's staging table, then insert what is not stored."""
        from psycopg.types.json import Jsonb

        values = []
        for row in rows:
            meta = json.dumps(row.get("metadata") or {}, default=str)
            if "\x00" in (row.get("text") or "") + (row.get("path") or "") or "\\u0000" in meta:
                report.failed.append((row.get("path") or f"item {row['id']}",
                                      "contains a NUL character, which PostgreSQL cannot store"))
                continue
            values.append([row["id"], row["hash"], row["kind"], row.get("path"), row.get("text"),
                           Jsonb(meta, dumps=_as_is), row["added_at"], np.asarray(row["vector"], np.float32)])
        if not values:
            return 0
        columns = ", ".join(schema.COLUMNS)
        staging = f"e5v_staging_{self.table}"
        with self._session() as conn, conn.transaction():
            cur = conn.cursor()
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {self.table} INCLUDING DEFAULTS) "
                        "ON COMMIT DELETE ROWS")
            with cur.copy(f"COPY {staging} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(schema.COPY_TYPES)
                for value in values:
                    copy.write_row(value)
            cur.execute(f"INSERT INTO {self.table} ({columns}) SELECT {columns} FROM {staging} "
                        "ON CONFLICT (hash) DO NOTHING")
            inserted = max(cur.rowcount, 0)
        report.added += inserted
        report.skipped_existing += len(values) - inserted  # stored meanwhile by another writer
        return 1

    def stored(self, content_hash: str) -> bool:
        """Whether an item with this content hash is in the store."""
        return bool(self.stored_among([content_hash]))

    def stored_among(self, hashes: list[str]) -> set[str]:
        """The given content hashes that are in the store (one query, however many)."""
        with self._session() as conn:
            rows = conn.execute(f"SELECT hash FROM {self.table} WHERE hash = ANY(%s)", (list(hashes),)).fetchall()
        return {h for (h,) in rows}

    # ----------------------------------------------------------------- searching
    def search(self, query: Any, k: int = 10, where: str | None = None, kind: str | None = None, *,
               filter: dict | None = None, exact: bool | None = None, nprobes: int | None = None,
               refine_factor: int = ann.REFINE_FACTOR, ef_search: int | None = None) -> list[dict]:
        """Top-``k`` items by cosine similarity to ``query`` (``Store.search``'s arguments and results).

        ``where`` is raw PostgreSQL over the columns (e.g. ``metadata->>'split' = 'test'``), for the store's
        owner; ``filter`` is the structured form for everyone else. ANN: ``refine_factor * k`` candidates
        from the index re-ranked exactly; an IVFFlat index scans ``nprobes`` lists (default
        ``pg_ann.default_probes``), an HNSW index keeps ``ef_search`` candidates (default that many, at most
        1000). The other index's knob is a ValueError.
        """
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if k < 1:
            raise ValueError("k must be >= 1")
        index = None if exact else self.ann_index
        if index is None and (nprobes is not None or ef_search is not None) and not exact:
            raise ValueError(f"nprobes / ef_search tune an ANN index and {self.root} has none (build_ann())")
        vector = query_vector(self.model, self.dim, query)
        sql, args, settings = self.query_plan(vector, k, where, kind, filter, index, refine_factor, nprobes,
                                              ef_search)
        try:
            with self._session() as conn, conn.transaction():
                conn.execute("SET TRANSACTION READ ONLY")
                for name, value in {"statement_timeout": SEARCH_TIMEOUT, **settings}.items():
                    conn.execute("SELECT set_config(%s, %s, true)", (name, value))
                rows = conn.execute(sql, args).fetchall()
        except schema.psycopg_module().Error as exc:
            what = f"check the filter {where!r}" if where else f"the store at {self.root}"
            raise StoreError(f"search failed ({what}): {str(exc).strip()}") from None
        return [{"id": r[0], "score": float(r[5]), "path": r[1], "kind": r[2], "text": r[3], "metadata": r[4] or {}}
                for r in rows]

    def query_plan(self, vector: np.ndarray, k: int, where: str | None, kind: str | None, filter: dict | None,
                   index: pg_ann.AnnIndex | None, refine_factor: int = ann.REFINE_FACTOR,
                   nprobes: int | None = None, ef_search: int | None = None) -> tuple[str, list, dict[str, str]]:
        """The SQL of a search, its arguments, and the transaction-local settings it runs under."""
        clauses, params = [], []
        if where:
            clauses.append(check_raw_where(where).replace("%", "%%"))  # the owner's % are literal, not placeholders
        if filter is not None:
            sql, filter_params = compile_filter_pg(filter)
            clauses.append(sql)
            params += filter_params
        if kind:
            clauses.append("kind = %s")
            params.append(kind)
        where_sql = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        columns = "id, path, kind, text, metadata, 1 - (vector <=> %s) AS score"
        if index is None:
            return (f"SELECT {columns} FROM {self.table} {where_sql} ORDER BY vector <=> %s LIMIT %s",
                    [vector, *params, vector, k], {})
        candidates = max(k, k * max(1, refine_factor))
        sql = (f"SELECT {columns} FROM (SELECT * FROM {self.table} {where_sql} "
               f"ORDER BY {pg_ann.candidate_order(index.kind, self.dim)} LIMIT %s) c "
               "ORDER BY vector <=> %s LIMIT %s")
        settings = pg_ann.search_settings(index, candidates, nprobes, ef_search, self.pgvector)
        return sql, [vector, *params, vector, candidates, vector, k], settings

    def get(self, item_id: str) -> dict | None:
        """One stored item by id (id, path, kind, text, metadata, vector), or None."""
        if not isinstance(item_id, str) or not item_id.isalnum():
            return None
        with self._session() as conn:
            row = conn.execute(f"SELECT id, path, kind, text, metadata, vector FROM {self.table} WHERE id = %s LIMIT 1",
                               (item_id,)).fetchone()
        if row is None:
            return None
        return {"id": row[0], "path": row[1], "kind": row[2], "text": row[3], "metadata": row[4] or {},
                "vector": np.asarray(row[5].to_numpy(), dtype=np.float32)}

    # ----------------------------------------------------------------- index and facts
    def build_ann(self, kind: str | None = None, *, rebuild: bool = False) -> dict:
        """Make ``kind`` ("ivfflat" or "hnsw"; ``pg_ann``) the table's ANN index, concurrently (writers and
        searches go on). ``kind`` None keeps the table's kind, else HNSW. A no-op when a valid one of that
        kind exists, unless ``rebuild`` (IVFFlat after the table has grown several times over); an index of the
        other kind is replaced.
        """
        with self._session() as conn:
            try:
                conn.execute(schema.metadata_index_ddl(self.table, concurrently=True))  # stores from before it existed
                built = pg_ann.build(conn, self.table, self.dim, kind, BUILD_MEMORY, rebuild)
            except schema.psycopg_module().Error as exc:
                raise StoreError(f"building the {kind or 'ANN'} index on {self.root} failed: {str(exc).strip()}") from None
            finally:
                self._ann_facts = (-ANN_FACTS_TTL, None)
        self._ann_facts = (time.monotonic(), built)
        return pg_ann.describe(built, self.dim)

    @property
    def ann_index(self) -> pg_ann.AnnIndex | None:
        """The table's valid ANN index (as read at most ``ANN_FACTS_TTL`` seconds ago), or None."""
        seen, index = self._ann_facts
        if time.monotonic() - seen >= ANN_FACTS_TTL:
            with self._session() as conn:
                index = pg_ann.current(conn, self.table)[0]
            self._ann_facts = (time.monotonic(), index)
        return index

    @property
    def has_ann(self) -> bool:
        return self.ann_index is not None

    def __len__(self) -> int:
        with self._session() as conn:
            return int(conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "PgStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PgStore({self.root!r}, model={self.config.get('model')!r}, dim={self.dim})"

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        """The store's connection under its lock, reconnected once if the server dropped it."""
        with self._lock:
            if self._conn.closed or self._conn.broken:
                self._conn = schema.connect(self._url)
            yield self._conn


def _as_is(text: str) -> str:
    """``Jsonb``'s dumper for metadata already serialised (and checked for NUL) by ``_commit``."""
    return text


class _StoredHashes:
    """Which hashes are stored, for ``ingest.embed_and_commit``: ``among`` asks the database once per window of
    records (content another writer stored counts); ``add`` remembers this run's items."""

    def __init__(self, store: PgStore):
        self.store, self.local = store, set()

    def among(self, hashes: list[str]) -> set[str]:
        local = {h for h in hashes if h in self.local}
        rest = [h for h in hashes if h not in local]
        return local | (self.store.stored_among(rest) if rest else set())

    def add(self, content_hash: str) -> None:
        self.local.add(content_hash)
