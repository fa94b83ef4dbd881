"""Semantic textual similarity: Spearman x 100 between cosine(sentence A, sentence B) and the gold score.

Sentences are embedded with the text prompt (unique sentences once, cached). With several subsets
(an STS12-16 directory) each gets its own row, and "all" is the Spearman over all pairs pooled, as
SentEval's ``results['all']['spearman']['all']``, the number SimCSE-style tables (and E5-V) report.
"""

from __future__ import annotations

from .cache import Embedder, text_key
from .metrics import paired_cosine, spearman
from .sts_formats import STSSubset


def run_sts(embedder: Embedder, subsets: list[STSSubset]) -> tuple[dict, dict]:
    """(table, counts) for STS subsets."""
    sentences = list(dict.fromkeys(s for subset in subsets for pair in subset.pairs for s in pair))
    vectors = embedder.encode(sentences, [text_key(s) for s in sentences],
                              [f"sentence {s[:40]!r}" for s in sentences], desc="sentences", kind="text")
    row_of = {s: i for i, s in enumerate(sentences)}
    table, counts = {}, {}
    pooled_pred: list[float] = []
    pooled_gold: list[float] = []
    for subset in subsets:
        a = vectors[[row_of[x] for x, _ in subset.pairs]]
        b = vectors[[row_of[y] for _, y in subset.pairs]]
        predicted = paired_cosine(a, b).tolist()
        table[subset.name] = {"spearman": spearman(predicted, subset.gold)}
        counts[f"{subset.name}_pairs"] = len(subset.pairs)
        pooled_pred += predicted
        pooled_gold += subset.gold
    if len(subsets) > 1:
        table["all"] = {"spearman": spearman(pooled_pred, pooled_gold)}
        counts["all_pairs"] = len(pooled_gold)
    counts["unique_sentences"] = len(sentences)
    return table, counts
