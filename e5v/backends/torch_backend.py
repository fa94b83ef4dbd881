"""PyTorch backend: the Hugging Face LLaVA-NeXT base model without its lm_head.

Runs only what an embedding needs (DESIGN.md §2.5): no lm_head (its logits are B x L x 128k floats),
no ``output_hidden_states`` (every layer's states kept), no KV cache. The CPU dtype comes from the route table
(``routes.py``: bf16 where the CPU has native bf16, fp32 elsewhere, where bf16 GEMMs are several times slower);
CUDA defaults to fp16 as the model card does (plain torch, untested here: no GPU).
"""

from __future__ import annotations

import gc
from typing import Any

import torch

from .narrowing import load_narrowed
from ..errors import ModelLoadError

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def resolve_device_dtype(device: str | None, dtype: str | torch.dtype | None) -> tuple[torch.device, torch.dtype]:
    """CPU: the route table's dtype (``routes.default_cpu_dtype``: bf16 on CPUs with native bf16, else fp32)
    unless told otherwise; CUDA fp16 by default."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None or (isinstance(dtype, str) and dtype.lower() == "auto"):
        if dev.type == "cuda":
            return dev, torch.float16
        from .routes import default_cpu_dtype

        dtype = default_cpu_dtype().dtype
    if isinstance(dtype, torch.dtype):
        return dev, dtype
    try:
        return dev, _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPES) + ['auto']}") from None


class TorchBackend:
    """LLaVA-NeXT in PyTorch, base model only."""

    name = "torch"

    def __init__(self, model: Any, device: torch.device, dtype: torch.dtype):
        self.model = model  # transformers LlavaNextModel (vision tower, projector, language model)
        self.device = device
        self.dtype = dtype
        self.weights = _NAMES.get(dtype, str(dtype))
        self.route = f"torch {self.weights}"  # what was chosen and why (set by load)

    @staticmethod
    def model_class(components: Any) -> Any:
        """The transformers class of the full checkpoint (subclasses for other families override this)."""
        from transformers import LlavaNextForConditionalGeneration

        return LlavaNextForConditionalGeneration

    @classmethod
    def load(cls, components: Any, *, device: str | None = None, dtype: str | torch.dtype | None = None,
             lora: str | None = None, max_memory: str | int | None = None) -> "TorchBackend":
        from transformers.utils import logging as hf_logging

        auto = dtype is None or (isinstance(dtype, str) and dtype.lower() == "auto")
        dev, dt = resolve_device_dtype(device, dtype)
        route = "torch " + _NAMES.get(dt, str(dt))
        if dev.type == "cpu":
            dt, route = fitting_dtype(components, dt, explicit=not auto, max_memory=max_memory)
            if auto:
                from .routes import default_cpu_dtype

                route += f"; {default_cpu_dtype().reason}"
        hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars drown CLI output
        # narrower than stored: converted in bounded slices, never holding the wide copy (narrowing.py); the
        # family's weight step (e.g. merging a task adapter) runs before, at the stored precision
        full = load_narrowed(cls.model_class(components), components.path, dt,
                             adapt=lambda model: components.spec.adapt_weights(model, components))
        base = full.model
        full.lm_head = None  # drop the head explicitly: an embedding model never needs logits
        del full
        gc.collect()
        if lora is not None:
            base = _apply_lora(base, lora)
        base.to(dev).eval()
        base.requires_grad_(False)
        if dev.type == "cpu" and dt in (torch.float32, torch.bfloat16) and lora is None:
            from ..checkpoint import checkpoint_files
            from .onednn_linear import pack_linears, wanted

            pack, why = wanted(dt)
            if pack and pack_linears(base, checkpoint_files(components.path)):
                route += f"; {why}"
        backend = cls(base, dev, dt)
        backend.route = route
        return backend

    @property
    def config(self):
        return self.model.config

    @torch.inference_mode()
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        # (B, L) -> (B, L, D)
        return self.model.get_input_embeddings()(ids.to(self.device))

    @torch.inference_mode()
    def image_features(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor, mode: str) -> list[torch.Tensor]:
        """Projected image features per image: anyres (transformers' own packing) or the base view only."""
        pixel_values = pixel_values.to(self.device, self.dtype)
        if mode == "base":
            return self._base_view_features(pixel_values)
        out = self.model.get_image_features(pixel_values, image_sizes.to(self.device))
        features = out.pooler_output if hasattr(out, "pooler_output") else out  # transformers 5 / 4.x
        return list(features)

    def _base_view_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """576 features per image from the 336 px base view (no tiles, no newline tokens)."""
        config = self.model.config
        views = pixel_values[:, 0]  # (N, 3, 336, 336): the first view is the whole image resized
        states = self.model.vision_tower(views, output_hidden_states=True).hidden_states
        selected = states[config.vision_feature_layer]  # (N, 1 + 576, Dv)
        if config.vision_feature_select_strategy == "default":
            selected = selected[:, 1:]  # drop CLS -> (N, 576, Dv)
        projected = self.model.multi_modal_projector(selected)  # (N, 576, D)
        return list(projected)

    @torch.inference_mode()
    def hidden_states(self, embeds: torch.Tensor, attention_mask: torch.Tensor,
                      position_ids: torch.Tensor) -> torch.Tensor:
        # (B, L, D) -> (B, L, D): output of the final RMSNorm, as hidden_states[-1] of the full model
        out = self.model.language_model(
            inputs_embeds=embeds.to(self.device, self.dtype),
            attention_mask=attention_mask.to(self.device),
            position_ids=position_ids.to(self.device),
            use_cache=False,
        )
        return out.last_hidden_state


def fitting_dtype(components: Any, dtype: torch.dtype, *, explicit: bool,
                  max_memory: str | int | None) -> tuple[torch.dtype, str]:
    """The CPU dtype to load in, checked against the memory budget before any weight is read.

    An explicit dtype that does not fit is refused with the routes that would; the default (fp32) falls back
    to bf16 when only bf16 fits (with a warning: bf16 differs from fp32 in the 4th decimal of the cosine and is
    several times slower on CPUs without native bf16), so the default never ends in an out-of-memory kill.
    """
    from ..preprocess import MAX_BATCH_TOKENS
    from .memory import check_fits, estimate_torch, gb, memory_budget

    budget = memory_budget(max_memory)
    hidden = int(components.config.text_config.hidden_size)
    estimates = {dt: estimate_torch(components.path, dt, hidden, MAX_BATCH_TOKENS)
                 for dt in (torch.float32, torch.bfloat16)}
    chosen = estimates.get(dtype) or estimate_torch(components.path, dtype, hidden, MAX_BATCH_TOKENS)
    if chosen is None or budget is None:
        return dtype, f"torch {_NAMES.get(dtype, dtype)} (memory not checked: no safetensors headers or no budget)"
    note = f"estimated peak {gb(chosen.peak)} of {gb(budget)} available"
    if chosen.peak <= budget:
        return dtype, f"torch {_NAMES.get(dtype, dtype)} ({note})"
    narrow = estimates[torch.bfloat16]
    if not explicit and dtype == torch.float32 and narrow is not None and narrow.peak <= budget:
        import warnings

        warnings.warn(f"fp32 would need about {gb(chosen.peak)} but {gb(budget)} is available: loading in bf16 "
                      f"(about {gb(narrow.peak)}; cosines vs fp32 ~0.9999). Pass dtype='fp32' with more memory for "
                      "fp32-exact vectors, or use an `e5v export` for less memory", RuntimeWarning, stacklevel=4)
        return torch.bfloat16, (f"torch bf16 (fp32 needs {gb(chosen.peak)}, over the {gb(budget)} available; "
                                f"bf16 estimated {gb(narrow.peak)})")
    alternatives = {f"torch {_NAMES[dt]}": e.peak for dt, e in estimates.items() if e is not None and dt != dtype}
    check_fits(chosen, budget, alternatives, components.model_id)
    return dtype, f"torch {_NAMES.get(dtype, dtype)} ({note})"


def _apply_lora(base: Any, lora: str) -> Any:
    """Apply a peft LoRA adapter (trained by ``e5v train``) to the language model for inference."""
    from ..errors import require

    peft = require("peft", "train")
    try:
        wrapped = peft.PeftModel.from_pretrained(base.language_model, str(lora))
    except Exception as exc:
        raise ModelLoadError(f"cannot load the LoRA adapter in {lora}: {exc}") from exc
    base.language_model = wrapped.merge_and_unload()
    return base
