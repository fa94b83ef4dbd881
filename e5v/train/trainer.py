"""The training loop of the paper's text-only recipe (DESIGN.md §3), sized for one machine.

Reads the data, embeds anchor/positive/hard-negative sentences with the LoRA-wrapped language model
under the inference text prompt, and minimises InfoNCE with AdamW, linear warm-up/decay and gradient
clipping. The data order is a pure function of (seed, epoch), so a resumed run replays exactly the
batches the interrupted one would have seen. Multi-GPU runs go through ``accelerate launch`` (see
docs/training.md); this loop itself is single-process.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import E5VError
from ..prompts import render, resolve_prompts
from . import checkpoint as ckpt
from .config import TrainConfig
from .data import Example, file_digest, read_examples, resolve_columns
from .distributed import Dist, setup
from .loss import info_nce
from .model import PromptTokenizer, add_lora, collate, embed, load_components_for_training, load_language_model

MANIFEST = "e5v_train_manifest.json"
LOG = "train_log.jsonl"


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total`` (step is 0-based)."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def train(config: TrainConfig, on_step: Callable[[int, float], None] | None = None) -> dict:
    """Run (or resume) training; returns the manifest written next to the adapter.

    ``on_step(step, loss)`` is called after every optimizer step (and its checkpoint, if any).
    """
    config.validate()
    output = Path(config.output)
    dist = setup(config.device)
    torch.manual_seed(config.seed)  # same LoRA init on every rank
    columns = resolve_columns(config.data, config.anchor_column, config.positive_column, config.negative_column,
                              config.negative_column_given)
    examples = read_examples(config.data, columns)
    triplets = columns.negative is not None
    if not triplets and min(config.batch_size, len(examples)) < 2:
        raise ValueError("pair data needs a batch of at least 2 (the other positives are the negatives)")
    if min(config.batch_size, len(examples)) % dist.world:
        raise ValueError(f"the batch size ({min(config.batch_size, len(examples))}) must be a multiple of the "
                         f"number of processes ({dist.world})")
    components = load_components_for_training(config.model)
    prompts = resolve_prompts(None, config.instruction)
    tokenize = PromptTokenizer(components.tokenizer, prompts, components.chat, config.max_length,
                               components.image_token_id)
    ids = _tokenize_all(tokenize, examples, triplets)
    pad_id = int(components.tokenizer.pad_token_id)

    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32
    model = add_lora(load_language_model(components.path, components.config, dtype), config.lora_r,
                     config.lora_alpha, config.lora_dropout, config.gradient_checkpointing).to(dist.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    batch = min(config.batch_size, len(examples))
    micro_per_epoch = len(examples) // batch
    steps_per_epoch = max(1, micro_per_epoch // config.grad_accum)
    total = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    data_info = {"path": str(config.data), "sha256": file_digest(config.data), "rows": len(examples),
                 "triplets": triplets}
    run_state = {"hyperparameters": config.hyperparameters(), "data": data_info, "total_steps": total}
    start, last_loss = _resume(config, model, optimizer, run_state) if config.resume else (0, None)
    if not config.resume:
        _refuse_overwrite(output)
    dist.barrier()  # every rank has checked the output before rank 0 writes to it
    if dist.main:
        output.mkdir(parents=True, exist_ok=True)
        _truncate_log(output / LOG, start)
    if dist.world > 1:  # independent dropout per rank, reproducible from (seed, rank, step)
        torch.manual_seed(config.seed * 7919 + dist.rank * 104729 + start)

    autocast = (torch.autocast(device_type=dist.device.type, dtype=torch.bfloat16) if config.precision == "bf16"
                else contextlib.nullcontext())
    progress = _progress(total, start, config.show_progress and dist.main)
    model.train()
    began = time.time()
    for step in range(start, total):
        lr = lr_at(step, total, config.warmup_steps, config.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = 0.0
        for g in range(config.grad_accum):
            rows = _rows(step * config.grad_accum + g, micro_per_epoch, batch, len(examples), config.seed)
            with autocast:
                loss = _batch_loss(model, ids, rows, pad_id, triplets, config.temperature, dist)
            (loss / config.grad_accum).backward()
            loss_sum += float(loss.detach())
        dist.average_gradients(params)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm if config.max_grad_norm > 0
                                                   else float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        last_loss = loss_sum / config.grad_accum
        if not math.isfinite(last_loss):
            raise E5VError(f"training diverged at step {step + 1} (loss {last_loss}); lower --lr")
        record = {"step": step + 1, "epoch": round((step + 1) / steps_per_epoch, 4), "loss": last_loss, "lr": lr,
                  "grad_norm": float(grad_norm), "elapsed_s": round(time.time() - began, 3)}
        if dist.main:
            with open(output / LOG, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        progress.update(1)
        progress.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
        if (step + 1) % config.save_every == 0 or step + 1 == total:
            if dist.main:
                ckpt.save_checkpoint(model, optimizer, output, step + 1, {**run_state, "loss": last_loss},
                                     config.keep_checkpoints)
            dist.barrier()
        if on_step is not None:
            on_step(step + 1, last_loss)
    progress.close()
    manifest = _manifest(config, components, prompts, run_state, total, last_loss, steps_per_epoch, dist.world)
    if dist.main:
        model.save_pretrained(str(output))
        (output / MANIFEST).write_text(json.dumps(manifest, indent=2))
    dist.barrier()
    dist.close()
    return manifest


def _batch_loss(model: Any, ids: dict, rows: list[int], pad_id: int, triplets: bool, temperature: float,
                dist: Dist) -> torch.Tensor:
    """Embed this rank's anchors, positives (and hard negatives) in one forward pass; InfoNCE on the
    embeddings of the whole global micro-batch (gathered over ranks)."""
    local = dist.shard(rows)
    kinds = ["anchor", "positive"] + (["negative"] if triplets else [])
    sequences = [ids[kind][r] for kind in kinds for r in local]
    batch = [t.to(dist.device) for t in collate(sequences, pad_id)]
    vectors = embed(model, *batch)  # (K * b, D)
    parts = [dist.gather(part) for part in vectors.split(len(local))]  # K x (B, D)
    return info_nce(parts[0], parts[1], parts[2] if triplets else None, temperature)


def _rows(micro: int, micro_per_epoch: int, batch: int, n: int, seed: int) -> list[int]:
    """Row indices of global micro-batch ``micro``: a seeded permutation per epoch, last partial batch dropped."""
    epoch, within = divmod(micro, micro_per_epoch)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator)
    return order[within * batch:(within + 1) * batch].tolist()


def _tokenize_all(tokenize: PromptTokenizer, examples: list[Example], triplets: bool) -> dict[str, list]:
    lines = [e.line for e in examples]
    out = {"anchor": tokenize([e.anchor for e in examples], lines),
           "positive": tokenize([e.positive for e in examples], lines)}
    if triplets:
        out["negative"] = tokenize([e.negative for e in examples], lines)
    return out


def _resume(config: TrainConfig, model: Any, optimizer: Any, run_state: dict) -> tuple[int, float | None]:
    found = ckpt.list_checkpoints(config.output)
    if not found:
        warnings.warn(f"--resume: no checkpoint in {ckpt.checkpoint_root(config.output)}; starting from step 0",
                      stacklevel=3)
        _refuse_overwrite(Path(config.output))
        return 0, None
    saved = json.loads((found[-1] / ckpt.STATE_FILE).read_text())
    for key in ("hyperparameters", "data"):
        old, new = saved.get(key, {}), run_state[key]
        changed = sorted(k for k in set(old) | set(new) if k != "path" and old.get(k) != new.get(k))
        if changed:  # the data file may move; its content (sha256) may not change
            raise E5VError(f"cannot resume from {found[-1]}: its {key} differ from this run's ({changed})")
    if saved.get("total_steps") != run_state["total_steps"]:
        warnings.warn(f"resuming with {run_state['total_steps']} total steps instead of {saved.get('total_steps')}: "
                      "the learning-rate schedule changes from here on", stacklevel=3)
    state = ckpt.load_checkpoint(model, optimizer, found[-1])
    return int(state["step"]), state.get("loss")


def _refuse_overwrite(output: Path) -> None:
    if (output / MANIFEST).exists() or ckpt.list_checkpoints(output):
        raise E5VError(f"{output} already holds a training run; pass --resume to continue it or choose another "
                       "--output")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines after the checkpoint being resumed (they are re-run)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _progress(total: int, start: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="train", unit="step", disable=not enabled)


def _manifest(config: TrainConfig, components: Any, prompts: Any, run_state: dict, total: int,
              final_loss: float | None, steps_per_epoch: int, world: int) -> dict:
    import peft

    from .. import __version__

    return {
        "format": "e5v-train-manifest/1",
        "base_model": str(config.model),
        "prompt_family": components.family,
        "prompts": {"text": prompts.text, "image": prompts.image, "composed": prompts.composed},
        "text_prompt": render("text", prompts, components.chat, text="<sent>"),
        "instruction": config.instruction,
        "hyperparameters": run_state["hyperparameters"],
        "global_batch": min(config.batch_size, run_state["data"]["rows"]) * config.grad_accum,
        "processes": world,
        "data": run_state["data"],
        "steps": total,
        "epochs": round(total / steps_per_epoch, 4),
        "final_loss": final_loss,
        "versions": {"e5v": __version__, "torch": torch.__version__, "peft": peft.__version__},
    }
