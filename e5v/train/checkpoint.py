"""Training checkpoints: a usable peft adapter plus what is needed to continue bit-for-bit.

``output/checkpoints/step-00000040/`` holds the adapter (loadable with ``E5V.from_pretrained(M,
lora=...)`` like the final one), the optimizer state, the torch RNG state (LoRA dropout draws from it)
and ``trainer_state.json``. The data order is a pure function of (seed, step), so nothing else is
needed to resume exactly where the run stopped. A checkpoint is written to a temporary directory and
renamed, so an interrupted save never leaves a half checkpoint that resume would pick up.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError, require

STATE_FILE = "trainer_state.json"
TENSORS_FILE = "training_state.pt"


def checkpoint_root(output: str | Path) -> Path:
    return Path(output) / "checkpoints"


def save_checkpoint(model: Any, optimizer: torch.optim.Optimizer, output: str | Path, step: int,
                    state: dict, keep: int) -> Path:
    """Write checkpoint ``step`` atomically and prune older ones beyond ``keep`` (0 keeps all)."""
    root = checkpoint_root(output)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    torch.save({"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}, tmp / TENSORS_FILE)
    (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    if keep:
        for old in list_checkpoints(output)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(output)
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file() and (p / TENSORS_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def load_checkpoint(model: Any, optimizer: torch.optim.Optimizer, directory: Path) -> dict:
    """Restore adapter weights, optimizer and RNG from ``directory``; returns its trainer state."""
    peft = require("peft", "train")
    from safetensors.torch import load_file

    state = json.loads((directory / STATE_FILE).read_text())
    try:  # tensors and plain containers only: a checkpoint directory must not be able to run code
        tensors = torch.load(directory / TENSORS_FILE, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ModelLoadError(f"checkpoint {directory} has an unreadable {TENSORS_FILE} (only tensors and plain "
                             f"values are accepted): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                             ) from None
    weights = load_file(str(directory / "adapter_model.safetensors"))
    result = peft.set_peft_model_state_dict(model, weights)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    trainable = sum(1 for _, p in model.named_parameters() if p.requires_grad)
    if unexpected or len(weights) != trainable:
        raise ModelLoadError(f"checkpoint {directory} does not match this model's LoRA layout "
                             f"({len(weights)} tensors for {trainable} trainable, unexpected {unexpected[:3]})")
    optimizer.load_state_dict(tensors["optimizer"])
    torch.set_rng_state(tensors["rng"])
    return state
