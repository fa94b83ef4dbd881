"""One chunk of inputs through the data path: items -> prompts -> tokens -> batches -> backend -> pooler -> head.

``E5V`` composes this; ``encode``, ``encode_with_details`` and ``encode_iter`` all run chunks through
``Pipeline.run``. Within a chunk, items are probed (headers only), tokenized, sorted by length and cut
into batches; each batch's images are decoded just before it runs and dropped after (docs/inputs.md), and
a batch that fails is retried item by item (``batch.run_isolated``). Rows come back in input order.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .batch import decode_batch, run_batch, run_isolated
from .errors import InputError
from .head import Head
from .inputs import ImageLimits, to_item
from .preprocess import Prepared, plan_batches, prepare
from .prompts import PromptSet


@dataclass
class EncodeResult:
    """Vectors plus what happened to each item (used by the store, server and Spark stage).

    vectors:      (N, D) float32, rows in input order; rows of failed items are NaN. For multi-vector
                  pooling ("tokens"): a list of (T_i, D) arrays, None for failed items.
    errors:       index -> message, for items that could not be embedded.
    token_counts: index -> sequence length fed to the model (image tokens included).
    offset:       position of this result's first item in the caller's whole input (``encode_iter``
                  chunks); indices in ``errors`` / ``token_counts`` are relative to this result's rows.
    """

    vectors: Any
    errors: dict[int, str] = field(default_factory=dict)
    token_counts: dict[int, int] = field(default_factory=dict)
    offset: int = 0


@dataclass(frozen=True)
class Request:
    """The per-call options of one encode call, resolved once."""

    prompts: PromptSet
    mode: str  # image mode
    pooler: Any
    head: Head
    batch_size: int
    raise_on_error: bool
    max_batch_tokens: int  # padded tokens per forward pass (``E5V.max_batch_tokens``)
    image_limits: ImageLimits


class Pipeline:
    """The model's components and backend, run on chunks of raw inputs."""

    def __init__(self, components: Any, backend: Any):
        self.components = components
        self.backend = backend

    def run(self, raw: list, request: Request, dim: int, progress: Any = None) -> EncodeResult:
        """Embed ``raw`` (one chunk); ``progress`` (a tqdm bar or None) is advanced per batch."""
        vectors: Any = [None] * len(raw) if request.pooler.multi_vector else np.full(
            (len(raw), dim), np.nan, dtype=np.float32)
        errors: dict[int, str] = {}
        prepared = self._prepare(raw, request, errors)
        for batch in plan_batches(prepared, request.batch_size, request.max_batch_tokens):
            self._run_batch(batch, vectors, request, errors)
            if progress is not None:
                progress.update(len(batch))
        if progress is not None and len(prepared) < len(raw):
            progress.update(len(raw) - len(prepared))  # items refused before batching count as done
        counts = {p.index: p.length for p in prepared if p.index not in errors}
        return EncodeResult(vectors=vectors, errors=errors, token_counts=counts)

    def _prepare(self, raw: list, request: Request, errors: dict[int, str]) -> list[Prepared]:
        """Items with prompts tokenized and images probed only (header checks; decoded per batch)."""
        c = self.components
        prepared = []
        for index, obj in enumerate(raw):
            try:
                item = to_item(obj, index, request.image_limits)
                if item.kind not in c.spec.kinds:
                    raise InputError(f"{c.spec.name} models embed {' or '.join(c.spec.kinds)} items, not {item.kind} "
                                     "ones (the model card's recipe has no prompt for them)", index)
                prepared += prepare([item], request.prompts, c.chat, c.tokenizer, c.image_token_id, c.max_length_for(item.kind),
                                    request.mode, c.count_image_tokens, [index])
            except InputError as exc:
                if request.raise_on_error:
                    raise
                errors[index] = exc.reason
        return prepared

    def _run_batch(self, batch: list[Prepared], vectors: Any, request: Request, errors: dict[int, str]) -> None:
        """Decode one batch's images, run it, write its rows; its decoded images die with this frame."""
        forward = functools.partial(self._forward, request=request)
        for part, pooled in run_isolated(decode_batch(batch, errors, request.raise_on_error, self.components.spec), forward, errors,
                                         request.raise_on_error):
            rows = request.head(pooled)  # (B, D) float32, or B x (T_b, D)
            if request.pooler.multi_vector:
                for p, tokens in zip(part, rows):
                    vectors[p.index] = tokens
            else:
                vectors[[p.index for p in part]] = rows

    def _forward(self, batch: list[Prepared], request: Request) -> Any:
        c = self.components
        hidden, mask, image_mask = run_batch(self.backend, batch, c, request.mode)
        return request.pooler(hidden, mask, image_mask)  # (B, D), or B x (T_b, D)


def progress_bar(show: bool | None, total: int | None, chunks: int | None):
    """A tqdm bar counting items, or None; shown by default on a terminal when there is more than one batch
    worth of work (``chunks`` > 1 or unknown)."""
    if show is None:
        show = sys.stderr.isatty() and (chunks is None or chunks > 1)
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="item", desc="embedding")
