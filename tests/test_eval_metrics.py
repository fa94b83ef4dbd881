"""Metric code on planted embeddings and scores with hand-computed answers (ties, several captions per image)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from e5v.eval.metrics import paired_cosine, ranks_from_scores, recall_at_k, retrieval_ranks, spearman
from e5v.eval.retrieval import score_retrieval


def test_rank_counts_only_negatives_scoring_at_least_the_positive():
    assert ranks_from_scores(np.array([[0.9, 0.5, 0.1]]), [[1]]).tolist() == [2.0]
    assert ranks_from_scores(np.array([[0.9, 0.5, 0.1]]), [[2]]).tolist() == [3.0]


def test_tie_with_a_negative_counts_against_the_query_whatever_the_order():
    # The positive ties with a negative: rank 2 wherever the positive sits in the gallery.
    assert ranks_from_scores(np.array([[0.5, 0.5, 0.1]]), [[0]]).tolist() == [2.0]
    assert ranks_from_scores(np.array([[0.5, 0.5, 0.1]]), [[1]]).tolist() == [2.0]
    assert recall_at_k(ranks_from_scores(np.array([[0.5, 0.5, 0.1]]), [[1]]), [1, 2]) == {"R@1": 0.0, "R@2": 100.0}


def test_ties_among_positives_do_not_hurt():
    assert ranks_from_scores(np.array([[0.7, 0.7, 0.1]]), [[0, 1]]).tolist() == [1.0]
    # best positive decides: a weaker second positive is irrelevant
    assert ranks_from_scores(np.array([[0.2, 0.9, 0.5]]), [[0, 1]]).tolist() == [1.0]


def test_excluded_candidates_neither_help_nor_hurt():
    scores = np.array([[0.9, 0.8, 0.1]])
    assert ranks_from_scores(scores, [[1]]).tolist() == [2.0]
    assert ranks_from_scores(scores, [[1]], exclude=[[0]]).tolist() == [1.0]
    # a query whose only positive is excluded can never be a hit
    assert ranks_from_scores(scores, [[0]], exclude=[[0]]).tolist() == [math.inf]
    assert ranks_from_scores(scores, [[]]).tolist() == [math.inf]


def test_planted_retrieval_with_several_captions_per_image():
    e = np.eye(4, dtype=np.float32)
    images = np.stack([e[0], e[1], e[2]])
    captions = np.stack([
        e[0],                # c0 -> image 0: rank 1
        e[1],                # c1 -> image 0, but points at image 1; image 0 ties image 2 at 0: rank 3
        e[1] + 0.5 * e[2],   # c2 -> image 1: rank 1
        e[0],                # c3 -> image 2, points at image 0; image 2 ties image 1 at 0: rank 3
        e[2] + 0.9 * e[0],   # c4 -> image 2: rank 1
    ])
    owners = [0, 0, 1, 2, 2]
    table = score_retrieval(captions, images, owners)
    assert table["text->image"] == {"R@1": 60.0, "R@5": 100.0, "R@10": 100.0}
    # image->text: image 0's best captions (c0, and c3 which belongs to image 2) tie at 1.0 -> rank 2;
    # image 1: c1 (score 1.0) beats its own c2 (0.894) -> rank 2; image 2: c4 (0.743) is best -> rank 1.
    i2t = retrieval_ranks(images, captions, [[0, 1], [2], [3, 4]])
    assert i2t.tolist() == [2.0, 2.0, 1.0]
    assert table["image->text"]["R@1"] == pytest.approx(100 / 3)
    assert table["image->text"]["R@5"] == 100.0


def test_chunked_ranks_match_brute_force_argsort_on_random_data():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 16))
    owners = np.repeat(np.arange(40), 5)
    captions = images[owners] + rng.normal(scale=2.0, size=(200, 16))
    ranks = retrieval_ranks(captions, images, [[o] for o in owners], chunk=7)
    c = captions / np.linalg.norm(captions, axis=1, keepdims=True)
    im = images / np.linalg.norm(images, axis=1, keepdims=True)
    order = np.argsort(-(c @ im.T), axis=1)
    brute = np.array([np.where(order[j] == owners[j])[0][0] + 1 for j in range(200)])
    assert ranks.tolist() == brute.tolist()
    i2t = retrieval_ranks(images, captions, [np.flatnonzero(owners == i) for i in range(40)], chunk=3)
    order = np.argsort(-(im @ c.T), axis=1)
    brute = [min(np.where(np.isin(order[i], np.flatnonzero(owners == i)))[0]) + 1 for i in range(40)]
    assert i2t.tolist() == brute


def test_recall_is_a_percentage_and_refuses_no_queries():
    assert recall_at_k(np.array([1, 2, 11, math.inf]), [1, 10]) == {"R@1": 25.0, "R@10": 50.0}
    with pytest.raises(ValueError):
        recall_at_k(np.array([]), [1])


def test_spearman_known_values_and_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(100.0)
    assert spearman([4, 3, 2, 1], [10, 20, 30, 40]) == pytest.approx(-100.0)
    # gold ties get average ranks: gold ranks [1.5, 1.5, 3, 4] vs predicted ranks [1, 2, 3, 4]
    a, b = np.array([1.5, 1.5, 3, 4]), np.array([1, 2, 3, 4.0])
    expected = 100 * np.corrcoef(a, b)[0, 1]
    assert spearman([0.1, 0.2, 0.3, 0.4], [1, 1, 2, 3]) == pytest.approx(expected)
    with pytest.raises(ValueError):
        spearman([1, 2, 3], [2, 2, 2])
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])


def test_paired_cosine():
    a = np.array([[1.0, 0], [0, 2.0], [3.0, 0]])
    b = np.array([[2.0, 0], [1.0, 0], [-1.0, 0]])
    assert paired_cosine(a, b).tolist() == pytest.approx([1.0, 0.0, -1.0])
