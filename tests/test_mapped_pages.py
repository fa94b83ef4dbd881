"""Dropping the resident pages of a read-only file mapping (what the OpenVINO backend does after warm-up)."""

from __future__ import annotations

import mmap
import sys

import numpy as np
import pytest

from e5v.backends.mapped_pages import ReleaseWhile, release

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise/proc maps: Linux only")


def _mapped_rss_kb(path) -> int:
    """Resident kB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        first = line.split(maxsplit=5)
        if "-" in first[0] and len(first) >= 5 and ":" in first[3]:  # a mapping header line
            inside = len(first) == 6 and first[5].strip() == str(path.resolve())
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_release_drops_resident_pages_and_keeps_the_data(tmp_path):
    path = tmp_path / "weights.bin"
    data = np.random.default_rng(0).integers(0, 255, 8 << 20, dtype=np.uint8)  # 8 MB
    path.write_bytes(data.tobytes())
    with path.open("rb") as handle:
        view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    array = np.frombuffer(view, dtype=np.uint8)
    assert int(array.sum(dtype=np.int64)) == int(data.sum(dtype=np.int64))  # touch every page
    assert _mapped_rss_kb(path) >= 8 * 1024 - 64
    assert release(path) >= 8 << 20
    assert _mapped_rss_kb(path) == 0
    assert np.array_equal(array, data)  # a later read simply faults the file back in
    with ReleaseWhile(path, interval=0.01):
        assert np.array_equal(array, data)
    assert _mapped_rss_kb(path) == 0
    del array
    view.close()


def test_writable_mappings_are_left_alone(tmp_path):
    path = tmp_path / "scratch.bin"
    path.write_bytes(bytes(1 << 20))
    with path.open("r+b") as handle:
        view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)  # private + writable
    view[:4] = b"abcd"  # a private change that MADV_DONTNEED would silently discard
    assert release(path) == 0
    assert view[:4] == b"abcd"
    view.close()
