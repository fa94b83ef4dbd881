"""Dynamic batching: concurrent requests share model batches; one worker, futures route results back.

    request handlers --submit(items)--> bounded deque of Job(item, key, future) --> ONE worker task
        worker: take up to ``max_batch_size`` jobs, waiting at most ``wait_ms`` for the batch to fill
                (adaptive: only while announced requests are still being parsed or fewer items are
                queued than the last batch had, so a lone client never waits for company that is not
                coming, while a loaded server still fills its batches);
                group them by key (instruction, modality), run ``run(items, key)`` in a single model thread
                (off the event loop), complete each future with (vector, token_count) or that item's error.

Guarantees (each tested with a fake model in tests/test_server_batcher.py):
* a full queue refuses the whole request at once (``QueueFull`` -> 503 + Retry-After), never part of it;
* if the model call raises, EVERY future of that call fails (nobody hangs), and the worker keeps running;
* a bad item fails only its own future (the encoder reports per-item errors);
* a cancelled future (client went away) is skipped when the batch is formed and never completed twice;
* counted exclusive calls (searches) take queue places too and do not run if their client left first.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterator

import numpy as np

from ..errors import InputError

log = logging.getLogger("e5v.server")


class QueueFull(Exception):
    """The bounded queue cannot take the request's items now."""


class BatchFailed(RuntimeError):
    """The model call for a batch raised; every request in it receives this."""


@dataclass
class Job:
    item: Any
    key: Hashable
    future: asyncio.Future


#: run(items, key) -> object with .vectors (N, D), .errors {i: msg}, .token_counts {i: n}  (an EncodeResult)
RunFn = Callable[[list, Hashable], Any]


class Batcher:
    """See the module docstring. Start with ``await start()`` inside the running loop."""

    def __init__(self, run: RunFn, max_batch_size: int = 32, wait_ms: float = 5.0, max_queue: int = 1024,
                 on_batch: Callable[[int, float], None] | None = None, adaptive: bool = True):
        if max_batch_size < 1 or max_queue < 1 or wait_ms < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1 and wait_ms >= 0")
        self.run = run
        self.max_batch_size = max_batch_size
        self.wait_s = wait_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch  # metrics hook: (batch size, seconds)
        self.adaptive = adaptive  # wait only for announced requests (see arriving); False: always wait_ms
        self._incoming = 0
        self._last_batch = 0
        self._pending: deque[Job] = deque()
        self._exclusive = 0  # counted run_exclusive calls waiting or running (searches)
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        # One thread: the model is used by one batch at a time (also by run_exclusive, e.g. search).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="e5v-model")
        self.busy = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._worker = asyncio.create_task(self._loop(), name="e5v-batcher")

    async def stop(self) -> None:
        """Stop the worker; queued requests fail with QueueFull (503) instead of hanging."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(QueueFull("the server is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def queue_depth(self) -> int:
        return len(self._pending) + self._exclusive

    # ------------------------------------------------------------------ submitting
    def submit_nowait(self, items: list, keys: list[Hashable]) -> list[asyncio.Future]:
        """Queue all items or none; returns one future per item. Raises QueueFull."""
        if self._wakeup is None:
            raise RuntimeError("Batcher.start() was not called")
        if self.queue_depth + len(items) > self.max_queue:
            raise QueueFull(f"queue holds {self.queue_depth} of {self.max_queue} items; "
                            f"cannot take {len(items)} more")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._pending.extend(Job(item, key, fut) for item, key, fut in zip(items, keys, futures))
        self._wakeup.set()
        return futures

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Announce a request that will submit soon (its body is being read/parsed/decoded).

        While announced requests exist, a forming batch waits for them (at most ``wait_ms``); when none
        are, it runs at once: a lone sequential client never pays the batching wait.
        """
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            if self._wakeup is not None:
                self._wakeup.set()

    async def submit(self, items: list, keys: list[Hashable]) -> list[tuple[np.ndarray, int]]:
        """Queue items and wait for all their results (vector, token count), in order; see ``wait``."""
        return await self.wait(self.submit_nowait(items, keys))

    async def wait(self, futures: list[asyncio.Future]) -> list[tuple[np.ndarray, int]]:
        """Results of ``submit_nowait`` futures, in order.

        Raises InputError (first bad item, ``index`` relative to the request), BatchFailed or QueueFull
        (shutdown). If the caller is cancelled, its pending futures are cancelled so the worker skips them.
        """
        try:
            results = await asyncio.gather(*futures, return_exceptions=True)
        except asyncio.CancelledError:
            for fut in futures:
                fut.cancel()
            raise
        for index, res in enumerate(results):
            if isinstance(res, InputError):
                raise InputError(res.reason, index)
            if isinstance(res, BaseException):
                raise res
        return results

    async def run_exclusive(self, fn: Callable, *args: Any, counted: bool = False) -> Any:
        """Run ``fn(*args)`` on the model thread, between batches (for callers that use the model directly).

        ``counted`` (client work such as a search): the call takes a place in the queue, so ``max_queue``
        bounds it like an item (QueueFull when there is none), and if the caller is cancelled (client gone)
        before the call starts, it never runs.
        """
        if not counted:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        if len(self._pending) + self._exclusive >= self.max_queue:
            raise QueueFull(f"queue holds {len(self._pending) + self._exclusive} of {self.max_queue} items")
        gone = threading.Event()  # set when the caller is cancelled; checked on the model thread before fn runs

        def unless_gone() -> Any:
            return None if gone.is_set() else fn(*args)

        self._exclusive += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, unless_gone)
        except asyncio.CancelledError:
            gone.set()
            raise
        finally:
            self._exclusive -= 1

    # ------------------------------------------------------------------ worker
    async def _loop(self) -> None:
        while True:
            jobs = await self._take()
            groups: dict[Hashable, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for key, group in groups.items():
                try:
                    await self._run_group(key, group)
                except Exception as exc:  # a bug in result routing must not kill the worker or hang clients
                    self._fail(group, exc)

    async def _take(self) -> list[Job]:
        """Up to max_batch_size live jobs: the first waits for work, then at most wait_s for more."""
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        deadline = loop.time() + self.wait_s
        while len(self._pending) < self.max_batch_size and self._worth_waiting():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                break
        jobs: list[Job] = []
        while self._pending and len(jobs) < self.max_batch_size:
            job = self._pending.popleft()
            if not job.future.done():  # cancelled by a client that went away
                jobs.append(job)
        self._last_batch = len(jobs)
        return jobs

    def _worth_waiting(self) -> bool:
        """Adaptive: wait while requests are arriving, or fewer items are queued than the last batch had
        (under load, the clients just answered come back). A lone client (last batch 1) never waits."""
        if not self.adaptive:
            return True
        return self._incoming > 0 or len(self._pending) < self._last_batch

    async def _run_group(self, key: Hashable, group: list[Job]) -> None:
        live = [job for job in group if not job.future.done()]
        if not live:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.busy = True
        try:
            result = await loop.run_in_executor(self._executor, self.run, [job.item for job in live], key)
        except asyncio.CancelledError:  # stop() while the model runs: nobody may be left waiting
            self._fail(live, RuntimeError("the server is shutting down"))
            raise
        except Exception as exc:  # the whole call failed: fail every future, keep the worker alive
            self._fail(live, exc)
            return
        finally:
            self.busy = False
        if self.on_batch is not None:
            self.on_batch(len(live), loop.time() - started)
        for i, job in enumerate(live):
            if job.future.done():
                continue
            if i in result.errors:
                job.future.set_exception(InputError(result.errors[i]))
            else:
                job.future.set_result((result.vectors[i], int(result.token_counts.get(i, 0))))

    @staticmethod
    def _fail(jobs: list[Job], exc: Exception) -> None:
        log.error("batch of %d item(s) failed: %s: %s", len(jobs), type(exc).__name__, exc, exc_info=exc)
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(BatchFailed(f"the model failed on a batch of {len(jobs)} "
                                                     f"item(s): {type(exc).__name__}: {exc}"))
