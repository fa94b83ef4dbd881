"""Helpers for tests that watch a store another process writes (a directory or a PostgreSQL URL)."""

from __future__ import annotations

import subprocess
import time

from e5v.errors import StoreError
from e5v.store import Store


def stored_rows(db) -> int:
    """Rows in the store at ``db`` now; 0 before it exists."""
    try:
        with Store.open(db) as store:
            return len(store)
    except StoreError:  # not created yet
        return 0


def wait_for_rows(db, proc: subprocess.Popen, at_least: int, timeout: float = 120.0) -> int:
    """Poll until ``db`` holds ``at_least`` rows or ``proc`` exits; the count seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = stored_rows(db)
        if n >= at_least or proc.poll() is not None:
            return n
        time.sleep(0.05)
    raise AssertionError(f"no {at_least} committed rows within {timeout}s")
