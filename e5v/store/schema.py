"""The store's on-disk layout: one LanceDB table whose schema carries the embedding config.

Layout of a store directory::

    DIR/items.lance/        the Lance dataset (versioned; each commit is atomic)
    DIR/.e5v-write.lock     advisory lock held by the one process writing (flock: freed on any exit)

Rows: ``id`` (short content hash), ``hash`` (sha256 of kind + content), ``kind`` (text/image/composed),
``path`` (source file, or manifest path with ``#row``; null for in-memory items), ``text`` (the passage
or modification text), ``metadata`` (JSON; filter with ``json_get_string(metadata, 'key') = 'v'``),
``added_at`` and ``vector`` (fixed-size float32, L2-normalised).

The embedding config (``E5V.embedding_config()``) is stored in the schema metadata, so it is written
in the same atomic commit that creates the table and can never disagree with the rows.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import ConfigMismatchError, E5VError

if TYPE_CHECKING:  # pyarrow is the LanceDB store's; the PostgreSQL store imports this module without it
    import pyarrow as pa

TABLE = "items"
CONFIG_KEY = b"e5v.config"
FORMAT_KEY = b"e5v.store_format"
FORMAT = b"1"
#: Config keys that do not change the vector space (a newer e5v reading an older store is fine).
IGNORED_KEYS = ("e5v_version",)


def make_schema(dim: int, config: dict[str, Any]) -> pa.Schema:
    """The table schema for ``dim``-dimensional vectors made under ``config``."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("hash", pa.string(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("path", pa.string()),
            pa.field("text", pa.string()),
            pa.field("metadata", pa.json_(pa.utf8())),
            pa.field("added_at", pa.timestamp("ms", tz="UTC")),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
        ],
        metadata={CONFIG_KEY: json.dumps(config, sort_keys=True).encode(), FORMAT_KEY: FORMAT},
    )


def stored_config(schema: pa.Schema) -> dict[str, Any] | None:
    """The embedding config recorded in a table schema, or None for a table e5v did not create."""
    raw = (schema.metadata or {}).get(CONFIG_KEY)
    return json.loads(raw) if raw else None


def check_config(stored: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Refuse to mix vector spaces: raise ConfigMismatchError listing every differing key."""
    keys = sorted((set(stored) | set(current)) - set(IGNORED_KEYS))
    diffs = [k for k in keys if stored.get(k) != current.get(k)]
    if diffs:
        lines = "; ".join(f"{k}: store has {stored.get(k)!r}, model has {current.get(k)!r}" for k in diffs)
        raise ConfigMismatchError(
            f"the store at {where} was built with another embedding config ({lines}). Vectors from different "
            "configs are not comparable: use the same model/options, or index into a new --db directory."
        )


def to_arrow(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (dicts with the schema's columns; metadata as a dict, vector as float32 array) -> Arrow table."""
    import numpy as np
    import pyarrow as pa

    dim = schema.field("vector").type.list_size
    vectors = np.stack([r["vector"] for r in rows]).astype(np.float32, copy=False) if rows else \
        np.zeros((0, dim), np.float32)
    meta = pa.array([json.dumps(r.get("metadata") or {}, default=str) for r in rows], pa.utf8())
    columns = {
        "id": pa.array([r["id"] for r in rows], pa.string()),
        "hash": pa.array([r["hash"] for r in rows], pa.string()),
        "kind": pa.array([r["kind"] for r in rows], pa.string()),
        "path": pa.array([r.get("path") for r in rows], pa.string()),
        "text": pa.array([r.get("text") for r in rows], pa.string()),
        "metadata": pa.ExtensionArray.from_storage(schema.field("metadata").type, meta),
        "added_at": pa.array([r["added_at"] for r in rows], schema.field("added_at").type),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
    }
    return pa.table(columns, schema=schema)


def model_config(model: Any) -> dict:
    """The model's embedding config, refused for multi-vector poolings (a store row holds one vector)."""
    config = model.embedding_config()
    if getattr(getattr(model, "pooler", None), "multi_vector", False):
        raise E5VError("a store holds one vector per item; load the model with a single-vector pooling "
                       "(not 'tokens')")
    return config
