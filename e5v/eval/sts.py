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


def headline(table: dict) -> float:
    """The one number of a dataset: its pooled "all" row, or its only row."""
    return table["all"]["spearman"] if "all" in table else next(iter(table.values()))["spearman"]


def run_sts_many(embedder: Embedder, datasets: list[tuple[str, list[STSSubset]]]) -> tuple[dict, dict]:
    """Several STS datasets (e.g. the paper's seven): each one's rows, then the average of their headlines.

    Subsets are pooled only within a dataset, never across datasets.
    """
    if len(datasets) == 1:
        return run_sts(embedder, datasets[0][1])
    table, counts, headlines = {}, {}, []
    for name, subsets in datasets:
        sub_table, sub_counts = run_sts(embedder, subsets)
        if len(sub_table) == 1:
            table[name] = next(iter(sub_table.values()))
        else:
            table.update({f"{name}: {row}": metrics for row, metrics in sub_table.items()})
        counts.update({f"{name}: {key}": value for key, value in sub_counts.items()})
        headlines.append(headline(sub_table))
    table["average"] = {"spearman": sum(headlines) / len(headlines)}
    return table, counts
