"""Retrieval ranks, Recall@k and Spearman correlation: the numbers every eval reports.

Tie rule (documented because planted tests and tiny models do produce exact ties): a query's rank is
``1 + the number of non-positive, non-excluded candidates scoring >= its best positive``. A tie between
a positive and a negative therefore counts *against* the query (pessimistic), and the result never
depends on the order of the gallery. Ties among positives do not matter: only the best positive
counts, so an image whose five captions tie at the top is still a hit at R@1. A query without any
(non-excluded) positive never counts as a hit (rank = inf).

Scores are computed in query chunks so a COCO-size run (25k captions x 5k images) never materialises
the whole score matrix.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import require


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows (float32); zero rows stay zero instead of becoming NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)


def ranks_from_scores(scores: np.ndarray, positives: Sequence[Sequence[int]],
                      exclude: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """1-based rank of the best positive of each query under the tie rule above.

    Args:
        scores: (Q, N) similarity of each query to each gallery item.
        positives: per query, the gallery indices that count as correct.
        exclude: per query, gallery indices removed from the ranking (e.g. CIRR's reference image).
    Returns:
        (Q,) float array of ranks; ``inf`` for queries without a positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    q, n = scores.shape
    if len(positives) != q:
        raise ValueError(f"{q} queries but {len(positives)} positive lists")
    if exclude is not None and len(exclude) != q:
        raise ValueError(f"{q} queries but {len(exclude)} exclude lists")
    pos = np.zeros((q, n), dtype=bool)  # (Q, N)
    out = np.zeros((q, n), dtype=bool)  # (Q, N)
    for i, idx in enumerate(positives):
        pos[i, list(idx)] = True
    if exclude is not None:
        for i, idx in enumerate(exclude):
            out[i, list(idx)] = True
    pos &= ~out
    best = np.where(pos, scores, -np.inf).max(axis=1)  # (Q,)
    negatives = ~pos & ~out  # (Q, N)
    beaten_by = (negatives & (scores >= best[:, None])).sum(axis=1)  # (Q,)
    ranks = 1.0 + beaten_by
    ranks[~pos.any(axis=1)] = np.inf
    return ranks


def retrieval_ranks(queries: np.ndarray, gallery: np.ndarray, positives: Sequence[Sequence[int]],
                    exclude: Sequence[Sequence[int]] | None = None, chunk: int = 1024) -> np.ndarray:
    """Ranks for cosine retrieval of ``gallery`` rows by ``queries`` rows, scored chunk by chunk."""
    queries, gallery = normalize(queries), normalize(gallery)
    ranks = []
    for start in range(0, len(queries), chunk):
        stop = start + chunk
        scores = queries[start:stop] @ gallery.T  # (chunk, N)
        ranks.append(ranks_from_scores(scores, positives[start:stop],
                                       None if exclude is None else exclude[start:stop]))
    return np.concatenate(ranks) if ranks else np.zeros(0)


def recall_at_k(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """{"R@k": percentage of queries whose rank <= k} for each k (percent, like the paper's tables)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no queries to score")
    return {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in ks}


def spearman(predicted: Sequence[float], gold: Sequence[float]) -> float:
    """Spearman rank correlation x 100 (average ranks for ties, as scipy and SentEval compute it)."""
    stats = require("scipy.stats", "eval")
    predicted = np.asarray(predicted, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    if predicted.shape != gold.shape or predicted.ndim != 1:
        raise ValueError(f"need two equal-length 1-D score lists, got {predicted.shape} and {gold.shape}")
    if len(gold) < 2:
        raise ValueError("Spearman needs at least 2 pairs")
    if np.ptp(gold) == 0 or np.ptp(predicted) == 0:
        raise ValueError("Spearman is undefined when all scores are equal")
    return float(100.0 * stats.spearmanr(predicted, gold).statistic)


def paired_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays."""
    return np.sum(normalize(a) * normalize(b), axis=1)
