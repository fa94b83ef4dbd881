"""The dynamic batcher with a fake model: merging, routing, bounded queue, failures, cancellation."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from e5v.errors import InputError
from e5v.server.batcher import Batcher, BatchFailed, QueueFull


class FakeModel:
    """Records each call; vector of item x is [x, len(key)]; items starting with 'bad' fail per item.

    ``gate`` (a threading.Event) lets a test hold the model thread inside a call.
    """

    def __init__(self, fail_calls: int = 0):
        self.calls: list[tuple[list, object]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_calls = fail_calls

    def __call__(self, items: list, key) -> SimpleNamespace:
        self.calls.append((list(items), key))
        self.entered.set()
        self.gate.wait(10)
        if self.fail_calls:
            self.fail_calls -= 1
            raise RuntimeError("boom")
        vectors = np.array([[float(x) if not str(x).startswith("bad") else np.nan, 1.0] for x in items],
                           dtype=np.float32)
        errors = {i: "bad item" for i, x in enumerate(items) if str(x).startswith("bad")}
        return SimpleNamespace(vectors=vectors, errors=errors,
                               token_counts={i: 10 + i for i in range(len(items)) if i not in errors})


def run(coro):
    return asyncio.run(coro)


async def started(model: FakeModel, **kw) -> Batcher:
    b = Batcher(model, **{"max_batch_size": 8, "wait_ms": 20, "max_queue": 64, "adaptive": False, **kw})
    await b.start()
    return b


async def wait_entered(model: FakeModel) -> None:
    await asyncio.to_thread(model.entered.wait, 10)
    model.entered.clear()


def test_concurrent_requests_share_one_model_call_and_get_their_own_results():
    async def main():
        model = FakeModel()
        b = await started(model, wait_ms=200)
        results = await asyncio.gather(*(b.submit([i, i + 100], ["k", "k"]) for i in range(3)))
        await b.stop()
        return model, results

    model, results = run(main())
    assert len(model.calls) == 1 and sorted(model.calls[0][0]) == [0, 1, 2, 100, 101, 102]
    for i, res in enumerate(results):
        assert [float(v[0]) for v, _ in res] == [i, i + 100]
        assert all(n >= 10 for _, n in res)


def test_max_batch_size_splits_calls():
    async def main():
        model = FakeModel()
        b = await started(model, max_batch_size=3, wait_ms=100)
        res = await b.submit(list(range(7)), ["k"] * 7)
        await b.stop()
        return model, res

    model, res = run(main())
    assert [len(items) for items, _ in model.calls] == [3, 3, 1]
    assert [float(v[0]) for v, _ in res] == list(range(7))


def test_items_with_different_keys_are_never_mixed_in_one_call():
    async def main():
        model = FakeModel()
        b = await started(model, wait_ms=100)
        await asyncio.gather(b.submit([1, 2], [("a", "text")] * 2), b.submit([3], [("b", "text")]))
        await b.stop()
        return model

    model = run(main())
    assert sorted((sorted(items), key) for items, key in model.calls) == [([1, 2], ("a", "text")), ([3], ("b", "text"))]


def test_full_queue_refuses_the_whole_request_and_accepts_again_later():
    async def main():
        model = FakeModel()
        model.gate.clear()  # hold the model inside the first call
        b = await started(model, max_batch_size=2, wait_ms=0, max_queue=3)
        first = asyncio.create_task(b.submit([1, 2], ["k", "k"]))
        await wait_entered(model)  # worker busy, queue empty
        second = asyncio.create_task(b.submit([3, 4, 5], ["k"] * 3))  # fills the queue exactly
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            b.submit_nowait([6], ["k"])
        assert b.queue_depth == 3  # nothing of the refused request was queued
        model.gate.set()
        out = await asyncio.gather(first, second)
        again = await b.submit([7], ["k"])
        await b.stop()
        return out, again

    out, again = run(main())
    assert [float(v[0]) for v, _ in out[1]] == [3, 4, 5]
    assert float(again[0][0][0]) == 7


def test_model_failure_fails_every_request_of_the_batch_and_the_worker_survives():
    async def main():
        model = FakeModel(fail_calls=1)
        b = await started(model, wait_ms=100)
        outcomes = await asyncio.gather(b.submit([1], ["k"]), b.submit([2, 3], ["k", "k"]), return_exceptions=True)
        after = await b.submit([4], ["k"])
        await b.stop()
        return model, outcomes, after

    model, outcomes, after = run(main())
    assert len(model.calls[0][0]) == 3  # both requests were in the failing call
    assert all(isinstance(o, BatchFailed) and "boom" in str(o) for o in outcomes)
    assert float(after[0][0][0]) == 4


def test_a_bad_item_fails_only_its_request_with_its_own_index():
    async def main():
        model = FakeModel()
        b = await started(model, wait_ms=100)
        outcomes = await asyncio.gather(b.submit([1, "bad-x"], ["k", "k"]), b.submit([2], ["k"]),
                                        return_exceptions=True)
        await b.stop()
        return model, outcomes

    model, (bad, good) = run(main())
    assert len(model.calls) == 1
    assert isinstance(bad, InputError) and bad.index == 1
    assert float(good[0][0][0]) == 2


def test_cancelled_request_is_skipped_and_does_not_disturb_others():
    async def main():
        model = FakeModel()
        model.gate.clear()
        b = await started(model, max_batch_size=8, wait_ms=0)
        first = asyncio.create_task(b.submit([1], ["k"]))
        await wait_entered(model)
        gone = asyncio.create_task(b.submit([2, 3], ["k", "k"]))
        stays = asyncio.create_task(b.submit([4], ["k"]))
        await asyncio.sleep(0)
        gone.cancel()  # the client disconnected while queued
        model.gate.set()
        results = await asyncio.gather(first, stays)
        with pytest.raises(asyncio.CancelledError):
            await gone
        await b.stop()
        return model, results

    model, (first, stays) = run(main())
    assert [items for items, _ in model.calls] == [[1], [4]]
    assert float(stays[0][0][0]) == 4


def test_cancelled_while_running_is_not_completed_twice():
    async def main():
        model = FakeModel()
        model.gate.clear()
        b = await started(model, wait_ms=0)
        gone = asyncio.create_task(b.submit([1, 2], ["k", "k"]))
        await wait_entered(model)
        gone.cancel()
        await asyncio.sleep(0)
        model.gate.set()
        ok = await b.submit([3], ["k"])  # worker still alive after completing a batch with cancelled futures
        await b.stop()
        return ok

    assert float(run(main())[0][0][0]) == 3


def test_stop_fails_running_and_queued_requests_instead_of_hanging():
    async def main():
        model = FakeModel()
        model.gate.clear()
        b = await started(model, wait_ms=0, max_batch_size=1)
        running = asyncio.create_task(b.submit([1], ["k"]))
        await wait_entered(model)
        queued = asyncio.create_task(b.submit([2], ["k"]))
        await asyncio.sleep(0)
        await b.stop()  # the model thread is still inside the call
        model.gate.set()
        return await asyncio.gather(running, queued, return_exceptions=True)

    running, queued = run(main())
    assert isinstance(running, BatchFailed) and "shutting down" in str(running)
    assert isinstance(queued, QueueFull)


def test_run_exclusive_uses_the_model_thread():
    async def main():
        b = await started(FakeModel())
        name = await b.run_exclusive(lambda: threading.current_thread().name)
        await b.stop()
        return name

    assert run(main()).startswith("e5v-model")


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        Batcher(FakeModel(), max_batch_size=0)
    with pytest.raises(ValueError):
        Batcher(FakeModel(), max_queue=0)


def test_adaptive_wait_runs_a_lone_request_at_once():
    async def main():
        model = FakeModel()
        b = await started(model, wait_ms=600_000, adaptive=True)  # a fixed wait would hit the test timeout
        res = await b.submit([1], ["k"])
        await b.stop()
        return res

    assert float(run(main())[0][0][0]) == 1


def test_adaptive_wait_holds_the_batch_for_announced_requests():
    async def main():
        model = FakeModel()
        b = await started(model, wait_ms=600_000, adaptive=True)
        with b.arriving():  # a request is being parsed: the batch waits for it
            first = asyncio.create_task(b.submit([1], ["k"]))
            for _ in range(5):
                await asyncio.sleep(0)
            assert model.calls == [] and b.queue_depth == 1
            futures = b.submit_nowait([2], ["k"])
        results = await asyncio.gather(first, b.wait(futures))
        await b.stop()
        return model, results

    model, results = run(main())
    assert [sorted(items) for items, _ in model.calls] == [[1, 2]]
    assert [float(r[0][0][0]) for r in results] == [1, 2]


def test_adaptive_wait_expects_as_many_items_as_the_last_batch():
    async def main():
        model = FakeModel()
        b = await started(model, wait_ms=600_000, adaptive=True)
        await b.submit([1, 2, 3], ["k"] * 3)  # one batch of 3
        first = asyncio.create_task(b.submit([4], ["k"]))
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(model.calls) == 1 and b.queue_depth == 1  # waits: the last batch had 3 items
        rest = await b.submit([5, 6], ["k", "k"])
        await first
        await b.stop()
        return model, rest

    model, rest = run(main())
    assert [sorted(items) for items, _ in model.calls] == [[1, 2, 3], [4, 5, 6]]
    assert [float(v[0]) for v, _ in rest] == [5, 6]


def test_counted_exclusive_calls_take_queue_places_and_do_not_run_once_their_caller_left():
    """Searches (run_exclusive(counted=True)) count against max_queue and are dropped if cancelled first."""
    async def main():
        b = await started(FakeModel(), max_queue=2)
        gate, entered, ran = threading.Event(), threading.Event(), []

        def slow():
            entered.set()
            gate.wait(10)
            ran.append("slow")

        first = asyncio.ensure_future(b.run_exclusive(slow, counted=True))
        await asyncio.to_thread(entered.wait, 10)
        second = asyncio.ensure_future(b.run_exclusive(lambda: ran.append("abandoned"), counted=True))
        await asyncio.sleep(0.05)
        assert b.queue_depth == 2
        with pytest.raises(QueueFull):
            await b.run_exclusive(lambda: ran.append("refused"), counted=True)
        with pytest.raises(QueueFull):
            b.submit_nowait(["x"], [None])  # items and searches share the queue's places
        second.cancel()  # its client went away while it waited for the model thread
        await asyncio.sleep(0)  # the loop handles the cancellation (as a disconnect is handled) ...
        gate.set()  # ... before the model thread is free again
        await first
        with pytest.raises(asyncio.CancelledError):
            await second
        await b.run_exclusive(lambda: ran.append("later"), counted=True)
        assert ran == ["slow", "later"] and b.queue_depth == 0
        await b.stop()

    run(main())
