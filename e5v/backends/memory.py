"""How much memory a load may use, and how much a torch load will take: checked before any weight is read.

Why: the CPU default loads E5-V 8B in fp32, about 33 GB, whatever the machine has; on a 24 GB machine the
kernel kills the process part-way through loading, with no message. The budget is what the machine can give
now (``MemAvailable``, and the cgroup's limit minus its usage when the process runs in one, as in containers),
lowered by ``max_memory=`` or ``E5V_MAX_MEMORY`` (``"6GB"``, ``"512MiB"``, bytes). The estimate comes from the
checkpoint's safetensors headers: the weights in the dtype asked for, plus the larger of the stored copy
while converting (transformers holds both when the dtypes differ) and the activations of one forward pass
at ``max_batch_tokens``, plus a fixed allowance for the runtime.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import _DTYPES, checkpoint_files, read_header
from ..errors import ModelLoadError

#: Resident memory of Python + torch + transformers + tokenizer before any weight (measured ~0.4-0.5 GB).
RUNTIME_BYTES = 600 * 2**20
#: Activation elements per padded token per hidden unit in one torch forward pass (hidden states, MLP
#: intermediates, attention scratch): fitted to a full 8192-token batch of the E5-V-width bench model, which
#: peaked 1.7 GB over its fp32 weights (bench/results/load_memory.md), with ~10% margin.
ACTIVATION_FACTOR = 14
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int) -> int:
    """Bytes from ``6GB``, ``512MiB``, ``1.5g`` or a plain number of bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read a memory size from {text!r}; use e.g. 6GB, 512MiB or a number of bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def mem_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """``MemAvailable`` in bytes, or None where the kernel does not say."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_headroom(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Limit minus usage of this process's memory cgroup (v2, else v1), or None when unlimited or unknown."""
    pairs = ((root / "memory.max", root / "memory.current"),
             (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes"))
    for limit_file, usage_file in pairs:
        try:
            limit = limit_file.read_text().strip()
            usage = int(usage_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 2**60:
            return None
        return max(int(limit) - usage, 0)
    return None


def memory_budget(max_memory: str | int | None = None, *, meminfo: Path = Path("/proc/meminfo"),
                  cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes a load may use: the least of MemAvailable, the cgroup headroom, ``max_memory`` and
    ``E5V_MAX_MEMORY``; None when nothing is known (no check is made then)."""
    limits = [mem_available(meminfo), cgroup_headroom(cgroup)]
    for explicit in (max_memory, os.environ.get("E5V_MAX_MEMORY")):
        if explicit not in (None, ""):
            limits.append(parse_size(explicit))
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


@dataclass(frozen=True)
class TorchEstimate:
    """Expected peak of a torch load in one dtype."""

    dtype_name: str
    weights: int  # the model's weights in the target dtype
    conversion: int  # stored data held while converting: one slice (narrowing.py), or all of it for mixed-dtype
    # checkpoints that transformers converts; 0 when the dtypes match
    activations: int  # one forward pass at max_batch_tokens
    parameters: int

    @property
    def peak(self) -> int:
        # the stored copy is freed once converted, before any forward pass: the two do not add up
        return RUNTIME_BYTES + self.weights + max(self.conversion, self.activations)


def estimate_torch(path: Path, dtype, hidden_size: int, max_batch_tokens: int) -> TorchEstimate | None:
    """The peak of loading ``path`` with the torch backend in ``dtype`` (from safetensors headers; nothing
    is read beyond them); None for checkpoints without safetensors files."""
    files = checkpoint_files(Path(path))
    if not files:
        return None
    target = dtype.itemsize if hasattr(dtype, "itemsize") else _element_size(dtype)
    weights = conversion = params = 0
    stored_floats = set()
    for file in files:
        header, _ = read_header(file)
        for entry in header.values():
            stored = _DTYPES.get(entry["dtype"])
            count = math.prod(entry["shape"])
            params += count
            if stored is None or not stored.is_floating_point:
                weights += count * (_element_size(stored) if stored is not None else 1)
                continue
            weights += count * target
            stored_floats.add(stored)
            if _element_size(stored) != target:
                conversion += count * _element_size(stored)
    if len(stored_floats) == 1 and conversion:  # one wider dtype: converted in slices (narrowing.py)
        from .narrowing import CHUNK_BYTES

        conversion = min(conversion, CHUNK_BYTES)
    activations = ACTIVATION_FACTOR * hidden_size * max_batch_tokens * target
    return TorchEstimate(str(dtype).replace("torch.", ""), weights, conversion, activations, params)


def check_fits(estimate: TorchEstimate, budget: int | None, alternatives: dict[str, int], model: str) -> None:
    """Refuse (ModelLoadError) a load whose estimated peak is over the budget, naming what would fit."""
    if budget is None or estimate.peak <= budget:
        return
    fitting = [f"{name} (~{gb(peak)})" for name, peak in alternatives.items() if peak <= budget]
    export = (f"`e5v export --model {model} --weights int4 --load-dtype bf16 --output ./e5v-int4` "
              f"(an OpenVINO int4 export, ~{gb(int4_peak(estimate))} to run), then load that directory")
    raise ModelLoadError(
        f"loading {model} with the torch backend in {estimate.dtype_name} needs about {gb(estimate.peak)} "
        f"(weights {gb(estimate.weights)}" + (f" + {gb(estimate.conversion)} while converting" if estimate.conversion
                                             else "") +
        f"), but {gb(budget)} is available (MemAvailable, cgroup limit, max_memory / E5V_MAX_MEMORY). "
        + (f"Routes that fit: {', '.join(fitting)}; or " if fitting else "No torch dtype fits; ") + export + ".")


def int4_peak(estimate: TorchEstimate) -> int:
    """Rough run-time peak of an int4 export: half a byte per parameter plus int8 embeddings and scratch."""
    return RUNTIME_BYTES + estimate.parameters // 2 + estimate.activations // 2 + estimate.parameters // 16


def gb(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _element_size(dtype) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()
