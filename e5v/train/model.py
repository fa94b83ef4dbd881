"""The trainable part: the checkpoint's language model alone, wrapped in LoRA, embedding sentences.

The paper trains on text only, so neither the vision tower nor the projector is loaded: the language
model is built from ``config.text_config`` and receives only the ``language_model`` tensors of the
safetensors files (both the current ``model.language_model.*`` and the e5-v era
``language_model.model.*`` key layouts). Sentences are embedded exactly as at inference: the same
rendered prompt tokenized in one piece (special tokens intact, DESIGN.md §3), left padding, position
ids restarting at each row's first real token, the final-norm state of the last token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoint import LM_PREFIXES, check_loading_info, checkpoint_files, lm_key
from ..errors import InputError, ModelLoadError, require
from ..loading import Components, load_components
from ..prompts import PromptSet, render, split_around_text

#: LoRA targets of the paper: every attention and MLP projection of the decoder.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_components_for_training(model: str) -> Components:
    """Tokenizer, config and prompt family; only LLaVA-NeXT checkpoints are trainable here."""
    components = load_components(model)
    if not components.spec.trainable:
        raise ModelLoadError(f"e5v train supports LLaVA-NeXT checkpoints (like royokong/e5-v), not "
                             f"{components.config.model_type!r}")
    return components


def load_language_model(path: str | Path, config: Any, dtype: torch.dtype = torch.float32):
    """The decoder stack (no lm_head) from the checkpoint's language-model tensors only."""
    from safetensors import safe_open
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    state: dict[str, torch.Tensor] = {}
    for file in _weight_files(Path(path)):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                inner = lm_key(key)
                if inner is not None:  # cast on read: a bf16 run never holds an fp32 copy of the weights
                    state[inner] = handle.get_tensor(key).to(dtype)
    if not state:
        raise ModelLoadError(f"no language-model tensors (prefixes {LM_PREFIXES}) in the checkpoint at {path}")
    model_cls = MODEL_MAPPING[type(config.text_config)]
    try:
        model, info = model_cls.from_pretrained(None, config=config.text_config, state_dict=state, dtype=dtype,
                                                output_loading_info=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot build the language model from {path}: {exc}") from exc
    check_loading_info(info, path, "language model")
    model.config._name_or_path = str(path)  # recorded by peft as the adapter's base_model_name_or_path
    model.name_or_path = str(path)
    return model


def _weight_files(path: Path) -> list[Path]:
    files = checkpoint_files(path) or sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no .safetensors weights in {path} (training needs safetensors checkpoints)")
    return files


def add_lora(model: Any, r: int, alpha: int, dropout: float, gradient_checkpointing: bool = True):
    """Wrap the decoder with peft LoRA on q,k,v,o,gate,up,down; only the adapters train."""
    peft = require("peft", "train")
    if gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen embeddings (no enable_input_require_grads hack).
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS,
                             bias="none")
    return peft.get_peft_model(model, config)


class PromptTokenizer:
    """Sentence -> token ids of the inference text prompt, the sentence cut to ``max_length`` tokens.

    The full prompt is tokenized in one piece, as ``e5v.preprocess`` does at inference, so an
    untruncated sentence gets exactly the inference ids. Truncation drops the sentence's own tokens
    from its end, keeping the template (and the last token, whose state is the embedding) intact.
    """

    def __init__(self, tokenizer: Any, prompts: PromptSet, family: str, max_length: int, image_token_id: int):
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.family = family
        self.max_length = max_length
        self.image_token_id = image_token_id
        self.slot_start = len(split_around_text("text", prompts, family)[0])

    def __call__(self, sentences: list[str], lines: list[int] | None = None) -> list[list[int]]:
        prompts = [render("text", self.prompts, self.family, text=s) for s in sentences]
        encoded = self.tokenizer(prompts, add_special_tokens=True, return_offsets_mapping=True)
        out = []
        for i, (ids, offsets) in enumerate(zip(encoded["input_ids"], encoded["offset_mapping"])):
            if self.image_token_id in ids:
                where = f"line {lines[i]}" if lines else f"sentence {i}"
                raise InputError(f"{where}: text must not contain the image token {sentences[i][:40]!r}...")
            end = self.slot_start + len(sentences[i])
            inside = [j for j, (a, b) in enumerate(offsets) if a >= self.slot_start and b <= end and b > a]
            drop = set(inside[self.max_length:])
            out.append([t for j, t in enumerate(ids) if j not in drop] if drop else list(ids))
        return out


def collate(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad id rows; positions restart at 0 on each row's first real token (as e5v.batch.left_pad)."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)  # (B, L)
    mask = torch.zeros((len(rows), length), dtype=torch.long)  # (B, L)
    for b, row in enumerate(rows):
        ids[b, length - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[b, length - len(row):] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, L)
    return ids, mask, positions


def embed(model: Any, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, L) ids -> (B, D) final-norm state of each row's last token (unnormalised)."""
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
    return out.last_hidden_state[:, -1].float()  # (B, D)
