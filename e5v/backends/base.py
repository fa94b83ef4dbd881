"""The small interface every backend implements.

The encoder builds the language model's input embeddings itself (text token embeddings with image
features scattered in at the ``<image>`` positions), so a backend only runs three model parts:

    embed_tokens(ids)                      (B, L) int64  -> (B, L, D)
    image_features(pixel_values, sizes)    per image     -> list of (n_i, D)
    hidden_states(embeds, mask, positions) (B, L, D)     -> (B, L, D) final-norm hidden states

``image_sizes`` is the per-image geometry the family's image processor returns (LLaVA-NeXT: original
(H, W); Qwen2-VL: the (t, h, w) patch grid). A backend may also define
``position_ids(input_ids, mask, image_mask, image_sizes) -> positions`` when its positions depend on the
token layout (Qwen2-VL's 3-D M-RoPE); otherwise positions count real tokens from 0 on every row.

A backend whose language model also adds vision features inside its first layers (Qwen3-VL's DeepStack)
returns :class:`VisualFeatures` per image and takes ``deepstack=(visual_mask (B, L), [k x (N, D)])`` in
``hidden_states``; the batch assembles those per-layer features in the same order as the image tokens.

Keeping the image-token merge outside the backends is what makes every backend immune to the
out-of-vocabulary ``<image>`` id (DESIGN.md §2.2) and keeps batching/padding in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


@dataclass
class VisualFeatures:
    """One image's features and the features its language model adds at the image positions after each of its
    first ``len(layers)`` decoder layers (DeepStack)."""

    tokens: torch.Tensor  # (n, D): scattered into the input embeddings, like any family's image features
    layers: tuple[torch.Tensor, ...]  # k x (n, D)

    def __len__(self) -> int:
        return len(self.tokens)


class Backend(Protocol):
    name: str
    weights: str  # "fp32", "fp16", "bf16", "int8", "int4": recorded in embedding configs
    device: torch.device
    dtype: torch.dtype  # dtype of the embeddings the backend consumes and returns

    @classmethod
    def load(cls, components: Any, *, device: str | None = None, dtype: str | torch.dtype | None = None,
             lora: str | None = None) -> "Backend": ...

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor: ...

    def image_features(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor, mode: str) -> list[torch.Tensor]: ...

    def hidden_states(self, embeds: torch.Tensor, attention_mask: torch.Tensor,
                      position_ids: torch.Tensor) -> torch.Tensor: ...
