"""The default CPU route: which torch dtype a load uses when the caller names none (``dtype=None`` or "auto").

Measured on the E5-V-shaped bench model, 2 cores (issue 20; BENCHMARKS.md): on CPUs with native bf16
(AVX-512 BF16, e.g. AMD Zen 4; AMX-BF16, Intel Xeon 4th gen+) torch bf16 is 3-4x faster than fp32 (16 texts
1.36 s vs 5.60 s on Zen 4) at min cosine 0.99986 against the fp32 reference; without it (AVX2-only AMD Zen 2/3,
AVX-512 without BF16) bf16 GEMMs are 5-6x *slower* than fp32. So: bf16 where the CPU has native bf16, fp32
elsewhere. The memory guard then checks the choice (``torch_backend.fitting_dtype``): fp32 falls back to
bf16 when only that fits, anything else over budget is refused naming what fits.

``E5V_DTYPE`` (e.g. ``fp32``) overrides the table for a process: the test suite pins fp32 with it so that
exact-parity tests mean the same on every CPU. An explicit ``dtype=`` always wins. OpenVINO exports are a
separate route (``e5v export``, then load the export directory); building one automatically is not done yet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .cpu_features import cpu_flags

#: /proc/cpuinfo flags of native bf16 matrix arithmetic (what makes torch bf16 faster than fp32 on CPU)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class DtypeChoice:
    dtype: str  # "fp32" or "bf16"
    reason: str


def cpu_kind(flags: set[str] | None) -> str:
    """"amx", "avx512_bf16", "avx512_vnni", "avx2" or "unknown": the rows of the route table."""
    if flags is None:
        return "unknown"
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx2" if "avx2" in flags else "unknown"


#: cpu kind -> default torch dtype on CPU
TORCH_DTYPE = {"amx": "bf16", "avx512_bf16": "bf16", "avx512_vnni": "fp32", "avx2": "fp32", "unknown": "fp32"}

#: cpu kinds where ``backend="auto"`` keeps torch although the CPU has int8 dot-product units, and why (measured).
#: AMX (Xeon 4th gen+, 2 cores, bench/peers.py run 5): torch bf16 on oneDNN's AMX-BF16 kernels ran the 16 texts
#: in 2.11 s and an anyres image in 2.04 s (min cos 0.99993), the cached OpenVINO int8 export 3.23 s / 2.98 s
#: (0.99950): OpenVINO 2026.4 never runs AMX-INT8 for int8-compressed weights there: with its default bf16
#: precision it decompresses them into ``brgemm_avx512_amx_bf16`` (dynamic quantization ignored), with f32
#: precision its int8 path is slower still (bench/ov_profile.py, BENCHMARKS.md "Peers").
TORCH_OVER_INT8 = {"amx": "torch bf16 on AMX-BF16 is 1.5x faster than OpenVINO int8 here (which runs "
                          "AMX-BF16 too, on decompressed weights) and closer to fp32"}


def default_cpu_dtype(flags: set[str] | None = None, environ: dict | None = None) -> DtypeChoice:
    """The torch dtype for a CPU load that names none (see the module doc for the measurements behind it)."""
    environ = os.environ if environ is None else environ
    pinned = environ.get("E5V_DTYPE", "").strip().lower()
    if pinned and pinned != "auto":
        return DtypeChoice(pinned, f"E5V_DTYPE={pinned}")
    kind = cpu_kind(cpu_flags() if flags is None else flags)
    dtype = TORCH_DTYPE[kind]
    why = ("native bf16 on this CPU: 3-4x faster than fp32, cosine ~0.9999 vs fp32; dtype='fp32' for exact vectors"
           if dtype == "bf16" else "no native bf16 on this CPU: fp32 is the fast and exact dtype")
    return DtypeChoice(dtype, f"auto on {kind}: {why}")
