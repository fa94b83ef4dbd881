"""The store's two ways to rank, and the shape of a result.

Exact search ranks an in-memory copy of the vectors by matmul (``exact.ExactIndex``, LanceDB evaluates the
filters); ANN search and the first (one-shot) exact query go through LanceDB (``search_lance``). Scores are
cosines either way.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from . import ann, exact as exact_search

RESULT_COLUMNS = ["id", "path", "kind", "text", "metadata", "_distance"]


def search_in_memory(table: Any, cached: exact_search.ExactIndex, vector: np.ndarray, k: int, filters: list[str]
                     ) -> list[dict]:
    """Exact top-k by matmul over the cached vectors; LanceDB evaluates the filter and fetches the rows."""
    cached.ensure(table)
    allowed = None
    if filters:
        found = table.search().where(" AND ".join(filters)).select(["id"]).limit(max(len(cached.ids), 1))
        allowed = found.to_arrow()["id"].to_pylist()
    hits = cached.top_k(vector, k, allowed)
    if not hits:
        return []
    listed = ", ".join(f"'{item_id}'" for item_id, _ in hits)  # ids are hex hash prefixes: safe to quote
    rows = (table.search().where(f"id IN ({listed})").select(RESULT_COLUMNS[:-1]).limit(len(hits))
            .to_arrow().to_pylist())
    by_id = {r["id"]: r for r in rows}
    return [result(by_id[item_id], score) for item_id, score in hits if item_id in by_id]


def search_lance(table: Any, vector: np.ndarray, k: int, filters: list[str], use_ann: bool, nprobes: int | None,
                 refine_factor: int) -> list[dict]:
    """LanceDB's own search: the ANN index (with exact re-ranking) or its flat scan."""
    builder = table.search(vector, vector_column_name="vector").metric("cosine").limit(k)
    builder = builder.select(RESULT_COLUMNS)
    if filters:
        builder = builder.where(" AND ".join(filters), prefilter=True)
    if use_ann:
        nprobes = nprobes or ann.default_nprobes(table.count_rows())
        builder = builder.nprobes(nprobes).refine_factor(refine_factor)
    else:
        builder = builder.bypass_vector_index()
    return [result(r, 1.0 - float(r["_distance"])) for r in builder.to_arrow().to_pylist()]


def query_vector(model: Any, dim: int, query: Any) -> np.ndarray:
    """The query as a vector: a given one checked (dims, finite, non-zero), anything else embedded by ``model``."""
    from ..errors import StoreError

    if isinstance(query, np.ndarray) or (isinstance(query, list) and query and isinstance(query[0], float)):
        vec = np.asarray(query, dtype=np.float32).reshape(-1)
        if vec.shape[0] != dim:
            raise ValueError(f"query vector has {vec.shape[0]} dims, the store holds {dim}-dim vectors")
        if not np.isfinite(vec).all() or not np.linalg.norm(vec) > 0:
            raise ValueError("query vector must be finite and non-zero")
        return vec
    if model is None:
        raise StoreError("this store was opened without a model: only vector queries are possible")
    return model.encode_with_details([query], raise_on_error=True).vectors[0]


def result(row: dict, score: float) -> dict:
    return {"id": row["id"], "score": score, "path": row["path"], "kind": row["kind"], "text": row["text"],
            "metadata": as_json(row["metadata"])}


def as_json(value: Any) -> dict:
    if value is None:
        return {}
    return json.loads(value) if isinstance(value, (str, bytes)) else dict(value)
