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
import sys
import threading
from pathlib import Path

MADV_DONTNEED = 4


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
