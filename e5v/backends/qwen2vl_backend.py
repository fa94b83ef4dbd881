"""PyTorch backend for Qwen2-VL / Qwen2.5-VL: the base model without its lm_head.

Differences from LLaVA-NeXT that live here, and only here:
* image features come from Qwen's windowed ViT with 2x2 patch merging (dynamic resolution: the number
  of features follows the image size within the processor's min/max pixels);
* positions are 3-D (M-RoPE: temporal, height, width) for image tokens, computed from the token layout
  with transformers' own ``get_rope_index`` on the left-padded batch.
"""

from __future__ import annotations

import gc
from typing import Any

import torch

from .torch_backend import _NAMES, _apply_lora, load_checked, resolve_device_dtype


class Qwen2VLTorchBackend:
    name = "torch"

    def __init__(self, model: Any, device: torch.device, dtype: torch.dtype):
        self.model = model  # transformers Qwen2VLModel / Qwen2_5_VLModel (visual + language_model)
        self.device = device
        self.dtype = dtype
        self.weights = _NAMES.get(dtype, str(dtype))

    @classmethod
    def load(cls, components: Any, *, device: str | None = None, dtype: str | torch.dtype | None = None,
             lora: str | None = None) -> "Qwen2VLTorchBackend":
        import transformers
        from transformers.utils import logging as hf_logging

        dev, dt = resolve_device_dtype(device, dtype)
        hf_logging.disable_progress_bar()
        arch = (getattr(components.config, "architectures", None) or ["Qwen2VLForConditionalGeneration"])[0]
        model_cls = getattr(transformers, arch, None) or transformers.Qwen2VLForConditionalGeneration
        full = load_checked(model_cls, components.path, dt)
        base = full.model
        full.lm_head = None
        del full
        gc.collect()
        if lora is not None:
            base = _apply_lora(base, lora)
        base.to(dev).eval()
        base.requires_grad_(False)
        return cls(base, dev, dt)

    @torch.inference_mode()
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids.to(self.device))  # (B, L) -> (B, L, D)

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

    @torch.inference_mode()
    def hidden_states(self, embeds: torch.Tensor, attention_mask: torch.Tensor,
                      position_ids: torch.Tensor) -> torch.Tensor:
        out = self.model.language_model(
            inputs_embeds=embeds.to(self.device, self.dtype),
            attention_mask=attention_mask.to(self.device),
            position_ids=position_ids.to(self.device),
            use_cache=False,
        )
        return out.last_hidden_state  # (B, L, D) after the final norm
