"""The PostgreSQL store's layout: where a store lives in a database, its tables, and its ANN index.

A store is addressed by a libpq URL, optionally naming its table after ``#``:
``postgresql://user:pass@host:5432/dbname#photos`` (default table ``e5v_items``). Layout::

    e5v_stores          one row per store: name, dim, format, the embedding config (jsonb)
    <table>             id, hash (primary key), kind, path, text, metadata (jsonb), added_at, vector(dim)
    <table>_bq_hnsw     optional HNSW index on binary_quantize(vector)::bit(dim) with Hamming distance

Why binary quantisation: pgvector's HNSW indexes at most 2,000 dims for ``vector`` and 4,000 for ``halfvec``,
and E5-V has 4,096. One bit per dimension fits (``bit`` indexes up to 64,000), and the candidates it finds are
re-ranked by exact cosine on the full vectors, so the scores returned are exact either way.

The table and its config row are created in one transaction under an advisory lock, so concurrent writers
(Spark executors) that all find no store create exactly one, and no store is ever visible without its config.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

DEFAULT_TABLE = "e5v_items"
REGISTRY = "e5v_stores"
FORMAT = "pg1"
#: Table names are interpolated into SQL as identifiers, so they are held to a plain shape.
TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64


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
    ]


REGISTRY_DDL = f"""CREATE TABLE IF NOT EXISTS {REGISTRY} (
    name text PRIMARY KEY, dim integer NOT NULL, format text NOT NULL, config jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now())"""


def ann_index_name(table: str) -> str:
    return f"{table}_bq_hnsw"


def quantized(dim: int, operand: str = "vector") -> str:
    """The indexed expression; a query must spell it the same way for the planner to use the index."""
    return f"binary_quantize({operand})::bit({int(dim)})"


def ann_index_ddl(table: str, dim: int) -> str:
    return (f"CREATE INDEX CONCURRENTLY {ann_index_name(table)} ON {table} USING hnsw "
            f"(({quantized(dim)}) bit_hamming_ops) WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})")


COLUMNS = ("id", "hash", "kind", "path", "text", "metadata", "added_at", "vector")
COPY_TYPES = ["text", "text", "text", "text", "text", "jsonb", "timestamptz", "vector"]
