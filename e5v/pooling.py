"""Poolers turn final hidden states into one vector per item. Normalising is not a pooler's job.

Each strategy is a tiny class behind a string name; ``get_pooler`` is the only factory.
"""

from __future__ import annotations

from typing import Literal

import torch

PoolingName = Literal["last"]


class LastTokenPooler:
    """E5-V's pooling: the hidden state of the last real (non-pad) token."""

    name = "last"

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor, image_mask: torch.Tensor | None = None) -> torch.Tensor:
        # hidden (B, L, D), mask (B, L) -> (B, D). Index of the last 1 in each mask row, any padding side.
        length = mask.shape[1]
        last = length - 1 - mask.flip(dims=[1]).to(torch.long).argmax(dim=1)  # (B,)
        return hidden[torch.arange(hidden.shape[0]), last.to(hidden.device)]


POOLERS = {"last": LastTokenPooler}


def get_pooler(name: str):
    try:
        return POOLERS[name]()
    except KeyError:
        raise ValueError(f"unknown pooling {name!r}; choose one of {sorted(POOLERS)}") from None
