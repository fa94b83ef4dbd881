"""Qwen2-VL and Qwen2.5-VL: dynamic resolution (2x2-merged patches), 3-D M-RoPE positions.

The image placeholder is ``<|image_pad|>`` inside ``<|vision_start|>...<|vision_end|>``; the number of image
features follows the image size within the processor's min/max pixels (``min_image_pixels`` /
``max_image_pixels``); positions are computed by the backend from the token layout (``mrope``). With E5-V's
prompts by default (a Qwen2-VL fine-tuned for embeddings brings its own recipe as a family of its own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..prompts import QWEN2VL, ChatFormat
from .base import Family


class Qwen2VL(Family):
    name = "qwen2_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    architectures = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")
    torch_backend = "e5v.backends.qwen2vl_backend:Qwen2VLTorchBackend"
    image_modes = ("anyres",)  # dynamic resolution; size is controlled with min/max pixels
    image_token = "<|image_pad|>"
    geometry_key = "image_grid_thw"
    mrope = True

    def chat_format(self, config: Any) -> ChatFormat:
        return QWEN2VL

    def load_processors(self, path: Path, config: Any, tokenizer: Any, options: dict) -> tuple[Any, Any]:
        image_processor = load_qwen_image_processor(path, options.get("min_pixels"), options.get("max_pixels"))
        return image_processor, _build_qwen_processor(tokenizer, image_processor)

    def count_image_tokens(self, size: tuple[int, int], mode: str, components: Any) -> int:
        """Tokens after Qwen2-VL's smart resize within the processor's min/max pixels, merged 2x2."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        ip = components.image_processor
        merge = int(getattr(ip, "merge_size", 2))
        factor = int(getattr(ip, "patch_size", 14)) * merge
        bounds = getattr(ip, "size", None) or {}
        min_pixels = bounds.get("shortest_edge", getattr(ip, "min_pixels", 56 * 56))
        max_pixels = bounds.get("longest_edge", getattr(ip, "max_pixels", 28 * 28 * 1280))
        width, height = size
        h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        return (h // factor) * (w // factor)


def fetch_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) after ``qwen_vl_utils.smart_resize``: the resize that model cards built on Qwen-VL apply
    before their processor (``fetch_image``), both sides to multiples of ``factor`` within the pixel bounds."""
    import math

    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def load_qwen_image_processor(path: Path, min_pixels: int | None, max_pixels: int | None):
    """Qwen2-VL's image processor (PIL backend: no torchvision here) with optional pixel bounds."""
    try:
        from transformers import Qwen2VLImageProcessorPil as Processor
    except ImportError:  # transformers 4.x
        from transformers import Qwen2VLImageProcessor as Processor
    kwargs = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
    try:
        return Processor.from_pretrained(path, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the Qwen2-VL image processor in {path}: {exc}") from exc


def _build_qwen_processor(tokenizer, image_processor):
    """Qwen2VLProcessor for users who want it; None where it cannot be built (it insists on a video
    processor, which needs torchvision). e5v's own data path uses the tokenizer and image processor only."""
    try:
        from transformers import Qwen2VLProcessor

        return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer)
    except Exception:  # noqa: BLE001 - optional convenience object; nothing downstream depends on it
        return None
