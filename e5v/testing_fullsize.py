"""A random checkpoint with E5-V's exact 8B shapes, written shard by shard (never the whole model in RAM).

``make_tiny_model`` builds the model in memory and calls ``save_pretrained``: fine for tests, impossible for
the real shapes on a 24 GB machine (8B parameters are 16 GB in bf16, 32 GB in fp32). This writer plans the
tensors from a meta-device model (no memory), then generates each tensor on its own and writes
``model-0000k-of-0000n.safetensors`` shards plus ``model.safetensors.index.json``, holding at most one
shard in memory. Keys use the layout ``royokong/e5-v`` was published with (transformers 4.x:
``language_model.model.*``, ``language_model.lm_head``, ``vision_tower.vision_model.*``), so loaders are
tested on the real key names.

Initialisation keeps activations finite through 32 bf16 layers: weights ~ N(0, 1/fan_in) (about HF's 0.02
at width 4096), residual output projections (o_proj, down_proj, out_proj, fc2) scaled by 1/sqrt(2 * layers),
norms at 1, biases at 0. Random weights, real shapes: speed and memory are the real model's, quality is not.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from .testing import SHAPES, _strip_processor_fields, _write_preprocessor_config, llava_next_config, make_tokenizer

#: Residual-branch output projections (scaled down so the residual stream dominates, as in trained models).
_RESIDUAL_OUT = ("o_proj", "down_proj", "out_proj", "fc2")


def checkpoint_key(name: str) -> str:
    """transformers-5 parameter name of LlavaNextForConditionalGeneration -> royokong/e5-v's saved name."""
    if name == "lm_head.weight":
        return "language_model.lm_head.weight"
    if name.startswith("model.language_model."):
        return "language_model.model." + name[len("model.language_model."):]
    if name.startswith("model.vision_tower.vision_model."):  # transformers versions that still nest
        return "vision_tower." + name[len("model.vision_tower."):]
    if name.startswith("model.vision_tower."):
        return "vision_tower.vision_model." + name[len("model.vision_tower."):]
    return name[len("model."):] if name.startswith("model.") else name


def _init_std(name: str, shape: tuple, layers: int) -> float | None:
    """Std of a normal init, or None for norms/biases (ones for norm weights, zeros for biases)."""
    if name.endswith(".bias"):
        return None
    if len(shape) < 2:
        if "embedding" in name:  # CLIP class embedding
            return 0.02
        if name.endswith("image_newline"):
            return shape[0] ** -0.5
        return None  # RMSNorm / LayerNorm weight
    if "embed" in name or "lm_head" in name:
        return 0.02
    fan_in = 1
    for size in shape[1:]:
        fan_in *= size
    std = fan_in ** -0.5
    if any(part in name for part in _RESIDUAL_OUT):
        std /= (2 * layers) ** 0.5
    return std


def _generate(name: str, shape: tuple, dtype, seed: int, layers: int):
    """One tensor, deterministic per (seed, name): the sharding never changes the weights."""
    import torch

    tensor = torch.empty(shape, dtype=dtype)
    std = _init_std(name, shape, layers)
    if std is None:
        return tensor.fill_(0.0 if name.endswith(".bias") else 1.0)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    return tensor.normal_(0.0, std, generator=generator)


def plan_shards(sizes: dict[str, int], shard_bytes: int) -> list[list[str]]:
    """Greedy split of tensors (in order) into shards of at most ``shard_bytes`` (a larger tensor gets its own)."""
    shards, current, used = [], [], 0
    for name, size in sizes.items():
        if current and used + size > shard_bytes:
            shards.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    if current:
        shards.append(current)
    return shards


def make_random_checkpoint(path: str | Path, *, text_layers: int = 32, vision_layers: int = 24,
                           vocab_size: int = 128256, dtype=None, seed: int = 0, shard_gb: float = 2.0,
                           shape: str = "e5v") -> Path:
    """Write a random LLaVA-NeXT checkpoint with E5-V's config and quirks, shard by shard; returns ``path``.

    Args:
        text_layers / vision_layers / vocab_size: E5-V's are 32 / 24 / 128256 (the defaults).
        dtype: torch dtype of the stored weights (default bfloat16, as published LLaVA-NeXT weights).
        seed: same seed, same weights, whatever ``shard_gb``.
        shard_gb: upper bound of a shard's tensor bytes (a single larger tensor gets a shard of its own).
        shape: "e5v" (real widths) or "tiny" (tests).

    Example:
        make_random_checkpoint("/tmp/e5v-8b-random")   # ~16 GB on disk, ~2 GB peak RAM
    """
    import torch
    from safetensors.torch import save_file
    from transformers import LlavaNextForConditionalGeneration

    dtype = dtype or torch.bfloat16
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(vocab_size, filler="vocab")  # Llama-3-like: 128k plain entries, few specials
    if tokenizer.convert_tokens_to_ids("<image>") != vocab_size:
        raise RuntimeError("quirk lost: the <image> id must equal the text vocabulary size")
    config = llava_next_config(SHAPES[shape], tokenizer, text_layers=text_layers, vision_layers=vision_layers)
    config.dtype = dtype  # recorded in config.json as the checkpoint's dtype, as published models do
    with torch.device("meta"):  # shapes only, nothing allocated
        meta = LlavaNextForConditionalGeneration(config)
    shapes = {checkpoint_key(k): tuple(v.shape) for k, v in meta.state_dict().items()}
    del meta
    itemsize = torch.empty((), dtype=dtype).element_size()
    sizes = {k: itemsize * _numel(s) for k, s in shapes.items()}
    shards = plan_shards(sizes, int(shard_gb * 1024 ** 3))
    weight_map = {}
    for index, names in enumerate(shards, start=1):
        filename = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        tensors = {n: _generate(n, shapes[n], dtype, seed, text_layers if "language_model" in n else vision_layers)
                   for n in names}
        save_file(tensors, path / filename, metadata={"format": "pt"})
        del tensors  # at most one shard in memory
        weight_map.update(dict.fromkeys(names, filename))
    index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    _write_preprocessor_config(path)
    _strip_processor_fields(path)
    return path


def _numel(shape: tuple) -> int:
    n = 1
    for size in shape:
        n *= size
    return n
