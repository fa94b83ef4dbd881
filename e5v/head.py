"""The head: the last stage of the data path, after the pooler (sentence-transformers' ``Normalize``).

Poolers return raw states in the backend's dtype; the head makes them what callers receive: float32 numpy,
L2-normalised unless asked not to. Single-vector poolers give one (B, D) tensor, multi-vector ones a list
of (T_i, D) tensors; both go through the same two steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Head:
    normalize: bool = True  # L2-normalise each vector (each token vector, for multi-vector poolers)

    def __call__(self, pooled: torch.Tensor | list[torch.Tensor]) -> np.ndarray | list[np.ndarray]:
        if isinstance(pooled, list):
            return [self._one(tokens) for tokens in pooled]  # B x (T_b, D)
        return self._one(pooled)  # (B, D)

    def _one(self, states: torch.Tensor) -> Any:
        states = states.float()
        if self.normalize:
            states = torch.nn.functional.normalize(states, dim=-1)
        return states.cpu().numpy()
