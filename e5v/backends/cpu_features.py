"""What the CPU can do for int8 inference, read from /proc/cpuinfo.

OpenVINO's CPU plugin turns int8/int4 *weights* into int8 *compute* only on CPUs with int8 dot-product
instructions (AVX-512 VNNI, AMX; AVX-VNNI is untested here). On AVX2-only CPUs (AMD Zen 2/3, older Intel)
it decompresses the weights to f32 inside each matmul: the export still saves memory, but runs at about
torch-fp32 speed (measured on a Zen 3 EPYC, bench/results/openvino.md run 7). Users should hear that
instead of wondering why the "fast path" is not fast.
"""

from __future__ import annotations

from pathlib import Path

#: /proc/cpuinfo flags of instructions the plugin's dynamic-quantization int8 kernels can use.
INT8_DOT_FLAGS = ("avx512_vnni", "amx_int8", "avx_vnni")


def cpu_field(name: str, cpuinfo: str | None = None) -> str | None:
    """The value of ``name`` for the first CPU in ``cpuinfo`` (default: this machine's /proc/cpuinfo); None when
    unknown (not Linux, or no such line, e.g. flags on some ARM kernels)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """Flags of the first CPU in ``cpuinfo`` (default: this machine's), None when unknown."""
    flags = cpu_field("flags", cpuinfo)
    return None if flags is None else set(flags.split())


def has_int8_dot_product(flags: set[str] | None = None) -> bool | None:
    """True/False when known from the flags, None when the flags cannot be read."""
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return None
    return any(flag in flags for flag in INT8_DOT_FLAGS)


def cpu_vendor(cpuinfo: str | None = None) -> str | None:
    """``vendor_id`` of the first CPU ("AuthenticAMD", "GenuineIntel", ...), None when unknown."""
    return cpu_field("vendor_id", cpuinfo)
