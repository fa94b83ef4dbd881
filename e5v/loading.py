"""Find a model (local directory or Hugging Face id) and load its tokenizer and image processor, repaired.

E5-V's published processor files are incomplete for current transformers (DESIGN.md §2):
no ``patch_size`` and no ``num_additional_image_tokens`` (the processor then counts one image token per
tile too few), and no pad token. ``load_components`` fills these from the model config and validates
processor and model against each other, so users never patch anything by hand.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

DEFAULT_MODEL = "royokong/e5-v"


@dataclass
class Components:
    """Everything besides the weights that the encoder needs, loaded once."""

    path: Path  # local directory holding the files
    model_id: str  # what the user asked for (HF id or directory)
    revision: str | None  # resolved commit hash for hub downloads, else None
    config: Any  # transformers LlavaNextConfig
    tokenizer: Any  # fast tokenizer, pad token set, left padding
    image_processor: Any  # LlavaNextImageProcessor(Pil)
    processor: Any  # LlavaNextProcessor with patch_size/num_additional_image_tokens filled in
    family: str  # prompt family (see prompts.WRAPPERS)
    spec: Any = None  # e5v.families.Family: model family (architecture-specific knowledge)

    @property
    def image_token_id(self) -> int:
        """Id of the image placeholder token (LLaVA-NeXT's ``<image>``, Qwen2-VL's ``<|image_pad|>``)."""
        return int(self.config.image_token_id)

    def count_image_tokens(self, image, mode: str) -> int:
        """Estimated number of image features, used to sort batches by length."""
        return self.spec.count_image_tokens(image, mode, self)

    @property
    def max_length(self) -> int:
        """Longest sequence the language model accepts (positions), tokens of images included."""
        return int(getattr(self.config.text_config, "max_position_embeddings", 8192))


def resolve_model_path(model: str | os.PathLike, revision: str | None = None) -> tuple[Path, str | None]:
    """A local directory as is; otherwise a Hugging Face Hub snapshot (download or local cache).

    Raises ModelLoadError with instructions when the model is neither local nor reachable.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path, None
    if path.exists():
        raise ModelLoadError(f"{path} is a file; pass the model's directory or a Hugging Face model id")
    if os.sep in str(model) and str(model).count("/") > 1 or str(model).startswith((".", "~", "/")):
        raise ModelLoadError(f"model directory not found: {path}")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            repo_id=str(model),
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.xml", "*.bin.index.json"],
            etag_timeout=10,
        )
    except Exception as exc:  # network, auth, or missing repo: all end the same way for the user
        raise ModelLoadError(
            f"could not find model {str(model)!r}: it is not a local directory and could not be fetched from "
            f"the Hugging Face Hub ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "If you have a copy, pass its directory, e.g. E5V.from_pretrained('/models/e5-v') or "
            "`e5v embed --model /models/e5-v`; to fetch one on a machine with internet: "
            f"`huggingface-cli download {model} --local-dir /models/e5-v`."
        ) from None
    commit = Path(local).name if len(Path(local).name) == 40 else revision
    return Path(local), commit


def read_config(path: Path):
    """Load the model config; only supported families pass (see e5v.families)."""
    from transformers import AutoConfig

    from .families import family_for

    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} has no config.json; is it a model directory?")
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"cannot read the model config in {path}: {exc}") from exc
    family_for(config)
    return config


def prompt_family(config) -> str:
    """Which chat wrapper the language model expects, from its config (not guessed from names)."""
    if getattr(config, "model_type", "") in ("qwen2_vl", "qwen2_5_vl"):
        return "qwen2vl"
    text_type = getattr(config.text_config, "model_type", "llama")
    vocab = int(getattr(config.text_config, "vocab_size", 0))
    if text_type == "mistral" or (text_type == "llama" and vocab == 32000):
        return "mistral"
    if text_type in ("phi3",):
        return "phi3"
    return "llama3"


def load_components(model: str | os.PathLike = DEFAULT_MODEL, revision: str | None = None, *,
                    min_pixels: int | None = None, max_pixels: int | None = None) -> Components:
    """Resolve the model, read its config and load a repaired tokenizer, image processor and processor.

    ``min_pixels`` / ``max_pixels`` set Qwen2-VL's dynamic-resolution bounds (pixels per image after resizing).
    """
    from .families import family_for

    path, commit = resolve_model_path(model, revision)
    config = read_config(path)
    spec = family_for(config)
    tokenizer = _load_tokenizer(path)
    if spec.name == "qwen2_vl":
        image_processor = _load_qwen_image_processor(path, min_pixels, max_pixels)
        processor = _build_qwen_processor(tokenizer, image_processor)
    else:
        if min_pixels is not None or max_pixels is not None:
            raise ValueError("min_pixels/max_pixels apply to Qwen2-VL models; LLaVA-NeXT uses image_mode")
        image_processor = _load_image_processor(path)
        processor = _build_processor(config, tokenizer, image_processor)
    components = Components(
        path=path,
        model_id=str(model),
        revision=commit,
        config=config,
        tokenizer=tokenizer,
        image_processor=image_processor,
        processor=processor,
        family=prompt_family(config),
        spec=spec,
    )
    validate(components)
    return components


def _load_qwen_image_processor(path: Path, min_pixels: int | None, max_pixels: int | None):
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


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer in {path}: {exc}") from exc
    if tokenizer.pad_token is None:  # quirk: e5-v has none; any id works, padded positions are masked
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


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
    except Exception:
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


def validate(c: Components) -> None:
    """Processor and model must agree; raise a clear error where e5v cannot repair a disagreement."""
    config = c.config
    token = "<|image_pad|>" if c.spec is not None and c.spec.name == "qwen2_vl" else "<image>"
    token_id = c.tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == c.tokenizer.unk_token_id:
        raise ModelLoadError(f"the tokenizer has no {token!r} token; it does not belong to this model")
    if token_id != c.image_token_id:
        raise ModelLoadError(
            f"tokenizer's {token!r} id {token_id} differs from the model's image_token_index {c.image_token_id}"
        )
    if token != "<image>":
        return
    ip_pinpoints = [list(p) for p in getattr(c.image_processor, "image_grid_pinpoints", []) or []]
    model_pinpoints = [list(p) for p in config.image_grid_pinpoints]
    if ip_pinpoints and ip_pinpoints != model_pinpoints:
        raise ModelLoadError(
            f"image processor grid pinpoints {ip_pinpoints} differ from the model's {model_pinpoints}"
        )
    crop = getattr(c.image_processor, "crop_size", None)
    crop_h = crop.get("height") if isinstance(crop, dict) else getattr(crop, "height", None)
    if crop_h is not None and int(crop_h) != int(config.vision_config.image_size):
        raise ModelLoadError(
            f"image processor crop size {crop_h} differs from the vision tower's image size {config.vision_config.image_size}"
        )
