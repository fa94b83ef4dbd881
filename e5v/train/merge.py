"""Merge a LoRA adapter from ``e5v train`` into a full LLaVA-NeXT checkpoint (``e5v merge``).

Works tensor by tensor on the safetensors shards instead of loading the whole model: each targeted
language-model weight becomes ``W + (alpha / r) * B @ A`` (computed in fp32, stored in W's dtype);
every other tensor — vision tower, projector, embeddings, norms, lm_head — is copied unchanged under
its original key, into a shard of the same name, so the index file stays valid. Peak memory is one
shard, not the model (the real E5-V is 16 GB in bf16). The result loads with ``E5V.from_pretrained``
and with plain ``transformers``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

from ..errors import ModelLoadError
from ..loading import resolve_model_path
from ..checkpoint import checkpoint_files, lm_key

#: peft's key prefix for a LoRA on the bare language model (what ``e5v train`` saves).
ADAPTER_PREFIX = "base_model.model."


def merge_lora(model: str, lora: str | Path, output: str | Path) -> Path:
    """Write ``output``: the checkpoint ``model`` with adapter ``lora`` merged into its language model."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    base, _ = resolve_model_path(model)
    lora, output = Path(lora), Path(output)
    pairs, scale = _read_adapter(lora)
    if output.resolve() == base.resolve():
        raise ModelLoadError("--output must differ from the base model directory")
    if output.exists() and any(output.iterdir()):
        raise ModelLoadError(f"{output} exists and is not empty; choose a new --output directory")
    shards = checkpoint_files(base) or sorted(base.glob("*.safetensors"))
    if not shards:
        raise ModelLoadError(f"no .safetensors weights in {base} (e5v merge needs safetensors checkpoints)")
    output.mkdir(parents=True, exist_ok=True)
    merged: set[str] = set()
    for shard in shards:
        tensors = {}
        with safe_open(str(shard), framework="pt") as handle:
            metadata = handle.metadata() or {}
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                module = _lm_module(key)
                if module in pairs:
                    a, b = pairs[module]  # (r, in), (out, r)
                    if tensor.shape != (b.shape[0], a.shape[1]):
                        raise ModelLoadError(f"adapter for {module} has shape {tuple(b.shape)}x{tuple(a.shape)}, "
                                             f"the weight {key} is {tuple(tensor.shape)}: wrong base model?")
                    tensor = (tensor.float() + scale * (b.float() @ a.float())).to(tensor.dtype)  # (out, in)
                    merged.add(module)
                tensors[key] = tensor.contiguous()
        save_file(tensors, str(output / shard.name), metadata={**metadata, "format": "pt"})
    missing = sorted(set(pairs) - merged)
    if missing:
        shutil.rmtree(output, ignore_errors=True)
        raise ModelLoadError(f"the adapter targets {len(missing)} module(s) the base model lacks (e.g. {missing[:3]}); "
                             "was it trained on another model?")
    for item in base.iterdir():  # config, tokenizer, processor, index: everything but the weights
        if item.is_file() and item.suffix != ".safetensors" and not item.name.startswith("."):
            shutil.copy2(item, output / item.name)
    _write_record(output, model, lora, len(merged), scale)
    return output


def _lm_module(key: str) -> str | None:
    """``language_model.model.layers.0.self_attn.q_proj.weight`` -> ``layers.0.self_attn.q_proj``."""
    if not key.endswith(".weight"):
        return None
    inner = lm_key(key)
    return inner[:-len(".weight")] if inner is not None else None


def _read_adapter(lora: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """{module: (A, B)} and the LoRA scale; refuses adapter features a plain merge cannot express."""
    from safetensors.torch import load_file

    config_file, weights_file = lora / "adapter_config.json", lora / "adapter_model.safetensors"
    if not config_file.is_file() or not weights_file.is_file():
        raise ModelLoadError(f"{lora} is not a LoRA adapter directory (needs adapter_config.json and "
                             "adapter_model.safetensors)")
    config = json.loads(config_file.read_text())
    unsupported = [name for name in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save", "fan_in_fan_out")
                   if config.get(name)]
    if config.get("peft_type", "LORA") != "LORA" or unsupported:
        raise ModelLoadError(f"{lora}: cannot merge this adapter ({config.get('peft_type')}, {unsupported}); "
                             "e5v merge handles plain LoRA as written by `e5v train`")
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / (math.sqrt(r) if config.get("use_rslora") else r)
    weights = load_file(str(weights_file))
    pairs: dict[str, list] = {}
    for key, tensor in weights.items():
        if not key.startswith(ADAPTER_PREFIX) or not key.endswith((".lora_A.weight", ".lora_B.weight")):
            raise ModelLoadError(f"{lora}: unexpected adapter tensor {key!r} (not a LoRA on the language model)")
        module, which = key[len(ADAPTER_PREFIX):].rsplit(".lora_", 1)
        pairs.setdefault(module, [None, None])[0 if which.startswith("A") else 1] = tensor
    incomplete = [m for m, ab in pairs.items() if ab[0] is None or ab[1] is None]
    if incomplete:
        raise ModelLoadError(f"{lora}: adapter lacks lora_A or lora_B for {incomplete[:3]}")
    return {m: (ab[0], ab[1]) for m, ab in pairs.items()}, scale


def _write_record(output: Path, model: str, lora: Path, modules: int, scale: float) -> None:
    train_manifest = lora / "e5v_train_manifest.json"
    record = {
        "format": "e5v-merge/1",
        "base_model": str(model),
        "adapter": str(lora),
        "merged_modules": modules,
        "scale": scale,
        "train_manifest": json.loads(train_manifest.read_text()) if train_manifest.is_file() else None,
    }
    (output / "e5v_merge.json").write_text(json.dumps(record, indent=2))
