"""Poolers turn final hidden states into vectors. Normalising is not a pooler's job (the encoder's head does it).

Each strategy is a tiny class behind a string name; ``get_pooler`` is the only factory.

    last         E5-V's pooling: the state of the last real token (default)
    mean         masked mean over all real tokens
    vision_mean  mean over the image-feature positions; text-only items fall back to ``mean``
                 (vLLM's Jina-v4 convention)
    tokens       one vector per real token (multi-vector / late interaction); score with ``maxsim``

All take ``hidden (B, L, D)``, ``mask (B, L)`` and ``image_mask (B, L)``; single-vector poolers return
``(B, D)``, ``tokens`` returns a list of ``(T_i, D)`` tensors.
"""

from __future__ import annotations

from typing import Literal

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where a pooler runs, so the CLI can list poolers without it
    import torch

PoolingName = Literal["last", "mean", "vision_mean", "tokens"]


class LastTokenPooler:
    """The hidden state of the last real (non-pad) token, whatever the padding side."""

    name = "last"
    multi_vector = False

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor, image_mask: torch.Tensor | None = None) -> torch.Tensor:
        import torch

        length = mask.shape[1]
        last = length - 1 - mask.flip(dims=[1]).to(torch.long).argmax(dim=1)  # (B,) index of the last 1
        return hidden[torch.arange(hidden.shape[0]), last.to(hidden.device)]  # (B, D)


class MeanPooler:
    """Masked mean over real tokens (pads excluded)."""

    name = "mean"
    multi_vector = False

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor, image_mask: torch.Tensor | None = None) -> torch.Tensor:
        weights = mask.to(hidden.device, hidden.dtype).unsqueeze(-1)  # (B, L, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)  # (B, D)


class VisionMeanPooler:
    """Mean over image-feature positions; rows without an image use the masked mean over all tokens."""

    name = "vision_mean"
    multi_vector = False

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor, image_mask: torch.Tensor | None = None) -> torch.Tensor:
        import torch

        fallback = MeanPooler()(hidden, mask)  # (B, D)
        if image_mask is None:
            return fallback
        weights = image_mask.to(hidden.device, hidden.dtype).unsqueeze(-1)  # (B, L, 1)
        count = weights.sum(dim=1)  # (B, 1)
        vision = (hidden * weights).sum(dim=1) / count.clamp(min=1)  # (B, D)
        return torch.where(count > 0, vision, fallback)


class TokensPooler:
    """Every real token's state: a (T_i, D) matrix per item, for late-interaction retrieval."""

    name = "tokens"
    multi_vector = True

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor, image_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        import torch

        keep = mask.to(torch.bool).to(hidden.device)  # (B, L)
        return [hidden[b][keep[b]] for b in range(hidden.shape[0])]  # B x (T_b, D)


POOLERS = {cls.name: cls for cls in (LastTokenPooler, MeanPooler, VisionMeanPooler, TokensPooler)}


def get_pooler(name: str):
    """The pooler registered under ``name``; an unknown name lists the valid ones."""
    try:
        return POOLERS[name]()
    except KeyError:
        raise ValueError(f"unknown pooling {name!r}; choose one of {sorted(POOLERS)}") from None


def maxsim(query_tokens: np.ndarray, doc_tokens: np.ndarray) -> float:
    """Late-interaction score (ColBERT): for each query token the best cosine over document tokens, summed.

    Inputs are (Tq, D) and (Td, D); rows are normalised here, so raw or normalised vectors both work.
    """
    q = np.asarray(query_tokens, dtype=np.float32)
    d = np.asarray(doc_tokens, dtype=np.float32)
    if q.ndim != 2 or d.ndim != 2 or q.shape[1] != d.shape[1]:
        raise ValueError(f"maxsim needs (Tq, D) and (Td, D) matrices, got {q.shape} and {d.shape}")
    if len(q) == 0 or len(d) == 0:
        raise ValueError("maxsim needs at least one query token and one document token")
    q = q / np.clip(np.linalg.norm(q, axis=1, keepdims=True), 1e-12, None)
    d = d / np.clip(np.linalg.norm(d, axis=1, keepdims=True), 1e-12, None)
    return float((q @ d.T).max(axis=1).sum())
