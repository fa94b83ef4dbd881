"""Find a model (local directory or Hugging Face id) and load its tokenizer and image processor, repaired.

What is common to every family lives here (finding the files, the config, the tokenizer with a pad token
and left padding, the image-token check); what differs (processor files and their repairs, chat format,
image-token counting) is asked of the model's family (``e5v.families``), chosen from its config.
"""

from __future__ import annotations

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
    chat: Any  # e5v.prompts.ChatFormat of the language model (its name is the config's "prompt_family")
    spec: Any = None  # e5v.families.Family: model family (architecture-specific knowledge)
    task: str | None = None  # the task adapter merged at load (families with ``tasks``), else None

    @property
    def family(self) -> str:
        """The chat format's name ("llama3", "qwen2vl", ...), as recorded in embedding configs."""
        return self.chat.name

    @property
    def image_token_id(self) -> int:
        """Id of the image placeholder token (LLaVA-NeXT's ``<image>``, Qwen2-VL's ``<|image_pad|>``)."""
        return int(self.config.image_token_id)

    def count_image_tokens(self, image, mode: str) -> int:
        """Estimated number of image features (from the image's size), used to sort batches by length."""
        return self.spec.count_image_tokens(tuple(image.size), mode, self)

    @property
    def max_length(self) -> int:
        """Longest sequence fed to the model, tokens of images included: the model's positions, or the family
        recipe's own limit when lower."""
        positions = int(getattr(self.config.text_config, "max_position_embeddings", 8192))
        limit = getattr(self.spec, "max_tokens", None)
        return min(positions, limit) if limit else positions

    def max_length_for(self, kind: str) -> int:
        """``max_length``, or the family recipe's lower limit for text-only items (VLM2Vec cuts them at 2048)."""
        limit = getattr(self.spec, "max_text_tokens", None) if kind == "text" else None
        return min(self.max_length, limit) if limit else self.max_length


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
    """Which chat format the language model expects, from its config (asked of its family)."""
    from .families import family_for

    return family_for(config).chat_format(config).name


def load_components(model: str | os.PathLike = DEFAULT_MODEL, revision: str | None = None, *,
                    min_pixels: int | None = None, max_pixels: int | None = None,
                    family: str | None = None, task: str | None = None) -> Components:
    """Resolve the model, read its config and load a repaired tokenizer, image processor and processor.

    ``min_pixels`` / ``max_pixels`` set Qwen2-VL's dynamic-resolution bounds (pixels per image after resizing).
    """
    from .families import family_for

    path, commit = resolve_model_path(model, revision)
    config = read_config(path)
    spec = family_for(config, path=path, name=family)
    task = spec.task_for(path, task)
    tokenizer = _load_tokenizer(path)
    image_processor, processor = spec.load_processors(path, config, tokenizer,
                                                      {"min_pixels": min_pixels, "max_pixels": max_pixels})
    components = Components(
        path=path,
        model_id=str(model),
        revision=commit,
        config=config,
        tokenizer=tokenizer,
        image_processor=image_processor,
        processor=processor,
        chat=spec.chat_format(config),
        spec=spec,
        task=task,
    )
    validate(components)
    return components


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


def validate(c: Components) -> None:
    """Processor and model must agree; raise a clear error where e5v cannot repair a disagreement."""
    token = c.spec.image_token
    token_id = c.tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == c.tokenizer.unk_token_id:
        raise ModelLoadError(f"the tokenizer has no {token!r} token; it does not belong to this model")
    if token_id != c.image_token_id:
        raise ModelLoadError(
            f"tokenizer's {token!r} id {token_id} differs from the model's image_token_index {c.image_token_id}"
        )
    c.spec.validate(c)
