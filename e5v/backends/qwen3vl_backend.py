"""PyTorch backend for Qwen3-VL: Qwen2-VL's data path plus DeepStack.

Qwen3-VL's vision tower returns, besides the merged image features, features from a few of its intermediate
layers; the language model adds them to the hidden states at the image positions after each of its first
decoder layers (``deepstack_visual_embeds``). So ``image_features`` returns ``VisualFeatures`` (tokens and
those per-layer features) and ``hidden_states`` takes them back with the image-position mask; M-RoPE
positions come from Qwen3-VL's own ``get_rope_index`` (inherited call).
"""

from __future__ import annotations

import torch

from .base import VisualFeatures
from .qwen2vl_backend import Qwen2VLTorchBackend


class Qwen3VLTorchBackend(Qwen2VLTorchBackend):
    """Qwen3-VL in PyTorch, base model only (``self.model`` is a Qwen3VLModel)."""

    @torch.inference_mode()
    def image_features(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor, mode: str) -> list[VisualFeatures]:
        """Per image: (n, D) features and k x (n, D) DeepStack features (n = t*h*w/4 of its patch grid)."""
        out = self.model.get_image_features(pixel_values.to(self.device, self.dtype), image_sizes.to(self.device))
        layers = out.deepstack_features  # k x (per-image tuple)
        return [VisualFeatures(tokens, tuple(layer[i] for layer in layers))
                for i, tokens in enumerate(out.pooler_output)]

    @torch.inference_mode()
    def hidden_states(self, embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                      deepstack: tuple[torch.Tensor, list[torch.Tensor]] | None = None) -> torch.Tensor:
        """Final-norm states; ``deepstack`` = (image-position mask (B, L), k x (N, D) in row-major order)."""
        extra = {}
        if deepstack is not None:
            mask, layers = deepstack
            extra = {"visual_pos_masks": mask.to(self.device),
                     "deepstack_visual_embeds": [layer.to(self.device, self.dtype) for layer in layers]}
        out = self.model.language_model(
            inputs_embeds=embeds.to(self.device, self.dtype), attention_mask=attention_mask.to(self.device),
            position_ids=position_ids.to(self.device), use_cache=False, **extra)
        return out.last_hidden_state
