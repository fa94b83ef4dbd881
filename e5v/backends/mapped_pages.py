"""Drop the resident pages of a read-only memory-mapped file (the OpenVINO IR's .bin) from this process.

Why: the CPU plugin memory-maps the IR's weights file, then, on the first inference, copies every
compressed weight into its own packed layout and never reads the mapped original again, but the mapping
stays. Its pages count in RSS (a second copy of the model: +3.8 GB on the int4 8B). They are clean
file-backed pages, so telling the kernel we no longer need them (``MADV_DONTNEED``) is safe: any later
access simply reads the file again. Only read-only private mappings are touched (no private writes can be
lost). Linux only; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from pathlib import Path

MADV_DONTNEED = 4
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _mappings(path: Path) -> list[tuple[int, int]]:
    """(start, end) of this process's read-only mappings of ``path``."""
    target = str(path.resolve())
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip() == target and "w" not in fields[1]:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


def file_ranges(paths: list[Path]) -> list[tuple[int, int]]:
    """(start, end) of every mapping of ``paths`` in this process, private writable ones included (safetensors
    maps checkpoints copy-on-write)."""
    targets = {str(Path(p).resolve()) for p in paths}
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip() in targets:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


def release_range(start: int, end: int, within: list[tuple[int, int]]) -> int:
    """Drop the pages wholly inside [start, end) that lie in one of the file mappings ``within``; returns the bytes
    advised. For memory the caller has finished with (converted weights): a dropped page of a private mapping
    reads the file again if touched, and a page written since mapping (copy-on-write) would lose the write, so
    only ranges nothing reads again may be passed. Memory outside the file mappings is never touched."""
    if not sys.platform.startswith("linux"):
        return 0
    page = PAGE
    total = 0
    for lo, hi in within:
        a, b = max(start, lo), min(end, hi)
        a, b = -(-a // page) * page, b // page * page
        if b > a and _madvise(a, b - a):
            total += b - a
    return total


def _madvise(start: int, length: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc.madvise(start, length, MADV_DONTNEED) == 0


def release(path: Path) -> int:
    """Drop the resident pages of every read-only mapping of ``path``; returns the bytes advised."""
    if not sys.platform.startswith("linux"):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    total = 0
    for start, end in _mappings(path):
        if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
            total += end - start
    return total


class ReleaseWhile:
    """Context manager: keep releasing ``path``'s pages every ``interval`` seconds while the body runs.

    Used around the warm-up inference in which the plugin packs the weights layer by layer: each layer's
    mapped pages are dropped soon after they were packed, so the two copies never coexist in full (the
    process's *peak* RSS is bounded, not only its final RSS).
    """

    def __init__(self, path: Path, interval: float = 0.05):
        self.path, self.interval = path, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            release(self.path)

    def __enter__(self) -> "ReleaseWhile":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        release(self.path)
