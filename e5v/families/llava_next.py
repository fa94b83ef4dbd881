"""LLaVA-NeXT (E5-V: ``royokong/e5-v``, a Llama-3-8B LLaVA-NeXT; also Mistral and Phi-3 backbones).

Quirks handled here (DESIGN.md §2): the published processor files lack ``patch_size`` and
``num_additional_image_tokens`` (the processor then counts one image token per tile too few), so the
processor is rebuilt from the model config; the image processor's settings may live in
``preprocessor_config.json`` (transformers 4) or inside ``processor_config.json`` (transformers 5); the
``<image>`` id lies outside the text vocabulary (``batch.py`` never looks it up). The recipe: the chat format
of the backbone, E5-V's one-word prompts, the final-norm state of the last token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..prompts import LLAMA3, MISTRAL, PHI3, ChatFormat
from .base import Family


class LlavaNext(Family):
    name = "llava_next"
    model_types = ("llava_next",)
    architectures = ("LlavaNextForConditionalGeneration",)
    backends = ("torch", "openvino")
    image_modes = ("anyres", "base")
    trainable = True

    def chat_format(self, config: Any) -> ChatFormat:
        """Llama-3 (E5-V), Mistral (a 32k Llama-type vocabulary) or Phi-3, from the text config."""
        text_type = getattr(config.text_config, "model_type", "llama")
        vocab = int(getattr(config.text_config, "vocab_size", 0))
        if text_type == "mistral" or (text_type == "llama" and vocab == 32000):
            return MISTRAL
        if text_type == "phi3":
            return PHI3
        return LLAMA3

    def load_processors(self, path: Path, config: Any, tokenizer: Any, options: dict) -> tuple[Any, Any]:
        if options.get("min_pixels") is not None or options.get("max_pixels") is not None:
            raise ValueError("min_pixels/max_pixels apply to Qwen2-VL models; LLaVA-NeXT uses image_mode")
        image_processor = _load_image_processor(path)
        return image_processor, _build_processor(config, tokenizer, image_processor)

    def validate(self, c: Any) -> None:
        config = c.config
        ip_pinpoints = [list(p) for p in getattr(c.image_processor, "image_grid_pinpoints", []) or []]
        model_pinpoints = [list(p) for p in config.image_grid_pinpoints]
        if ip_pinpoints and ip_pinpoints != model_pinpoints:
            raise ModelLoadError(
                f"image processor grid pinpoints {ip_pinpoints} differ from the model's {model_pinpoints}")
        crop = getattr(c.image_processor, "crop_size", None)
        crop_h = crop.get("height") if isinstance(crop, dict) else getattr(crop, "height", None)
        if crop_h is not None and int(crop_h) != int(config.vision_config.image_size):
            raise ModelLoadError(f"image processor crop size {crop_h} differs from the vision tower's image size "
                                 f"{config.vision_config.image_size}")

    def count_image_tokens(self, size: tuple[int, int], mode: str, components: Any) -> int:
        from ..preprocess import anyres_feature_count

        vision = components.config.vision_config
        side = vision.image_size // vision.patch_size
        if mode == "base":
            return side * side
        width, height = size
        return anyres_feature_count(height, width, components.config.image_grid_pinpoints, vision.image_size,
                                    vision.patch_size)


def has_image_processor_config(path: Path) -> bool:
    """Either layout of the image processor's settings (DESIGN.md §2.9): ``preprocessor_config.json`` (the hub's
    e5-v, transformers 4.x) or an ``image_processor`` entry inside ``processor_config.json`` (what
    ``save_pretrained`` of transformers 5 writes, with no preprocessor_config.json at all)."""
    if (path / "preprocessor_config.json").is_file():
        return True
    try:
        nested = json.loads((path / "processor_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(nested, dict) and isinstance(nested.get("image_processor"), dict)


def _load_image_processor(path: Path):
    """The LLaVA-NeXT image processor; the PIL backend when torchvision is absent (CPU installs)."""
    from transformers import AutoImageProcessor

    if not has_image_processor_config(path):
        raise ModelLoadError(f"{path} has no image processor settings (neither preprocessor_config.json nor an "
                             "'image_processor' entry in processor_config.json)")
    try:
        return AutoImageProcessor.from_pretrained(path)
    except Exception:  # noqa: BLE001 - e.g. the torchvision-backed class without torchvision: try the PIL one
        pass
    try:
        from transformers import LlavaNextImageProcessorPil as PilProcessor  # transformers >= 5
    except ImportError:
        from transformers import LlavaNextImageProcessor as PilProcessor  # 4.x: PIL/numpy based
    try:
        return PilProcessor.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the image processor in {path}: {exc}") from exc


def _build_processor(config, tokenizer, image_processor):
    """A LlavaNextProcessor whose image-token counting matches the model (quirk 3 repaired)."""
    from transformers import LlavaNextProcessor

    vision = config.vision_config
    # CLIP prepends a CLS token (+1); SigLIP has none.
    extra = 0 if "siglip" in getattr(vision, "model_type", "") else 1
    return LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=int(vision.patch_size),
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=extra,
    )
