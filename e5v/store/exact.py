"""Exact search by matmul over an in-memory copy of the store's vectors.

Why not LanceDB's own flat scan: it re-reads and re-decodes the vector column on every query and ran
25-30x slower than a plain numpy matmul on the same vectors (``bench/results/store.md``): ~0.5-0.8 s per
query at 20k rows, 1.3-5 s at 100k. Reading the column once costs about two such scans; every later
query is then a matrix-vector product, so ``Store`` makes the copy from its second exact query on. The copy is kept for stores up to ``MAX_ROWS`` rows (1.6 GB at E5-V's
4096 dims); past that the store has an ANN index by default and explicit exact queries use LanceDB's scan.

The copy is tied to a table version: any commit (an ``add`` here or in another process) is picked up at
the next query by re-reading the column. Filters (``where``/``kind``) are evaluated by LanceDB and only
select which rows the matmul ranks, so every filter LanceDB accepts works here too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Largest store whose vectors are held in memory for exact search (= ``ann.AUTO_ANN_ROWS``).
MAX_ROWS = 100_000


class ExactIndex:
    """Vectors of one table version, L2-normalised, with their ids, for cosine top-k by matmul."""

    def __init__(self) -> None:
        self.version: Any = None
        self.ids: np.ndarray = np.empty(0, dtype=object)
        self.unit: np.ndarray = np.empty((0, 0), dtype=np.float32)
        self._row_of: dict[str, int] = {}

    def ensure(self, table: Any) -> None:
        """Re-read the vectors if ``table`` (already checked out at its latest version) moved on."""
        if table.version == self.version:
            return
        version = table.version  # recorded before reading: a commit landing meanwhile triggers a re-read next time
        n = table.count_rows()
        dim = table.schema.field("vector").type.list_size
        matrix = np.empty((n, dim), dtype=np.float32)  # filled batch by batch: one copy of the vectors, not two
        ids: list[str] = []
        for batch in table.search().select(["id", "vector"]).limit(max(n, 1)).to_batches():
            vectors = batch.column("vector")
            size = len(vectors)
            if len(ids) + size > n:  # a commit landed between count_rows and the read: read again next query
                break
            matrix[len(ids):len(ids) + size] = vectors.flatten().to_numpy(zero_copy_only=False).reshape(size, dim)
            ids += batch.column("id").to_pylist()
        matrix = matrix[:len(ids)]
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix /= np.where(norms > 0, norms, 1.0)  # in place; stored vectors are finite and non-zero
        self.unit = matrix
        self.ids = np.asarray(ids, dtype=object)
        self._row_of = {item_id: row for row, item_id in enumerate(self.ids)}
        self.version = version

    def top_k(self, query: np.ndarray, k: int, allowed: list[str] | None = None) -> list[tuple[str, float]]:
        """(id, cosine) best first; ``allowed`` restricts the ranking to these ids (a filter's result)."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        q = q / np.linalg.norm(q)
        if allowed is None:
            rows = None
            scores = self.unit @ q
        else:
            rows = np.fromiter((self._row_of[i] for i in allowed if i in self._row_of), dtype=np.int64)
            scores = self.unit[rows] @ q
        k = min(k, len(scores))
        if k == 0:
            return []
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        picked = best if rows is None else rows[best]
        return [(str(self.ids[r]), float(scores[b])) for r, b in zip(picked, best)]
