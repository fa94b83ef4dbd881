"""Shared benchmark plumbing: run each configuration in its own process for a clean peak RSS."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

BENCH_MODEL = Path(os.environ.get("E5V_BENCH_MODEL", "/tmp/e5v-bench-model"))


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB.

    Reads VmHWM (peak of the current address space, reset by exec). ``ru_maxrss`` is not used: on Linux
    it survives fork+exec, so a worker spawned by a large parent would report the parent's peak.
    """
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(script: str, config: str, *args: str) -> dict:
    """Run ``script --worker config`` in a fresh interpreter and parse its last stdout line as JSON."""
    cmd = [sys.executable, script, "--worker", config, *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"worker {config} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed(fn, repeat: int = 1) -> float:
    """Best wall time of ``repeat`` runs of fn() (after the caller's warm-up)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


#: CPU features that decide which kernels torch and OpenVINO can use: int8 compute needs AVX-512 VNNI or
#: AMX (on AVX2-only CPUs OpenVINO decompresses int8/int4 weights to f32), bf16 speed needs avx512_bf16/AMX.
_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_note() -> str:
    """CPU model and the ISA flags above: the same bench gives very different ratios on AVX2-only, AVX-512
    VNNI and AMX CPUs, so every table says which one it ran on."""
    from e5v.backends.cpu_features import cpu_flags

    model = "unknown CPU"
    try:
        model = next((line.partition(":")[2].strip() for line in open("/proc/cpuinfo")
                      if line.startswith("model name")), model)
    except OSError:
        pass
    flags = cpu_flags() or set()
    present = [flag for flag in _ISA_FLAGS if flag in flags]
    return f"{model}{_family()} ({', '.join(present) or 'no AVX2'})"


def _family() -> str:
    """", cpu family F model M" from /proc/cpuinfo: model names such as "AMD EPYC" hide the generation
    (family 25 is Zen 3/4, 26 is Zen 5; Intel's family 6 models tell Ice Lake from Sapphire Rapids)."""
    from e5v.backends.cpu_features import cpu_field

    family, model = cpu_field("cpu family"), cpu_field("model")
    return f", cpu family {family} model {model}" if family and model else ""


def machine_note() -> str:
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores of {cpu_note()}, load average {load:.1f} at start"


def emit(text: str, path: str | os.PathLike | None, *, append: bool = True) -> None:
    """Print a result table and, when ``path`` is given, write it there too (appended by default, so
    several runs can collect in one ``bench/results`` file)."""
    print(text)
    if path:
        with open(path, "a" if append else "w") as out:
            out.write(text + "\n")
