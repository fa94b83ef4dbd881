"""fp32 linear layers on oneDNN with pre-packed weights, on CPUs where PyTorch's default (MKL) is slow.

PyTorch's fp32 ``nn.Linear`` on CPU calls MKL's sgemm. MKL is known to choose its kernels by CPU vendor, and on
AMD it runs far below the CPU's AVX-512 rate; oneDNN chooses by instruction set. Measured on 2 cores of AMD EPYC
Zen 5 (cpu family 26; bench/onednn_linear.py, 1024 tokens at the bench model's widths): MKL 176-186 GFLOP/s,
oneDNN with the weight packed once 406-433 GFLOP/s (2.2-2.4x). vLLM's CPU build runs its linears on oneDNN,
which is why its fp32 was ~2x ours on AMD and level on a Xeon (BENCHMARKS.md, peers runs 5-7). The arithmetic
is the same (fp32 products and accumulation) in another order: vectors agree with MKL's to ~1e-7.

bf16 linears already run on oneDNN, but reorder the weight on every call; packed once they ran 5-18% faster on
the same Zen 5 (2,367 and 256 tokens at the bench model's widths), so bf16 loads on CPUs with native bf16 are
packed too. ``E5V_ONEDNN_LINEAR=1`` / ``0`` forces packing on / off; by default fp32 is packed on AMD CPUs
(``cpu_features.cpu_vendor``) and bf16 on CPUs with AVX-512 BF16 or AMX, when PyTorch has oneDNN. Only inference loads without a LoRA adapter are packed (``TorchBackend.load``): packed
modules have no trainable weight and leave ``state_dict``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .cpu_features import cpu_flags, cpu_vendor
from .mapped_pages import file_ranges, release_range
from .routes import cpu_kind

#: CPU vendors whose fp32 linears go to oneDNN by default (measured; see the module docstring)
SLOW_MKL_VENDORS = ("AuthenticAMD",)


def wanted(dtype: torch.dtype = torch.float32, environ: dict | None = None, vendor: str | None = None,
           flags: set[str] | None = None) -> tuple[bool, str]:
    """(pack this load's ``dtype`` linears on oneDNN?, why) for this machine."""
    environ = os.environ if environ is None else environ
    forced = environ.get("E5V_ONEDNN_LINEAR", "").strip()
    if forced in ("0", "1"):
        return forced == "1", f"E5V_ONEDNN_LINEAR={forced}"
    if forced:
        raise ValueError(f"E5V_ONEDNN_LINEAR must be 0 or 1 (or unset for the CPU's default), got {forced!r}")
    if not torch.backends.mkldnn.is_available():
        return False, "this PyTorch has no oneDNN"
    if dtype == torch.bfloat16:
        kind = cpu_kind(cpu_flags() if flags is None else flags)
        if kind in ("amx", "avx512_bf16"):
            return True, "bf16 linears on oneDNN with packed weights (5-18% over unpacked calls)"
        return False, f"no native bf16 on {kind}"
    vendor = cpu_vendor() if vendor is None else vendor
    if vendor in SLOW_MKL_VENDORS:
        return True, f"fp32 linears on oneDNN (MKL takes its AVX2 path on {vendor} CPUs, ~2x slower)"
    return False, f"MKL fp32 linears ({vendor or 'unknown vendor'})"


class PackedLinear(nn.Module):
    """``nn.Linear`` for fp32 / bf16 CPU inference through ``mkldnn::_linear_pointwise`` on a weight packed once."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().contiguous()
        # an opaque oneDNN tensor: kept as a plain attribute, so .to() and state_dict() leave it alone
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        out = torch.ops.mkldnn._linear_pointwise(flat, self.packed_weight, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, oneDNN"


def pack_linears(model: nn.Module, files: list[Path] = ()) -> int:
    """Replace every fp32 / bf16 CPU ``nn.Linear`` in ``model`` by a ``PackedLinear``, one at a time; returns how many.

    The originals are dead once packed. Those memory-mapped from ``files`` (the checkpoint's safetensors) have
    their pages dropped as each layer is packed (``mapped_pages.release_range``), so the load ends holding the
    packed weights instead of the packed weights plus the whole checkpoint's pages; a weight whose storage another
    tensor still uses (tied) is left alone."""
    def packable(module: nn.Module) -> bool:
        return (type(module) is nn.Linear and module.weight.dtype in (torch.float32, torch.bfloat16)
                and module.weight.device.type == "cpu")

    # (parent, name) pairs, not the layers: a list holding the layers would keep every original alive to the end
    slots = [(parent, name) for parent in model.modules() for name, child in parent.named_children() if packable(child)]
    weights = {id(getattr(parent, name).weight) for parent, name in slots}
    shared = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()] if id(t) not in weights}
    within = file_ranges(list(files))
    for parent, name in slots:
        linear = getattr(parent, name)
        setattr(parent, name, PackedLinear(linear))
        weight = linear.weight
        if within and weight.untyped_storage().data_ptr() not in shared:
            release_range(weight.data_ptr(), weight.data_ptr() + weight.numel() * weight.element_size(), within)
    return len(slots)
