"""Composed image retrieval: CIRR val (R@1/5/10, R_subset@1/2/3) and FashionIQ val (R@10/R@50 per category).

Protocol of the paper's code (DESIGN.md §1 and §4):
* CIRR: query = reference image + caption with the composed prompt ("e5v" set; ``original_spelling``
  selects the code's "desribe"); gallery = every val image with the "cirr-target" prompt. The
  reference image is removed from its own ranking (the paper's code sets its score to -1; removal is
  the same unless all other scores are below -1). R_subset ranks only the query's img_set members.
* FashionIQ: per category, query = reference + caption pair, embedded in *both* orders
  ("a, b" and "b, a"), the raw vectors summed and then normalised; gallery = the category's val split
  with ``fashioniq_prompts``. The E5-V code words the "toptee" prompts as "shirt"; so do we.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..prompts import NAMED_PROMPTS, PromptSet, fashioniq_prompts
from ..items import content_key
from .cache import Embedder, composed_key, file_digest_of
from .datasets import ComposedSet
from .metrics import normalize, ranks_from_scores, recall_at_k, retrieval_ranks


def cirr_prompts(original_spelling: bool = False) -> tuple[PromptSet, PromptSet]:
    """(query prompts, target prompts) for CIRR."""
    query = NAMED_PROMPTS["cirr-original" if original_spelling else "e5v"]
    return query, NAMED_PROMPTS["cirr-target"]


def fashioniq_category_prompts(category: str) -> PromptSet:
    return fashioniq_prompts("shirt" if category == "toptee" else category)


class _Keys:
    """File-content digests, each file read once (a reference image is shared by many queries)."""

    def __init__(self) -> None:
        self._seen: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        if path not in self._seen:
            self._seen[path] = file_digest_of(path)
        return self._seen[path]


def _embed_gallery(embedder: Embedder, data: ComposedSet, prompts: PromptSet, keys: _Keys) -> np.ndarray:
    paths = list(data.gallery.values())
    return embedder.encode(paths, [content_key("image", image_digest=keys(p)) for p in paths], [str(p) for p in paths],
                           prompt=prompts, desc="gallery", kind="image")


def _embed_queries(embedder: Embedder, data: ComposedSet, texts: list[str], prompts: PromptSet, keys: _Keys,
                   desc: str) -> np.ndarray:
    files = {**data.references, **data.gallery}
    refs = [files[q.reference] for q in data.queries]
    items = [{"image": path, "text": text} for path, text in zip(refs, texts)]
    item_keys = [composed_key(keys(path), text) for path, text in zip(refs, texts)]
    labels = [f"query {i} ({q.reference!r} + {t[:40]!r})" for i, (q, t) in enumerate(zip(data.queries, texts))]
    return embedder.encode(items, item_keys, labels, prompt=prompts, desc=desc, kind="composed")


def subset_ranks(queries: np.ndarray, gallery: np.ndarray, data: ComposedSet) -> np.ndarray:
    """CIRR R_subset: rank of the target among the query's img_set members, reference removed."""
    index = {name: i for i, name in enumerate(data.gallery)}
    q, g = normalize(queries), normalize(gallery)
    ranks = np.empty(len(data.queries))
    for i, query in enumerate(data.queries):
        members = [index[m] for m in dict.fromkeys(query.members) if m != query.reference and m in index]
        target = index[query.target]
        if target not in members:
            members.append(target)
        scores = (q[i] @ g[members].T)[None, :]  # (1, M)
        ranks[i] = ranks_from_scores(scores, [[members.index(target)]])[0]
    return ranks


def run_cirr(embedder: Embedder, data: ComposedSet, original_spelling: bool = False) -> tuple[dict, dict, dict]:
    """(table, counts, prompts used) for CIRR val."""
    query_prompts, target_prompts = cirr_prompts(original_spelling)
    keys = _Keys()
    gallery = _embed_gallery(embedder, data, target_prompts, keys)
    queries = _embed_queries(embedder, data, [q.text for q in data.queries], query_prompts, keys, "queries")
    index = {name: i for i, name in enumerate(data.gallery)}
    ranks = retrieval_ranks(queries, gallery, [[index[q.target]] for q in data.queries],
                            exclude=[[index[q.reference]] for q in data.queries])
    row = recall_at_k(ranks, (1, 5, 10))
    if all(q.members for q in data.queries):
        row.update({k.replace("R@", "R_subset@"): v for k, v in recall_at_k(subset_ranks(queries, gallery, data),
                                                                          (1, 2, 3)).items()})
    used = {"query": embedder.effective_prompts(query_prompts).composed,
            "target": embedder.effective_prompts(target_prompts).image}
    return {data.name: row}, {"queries": len(data.queries), "gallery": len(data.gallery)}, used


def run_fashioniq(embedder: Embedder, data: ComposedSet, category: str) -> tuple[dict, dict, dict]:
    """(row, counts, prompts used) for one FashionIQ category."""
    prompts = fashioniq_category_prompts(category)
    keys = _Keys()
    gallery = _embed_gallery(embedder, data, prompts, keys)
    forward = _embed_queries(embedder, data, [q.texts[0] for q in data.queries], prompts, keys, "queries")
    backward = _embed_queries(embedder, data, [q.texts[1] for q in data.queries], prompts, keys, "queries (swapped)")
    index = {name: i for i, name in enumerate(data.gallery)}
    ranks = retrieval_ranks(forward + backward, gallery, [[index[q.target]] for q in data.queries])
    used = {"query": embedder.effective_prompts(prompts).composed, "target": embedder.effective_prompts(prompts).image}
    counts = {f"{category}_queries": len(data.queries), f"{category}_gallery": len(data.gallery)}
    return recall_at_k(ranks, (10, 50)), counts, used
