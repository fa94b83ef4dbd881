"""InfoNCE over cosine similarities, as in SimCSE / the E5-V paper.

Each anchor must pick its own positive among all positives of the batch (in-batch negatives) and all
hard negatives of the batch. A low temperature (0.05) sharpens the softmax so that small cosine
differences still produce a useful gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor | None,
             temperature: float) -> torch.Tensor:
    """Mean cross-entropy of anchor i against candidates [positives; hard negatives], target i.

    Args:
        anchor, positive: (B, D) sentence embeddings (unnormalised).
        negative: (B, D) hard negatives, or None for pair data.
        temperature: divides the cosine similarities.
    """
    a = F.normalize(anchor, dim=-1)  # (B, D)
    candidates = positive if negative is None else torch.cat([positive, negative])  # (B or 2B, D)
    c = F.normalize(candidates, dim=-1)
    logits = a @ c.T / temperature  # (B, B) or (B, 2B)
    target = torch.arange(a.shape[0], device=a.device)  # (B,)
    return F.cross_entropy(logits, target)
