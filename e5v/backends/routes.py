"""The default CPU route, one row per kind of CPU (``ROUTES``): the backend a load that names none runs on
(``backend="auto"``: the cached OpenVINO int8 export or torch; ``export_cache.auto_backend`` acts on it) and the
torch dtype when the caller names none (``dtype=None`` or "auto").

Measured on the E5-V-shaped bench model, 2 cores (issue 20; BENCHMARKS.md): on CPUs with native bf16
(AVX-512 BF16, e.g. AMD Zen 4; AMX-BF16, Intel Xeon 4th gen+) torch bf16 is 3-4x faster than fp32 (16 texts
1.36 s vs 5.60 s on Zen 4) at min cosine 0.99986 against the fp32 reference; without it (AVX2-only AMD Zen 2/3,
AVX-512 without BF16) bf16 GEMMs are 5-6x *slower* than fp32. So: bf16 where the CPU has native bf16, fp32
elsewhere. The memory guard then checks the choice (``torch_backend.fitting_dtype``): fp32 falls back to
bf16 when only that fits, anything else over budget is refused naming what fits.

``E5V_DTYPE`` (e.g. ``fp32``) overrides the dtype for a process (and keeps the auto route on torch): the test
suite pins fp32 with it so that exact-parity tests mean the same on every CPU. An explicit ``dtype=`` always wins.
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
    """"amx", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx2" or "unknown": the rows of ``ROUTES``."""
    if flags is None:
        return "unknown"
    for kind, flag in (("amx", "amx_bf16"), ("avx512_bf16", "avx512_bf16"), ("avx512_vnni", "avx512_vnni"),
                       ("avx_vnni", "avx_vnni"), ("avx2", "avx2")):
        if flag in flags:
            return kind
    return "unknown"


@dataclass(frozen=True)
class CpuRoute:
    """What a load that names no backend runs on one kind of CPU, and the measurement behind it."""

    backend: str  # "openvino-int8": the cached int8 export (``export_cache.auto_backend``); or "torch"
    torch_dtype: str  # torch's default dtype here: the torch route's, and the fallback's when there is no export
    why: str


#: The route table, one row per ``cpu_kind`` (docs/routes.md; figures from bench/peers.py, 2 cores, BENCHMARKS.md).
#: - amx (Xeon 4th gen+, run 5): torch bf16 on oneDNN's AMX-BF16 kernels ran the 16 texts in 2.11 s and an anyres
#:   image in 2.04 s (min cos 0.99993), the cached OpenVINO int8 export 3.23 s / 2.98 s (0.99950): OpenVINO
#:   2026.4 never runs AMX-INT8 for int8-compressed weights; with its default bf16 precision it decompresses
#:   them into ``brgemm_avx512_amx_bf16`` (dynamic quantization ignored), with f32 precision its int8 path is
#:   slower still (bench/ov_profile.py).
#: - avx512_bf16 / avx512_vnni (AMD Zen 4 and Zen 5, Xeon 2nd-3rd gen): the int8 export's VNNI kernels, 1.14-1.50x
#:   (texts) and 1.40-1.51x (per image) vLLM CPU bf16 on Zen 4 (runs 2-4), 1.76x / 1.61x on Zen 5 (run 6), min cos
#:   0.99918; torch bf16 0.89-0.94x (Zen 4), 1.02x / 0.79x (Zen 5) there.
#: - avx_vnni (Intel client CPUs without AVX-512): the same int8 kernels at 256 bits (not measured here).
#: - avx2 (AMD Zen 2/3): OpenVINO decompresses int8 weights to f32 (fp32 speed) and bf16 GEMMs are 5-6x slower
#:   than fp32, so torch fp32.
ROUTES: dict[str, CpuRoute] = {
    "amx": CpuRoute("torch", "bf16", "torch bf16 on AMX-BF16 is 1.5x faster than OpenVINO int8 here (which runs "
                                     "AMX-BF16 too, on decompressed weights) and closer to fp32"),
    "avx512_bf16": CpuRoute("openvino-int8", "bf16", "int8 dot-product units"),
    "avx512_vnni": CpuRoute("openvino-int8", "fp32", "int8 dot-product units"),
    "avx_vnni": CpuRoute("openvino-int8", "fp32", "int8 dot-product units"),
    "avx2": CpuRoute("torch", "fp32", "no int8 dot-product units, OpenVINO int8 would run at fp32 speed"),
    "unknown": CpuRoute("torch", "fp32", "CPU flags unknown: torch fp32 runs everywhere"),
}


def route_for(flags: set[str] | None = None) -> tuple[str, CpuRoute]:
    """(cpu kind, its row of ``ROUTES``) for ``flags`` (default: this machine's)."""
    kind = cpu_kind(cpu_flags() if flags is None else flags)
    return kind, ROUTES[kind]


def default_cpu_dtype(flags: set[str] | None = None, environ: dict | None = None) -> DtypeChoice:
    """The torch dtype for a CPU load that names none (see the module doc for the measurements behind it)."""
    environ = os.environ if environ is None else environ
    pinned = environ.get("E5V_DTYPE", "").strip().lower()
    if pinned and pinned != "auto":
        return DtypeChoice(pinned, f"E5V_DTYPE={pinned}")
    kind, route = route_for(flags)
    dtype = route.torch_dtype
    why = ("native bf16 on this CPU: 3-4x faster than fp32, cosine ~0.9999 vs fp32; dtype='fp32' for exact vectors"
           if dtype == "bf16" else "no native bf16 on this CPU: fp32 is the fast and exact dtype")
    return DtypeChoice(dtype, f"auto on {kind}: {why}")
