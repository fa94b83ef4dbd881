"""Approximate nearest-neighbour (ANN) index policy: when to build one and with which parameters.

Exact search (a full scan) is the default because it is always right and, on a few ten thousand
rows, already fast. Past ``AUTO_ANN_ROWS`` rows (or when asked) an IVF_PQ index is built; queries
then probe ``NPROBES`` partitions and re-rank ``REFINE_FACTOR * k`` candidates with the full
vectors, which recovers most of the recall product quantisation loses. The numbers behind these
defaults are in ``bench/results/store.md``.
"""

from __future__ import annotations

import math
from typing import Any

#: A store with at least this many rows gets an ANN index automatically at the end of ``add``.
AUTO_ANN_ROWS = 100_000
#: Fewer rows than this cannot train an IVF_PQ index sensibly (256 PQ centroids need samples).
MIN_ANN_ROWS = 5_000
#: Partitions probed per query and the re-ranking factor (candidates = k * REFINE_FACTOR).
NPROBES = 32
REFINE_FACTOR = 20


def index_params(n_rows: int, dim: int) -> dict[str, Any]:
    """IVF_PQ parameters for ``n_rows`` vectors of ``dim`` dims (cosine).

    Partitions ~ sqrt(N) (Lance's own rule of thumb), sub-vectors of 16 dims each when that divides.
    """
    partitions = max(16, min(4096, int(math.sqrt(n_rows))))
    sub = dim // 16 if dim % 16 == 0 else _largest_divisor(dim, 256)
    return {"metric": "cosine", "index_type": "IVF_PQ", "num_partitions": partitions, "num_sub_vectors": sub,
            "max_iterations": 20}


def build_ann(table: Any, dim: int) -> dict[str, Any]:
    """(Re)build the IVF_PQ index on ``table.vector``; returns the parameters used."""
    n = table.count_rows()
    if n < MIN_ANN_ROWS:
        raise ValueError(f"an ANN index needs at least {MIN_ANN_ROWS} rows (this store has {n}); "
                         "exact search is used and is fast at this size")
    params = index_params(n, dim)
    table.create_index(vector_column_name="vector", replace=True, **params)
    return params


def has_ann(table: Any) -> bool:
    """True when the vector column carries an ANN index."""
    return any("vector" in getattr(ix, "columns", []) for ix in table.list_indices())


def _largest_divisor(dim: int, limit: int) -> int:
    return max(d for d in range(1, limit + 1) if dim % d == 0)
