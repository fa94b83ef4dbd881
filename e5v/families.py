"""Model families: what differs between multimodal LLMs, chosen from the model config, never guessed.

A family says which architectures it covers, which chat wrapper its prompts use, how many tokens an
image becomes (to sort batches by length), which torch backend runs it, and which backends exist for it.
Everything else (inputs, prompts, batching, pooling) is shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from PIL import Image


@dataclass(frozen=True)
class Family:
    name: str  # registry key
    model_types: tuple[str, ...]  # config.model_type values this family covers
    architectures: tuple[str, ...]  # for error messages and validation
    torch_backend: str  # "module:Class"
    backends: tuple[str, ...]  # backend names that support this family
    image_modes: tuple[str, ...]  # accepted image_mode values
    count_image_tokens: Callable[[Image.Image, str, Any], int]  # (image, mode, components) -> estimated features


def _llava_next_tokens(image: Image.Image, mode: str, components: Any) -> int:
    from .preprocess import anyres_feature_count

    vision = components.config.vision_config
    side = vision.image_size // vision.patch_size
    if mode == "base":
        return side * side
    width, height = image.size
    return anyres_feature_count(height, width, components.config.image_grid_pinpoints, vision.image_size,
                                vision.patch_size)


def _qwen2vl_tokens(image: Image.Image, mode: str, components: Any) -> int:
    """Tokens after Qwen2-VL's smart resize within the processor's min/max pixels, merged 2x2."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    ip = components.image_processor
    merge = int(getattr(ip, "merge_size", 2))
    factor = int(getattr(ip, "patch_size", 14)) * merge
    size = getattr(ip, "size", None) or {}
    min_pixels = size.get("shortest_edge", getattr(ip, "min_pixels", 56 * 56))
    max_pixels = size.get("longest_edge", getattr(ip, "max_pixels", 28 * 28 * 1280))
    width, height = image.size
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return (h // factor) * (w // factor)


FAMILIES: dict[str, Family] = {
    "llava_next": Family(
        name="llava_next",
        model_types=("llava_next",),
        architectures=("LlavaNextForConditionalGeneration",),
        torch_backend="e5v.backends.torch_backend:TorchBackend",
        backends=("torch", "openvino"),
        image_modes=("anyres", "base"),
        count_image_tokens=_llava_next_tokens,
    ),
    "qwen2_vl": Family(
        name="qwen2_vl",
        model_types=("qwen2_vl", "qwen2_5_vl"),
        architectures=("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"),
        torch_backend="e5v.backends.qwen2vl_backend:Qwen2VLTorchBackend",
        backends=("torch",),
        image_modes=("anyres",),  # dynamic resolution; size is controlled with min_pixels / max_pixels
        count_image_tokens=_qwen2vl_tokens,
    ),
}


def family_for(config: Any) -> Family:
    """The family of a model config; unsupported architectures get an error listing the supported ones."""
    from .errors import ModelLoadError

    model_type = getattr(config, "model_type", None)
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    supported = ", ".join(a for f in FAMILIES.values() for a in f.architectures)
    architectures = ", ".join(getattr(config, "architectures", None) or []) or "no architecture"
    raise ModelLoadError(f"unsupported model: {model_type} ({architectures}); e5v supports: {supported}")
