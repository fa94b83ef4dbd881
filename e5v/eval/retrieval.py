"""Image-text retrieval (COCO / Flickr30K Karpathy test, or any JSONL): text->image and image->text R@1/5/10.

Protocol (paper, DESIGN.md §4): captions embedded with the text prompt, images with the image prompt,
scores = cosine(caption, image). text->image: each caption's one correct image. image->text: an image
is a hit at k if *any* of its captions is in the top k. Ties: see ``metrics`` (pessimistic).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .cache import Embedder, file_key, text_key
from .datasets import RetrievalSet
from .metrics import recall_at_k, retrieval_ranks

KS = (1, 5, 10)


def score_retrieval(caption_vecs: np.ndarray, image_vecs: np.ndarray, caption_image: Sequence[int],
                    query_name: str = "text") -> dict[str, dict[str, float]]:
    """Both directions' Recall@1/5/10 from embeddings; ``caption_image[j]`` is caption j's image."""
    owners = np.asarray(caption_image)
    t2i = retrieval_ranks(caption_vecs, image_vecs, [[int(o)] for o in owners])
    per_image = [np.flatnonzero(owners == i).tolist() for i in range(len(image_vecs))]
    i2t = retrieval_ranks(image_vecs, caption_vecs, per_image)
    return {f"{query_name}->image": recall_at_k(t2i, KS), f"image->{query_name}": recall_at_k(i2t, KS)}


def embed_images(embedder: Embedder, images: Sequence, desc: str = "images") -> np.ndarray:
    """Embed image files with the model's image prompt (keyed by file content)."""
    return embedder.encode(list(images), [file_key(p) for p in images], [str(p) for p in images], desc=desc,
                            kind="image")


def run_retrieval(embedder: Embedder, data: RetrievalSet) -> tuple[dict, dict]:
    """(table, counts) for image-text retrieval on ``data``."""
    captions = embedder.encode(data.captions, [text_key(c) for c in data.captions],
                               [f"caption {i}: {c[:40]!r}" for i, c in enumerate(data.captions)], desc="captions",
                               kind="text")
    images = embed_images(embedder, data.images)
    table = score_retrieval(captions, images, data.caption_image)
    return table, {"images": len(data.images), "captions": len(data.captions)}
