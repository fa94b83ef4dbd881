"""PyTorch backend for Qwen2-VL / Qwen2.5-VL: the base model without its lm_head.

Loading, token embeddings and the language-model forward are the torch backend's. What differs lives here:
* image features come from Qwen's windowed ViT with 2x2 patch merging (dynamic resolution: the number
  of features follows the image size within the processor's min/max pixels);
* positions are 3-D (M-RoPE: temporal, height, width) for image tokens, computed from the token layout
  with transformers' own ``get_rope_index`` on the left-padded batch.
"""

from __future__ import annotations

from typing import Any

import torch

from .torch_backend import TorchBackend


class Qwen2VLTorchBackend(TorchBackend):
    """Qwen2-VL in PyTorch, base model only (``self.model`` is a Qwen2VLModel / Qwen2_5_VLModel)."""

    #: config.model_type -> the transformers class that reads the checkpoint (its architectures entry may name
    #: a model card's own class, e.g. JinaEmbeddingsV4Model or Qwen3VLForEmbedding, that transformers lacks)
    MODEL_CLASSES = {"qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
                     "qwen3_vl": "Qwen3VLForConditionalGeneration"}

    @classmethod
    def model_class(cls, components: Any) -> Any:
        import transformers

        return getattr(transformers, cls.MODEL_CLASSES[components.config.model_type])

    @torch.inference_mode()
    def image_features(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor, mode: str) -> list[torch.Tensor]:
        """``image_sizes`` is the (t, h, w) patch grid per image; features are (t*h*w/4, D) per image."""
        out = self.model.get_image_features(pixel_values.to(self.device, self.dtype), image_sizes.to(self.device))
        features = out.pooler_output if hasattr(out, "pooler_output") else out
        return list(features)

    @torch.inference_mode()
    def position_ids(self, input_ids: torch.Tensor, mask: torch.Tensor, image_mask: torch.Tensor,
                     image_sizes: torch.Tensor | None) -> torch.Tensor:
        """(3, B, L) M-RoPE positions; text-only batches use 1-D positions counted from each row's first token."""
        if image_sizes is None:
            return (mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, L); the text model expands it to 3 rows
        positions, _ = self.model.get_rope_index(
            input_ids, mm_token_type_ids=image_mask.to(torch.int), image_grid_thw=image_sizes,
            attention_mask=mask)
        return positions  # (3, B, L)
