"""The PostgreSQL store's layout: where a store lives in a database, its tables, and its ANN index.

A store is addressed by a libpq URL, optionally naming its table after ``#``:
``postgresql://user:pass@host:5432/dbname#photos`` (default table ``e5v_items``). Layout::

    e5v_stores          one row per store: name, dim, format, the embedding config (jsonb)
    <table>             id, hash (primary key), kind, path, text, metadata (jsonb), added_at, vector(dim)
    <table>_pf_ivfflat  optional ANN index on subvector(vector, 1, 1024)::halfvec(1024), cosine distance
    <table>_bq_hnsw     (or this one instead: binary_quantize(vector)::bit(dim), Hamming; ``pg_ann`` explains both)

The table and its config row are created in one transaction under an advisory lock, so concurrent writers
(Spark executors) that all find no store create exactly one, and no store is ever visible without its config.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import StoreError, require

DEFAULT_TABLE = "e5v_items"
REGISTRY = "e5v_stores"
FORMAT = "pg1"
#: Table names are interpolated into SQL as identifiers, so they are held to a plain shape.
TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")


def is_postgres_url(db: object) -> bool:
    """True for ``postgresql://`` / ``postgres://`` addresses (the store's PostgreSQL backend)."""
    return isinstance(db, str) and db.split("://", 1)[0].lower() in ("postgresql", "postgres")


def split_url(db: str, table: str | None = None) -> tuple[str, str]:
    """(libpq URL without the ``#table`` fragment, table name); raises ValueError for a bad table name."""
    parts = urlsplit(db)
    name = table or parts.fragment or DEFAULT_TABLE
    if not TABLE_NAME.fullmatch(name) or name == REGISTRY:
        raise ValueError(f"store table name {name!r} must be lower-case letters, digits and _ (at most 48, "
                         f"not starting with a digit, not {REGISTRY!r})")
    return urlunsplit(parts._replace(fragment="")), name


def redact(url: str) -> str:
    """The URL without its password, for messages and ``repr``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def create_statements(table: str, dim: int) -> list[str]:
    """DDL for a new store table (the registry row is inserted separately, in the same transaction)."""
    return [
        f"""CREATE TABLE {table} (
            id text NOT NULL,
            hash text PRIMARY KEY,
            kind text NOT NULL CHECK (kind IN ('text', 'image', 'composed')),
            path text,
            text text,
            metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            added_at timestamptz NOT NULL DEFAULT now(),
            vector vector({int(dim)}) NOT NULL)""",
        f"CREATE INDEX {table}_id ON {table} (id)",
        metadata_index_ddl(table),
    ]


def metadata_index_ddl(table: str, concurrently: bool = False) -> str:
    """A GIN index for containment (``metadata @> ...``): structured equality filters on strings and booleans
    find their rows through it instead of reading every row (``filters.compile_filter_pg``)."""
    how = "CONCURRENTLY IF NOT EXISTS" if concurrently else "IF NOT EXISTS"
    return f"CREATE INDEX {how} {table}_metadata ON {table} USING gin (metadata jsonb_path_ops)"


REGISTRY_DDL = f"""CREATE TABLE IF NOT EXISTS {REGISTRY} (
    name text PRIMARY KEY, dim integer NOT NULL, format text NOT NULL, config jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now())"""


COLUMNS = ("id", "hash", "kind", "path", "text", "metadata", "added_at", "vector")
COPY_TYPES = ["text", "text", "text", "text", "text", "jsonb", "timestamptz", "vector"]


MIN_PGVECTOR = (0, 7, 0)  # binary_quantize, and HNSW / IVFFlat over bit with Hamming distance


def psycopg_module() -> Any:
    return require("psycopg", "pgvector")


def connect(url: str) -> Any:
    psycopg = psycopg_module()
    require("pgvector", "pgvector")
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="e5v")
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to PostgreSQL at {redact(url)}: {str(exc).strip()}") from None
    try:
        from pgvector.psycopg import register_vector

        register_vector(conn)
    except psycopg.ProgrammingError:
        pass  # the extension is not created yet: ensure_pgvector creates it, the store's own connection registers
    return conn


def ensure_pgvector(conn: Any, where: str) -> tuple[int, ...]:
    """pgvector must be installed (created here if the role may) and at least ``MIN_PGVECTOR``; its version."""
    psycopg = psycopg_module()
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            raise StoreError(f"{where}: the pgvector extension is not installed in this database and could not be "
                             f"created ({str(exc).strip()}); run CREATE EXTENSION vector as its owner") from None
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    version = tuple(int(p) for p in row[0].split(".")[:3] if p.isdigit())
    if version < MIN_PGVECTOR:
        raise StoreError(f"{where}: pgvector {row[0]} is too old; e5v needs >= "
                         f"{'.'.join(map(str, MIN_PGVECTOR))} (ALTER EXTENSION vector UPDATE)")
    return version


def registered(conn: Any, name: str) -> dict | None:
    if conn.execute("SELECT to_regclass(%s)", (REGISTRY,)).fetchone()[0] is None:
        return None
    row = conn.execute(f"SELECT dim, format, config FROM {REGISTRY} WHERE name = %s", (name,)).fetchone()
    if row is None:
        return None
    if row[1] != FORMAT:
        raise StoreError(f"the store {name!r} has format {row[1]!r}; this e5v reads {FORMAT!r}")
    return {"dim": int(row[0]), "config": row[2]}


def table_exists(conn: Any, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None


def create_store(conn: Any, name: str, config: dict) -> dict:
    """Create the table and its registry row in one transaction, once even under concurrent creators."""
    from psycopg.types.json import Jsonb

    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('e5v: create a store'))")
        stored = registered(conn, name)
        if stored is not None:  # another writer created it while we waited
            return stored
        conn.execute(REGISTRY_DDL)
        for statement in create_statements(name, int(config["dim"])):
            conn.execute(statement)
        conn.execute(f"INSERT INTO {REGISTRY} (name, dim, format, config) VALUES (%s, %s, %s, %s)",
                     (name, int(config["dim"]), FORMAT, Jsonb(config)))
    return {"dim": int(config["dim"]), "config": config}
