"""One writer per store: an advisory ``flock`` on ``DIR/.e5v-write.lock``.

flock is released by the kernel when the holder exits in any way (including SIGKILL), so a crashed
``e5v index`` never leaves a stale lock behind; the pid written into the file is only for the message
shown to the process that is refused. Readers (search) take no lock: LanceDB snapshots are immutable.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from ..errors import StoreError

LOCK_NAME = ".e5v-write.lock"


class WriterLock:
    """Context manager holding the store's write lock; refuses (StoreError) if another process has it.

    Re-entrant within one thread (the CLI takes it before loading the model, ``Store.add`` again inside);
    another thread of the same process is refused like another process (flock alone would let it in: the
    lock belongs to the process, and two threads adding the same items would store them twice).
    """

    _held: dict[Path, tuple[int, int]] = {}  # lock path -> (owning thread id, nesting depth) in this process
    _guard = threading.Lock()

    def __init__(self, root: Path):
        self.path = Path(root).resolve() / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "WriterLock":
        me = threading.get_ident()
        with self._guard:
            owner, depth = self._held.get(self.path, (None, 0))
            if depth and owner == me:
                self._held[self.path] = (me, depth + 1)
                return self
            if depth:
                raise StoreError(f"the store at {self.path.parent} is being written by another thread of this "
                                 "process; one writer at a time (searching meanwhile is fine)")
            self._held[self.path] = (me, 1)  # claimed before flock, so a racing thread sees it
        try:
            self._acquire()
        except BaseException:
            with self._guard:
                self._held.pop(self.path, None)
            raise
        return self

    def _acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot write to the store at {self.path.parent}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"the store at {self.path.parent} is being written by another process (pid {holder}); "
                "wait for it to finish (searching meanwhile is fine) or index into another --db"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def __exit__(self, *exc: object) -> None:
        with self._guard:
            owner, depth = self._held[self.path]
            if depth > 1:
                self._held[self.path] = (owner, depth - 1)
            else:
                del self._held[self.path]
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
