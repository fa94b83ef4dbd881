"""Prometheus text exposition (format 0.0.4) for the few series the server keeps, without a dependency.

Series: requests by route and status, embedded items by kind, tokens, batch sizes (histogram), queue depth
(gauge, read at scrape time), request latency (histogram), items skipped because their client went away.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # last slot: +Inf only
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        out, running = [], 0
        sep = "," if labels else ""
        for bound, n in zip(self.buckets, self.counts):
            running += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {running}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{suffix} {self.sum:.6f}")
        out.append(f"{name}_count{suffix} {self.count}")
        return out


class Metrics:
    """Thread-safe counters and histograms; ``render()`` gives the /metrics body."""

    def __init__(self, queue_depth: Callable[[], int] = lambda: 0):
        self._lock = threading.Lock()
        self.queue_depth = queue_depth
        self.requests: dict[tuple[str, int], int] = {}
        self.items: dict[str, int] = {}
        self.tokens = 0
        self.cancelled_items = 0
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)
        self.latency: dict[str, Histogram] = {}

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] = self.requests.get((route, status), 0) + 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def embedded(self, kinds: list[str], tokens: int) -> None:
        with self._lock:
            for kind in kinds:
                self.items[kind] = self.items.get(kind, 0) + 1
            self.tokens += tokens

    def batch(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batch_sizes.observe(size)
            self.batch_seconds.observe(seconds)

    def cancelled(self, n: int) -> None:
        with self._lock:
            self.cancelled_items += n

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP e5v_requests_total HTTP requests by route and status.",
                     "# TYPE e5v_requests_total counter"]
            lines += [f'e5v_requests_total{{route="{r}",status="{s}"}} {n}'
                      for (r, s), n in sorted(self.requests.items())]
            lines += ["# HELP e5v_items_total Items embedded, by kind.", "# TYPE e5v_items_total counter"]
            lines += [f'e5v_items_total{{kind="{k}"}} {n}' for k, n in sorted(self.items.items())]
            lines += ["# HELP e5v_tokens_total Prompt tokens embedded (image tokens included).",
                      "# TYPE e5v_tokens_total counter", f"e5v_tokens_total {self.tokens}"]
            lines += ["# HELP e5v_cancelled_items_total Queued items dropped because their client disconnected.",
                      "# TYPE e5v_cancelled_items_total counter", f"e5v_cancelled_items_total {self.cancelled_items}"]
            lines += ["# HELP e5v_queue_depth Items waiting for a batch.", "# TYPE e5v_queue_depth gauge",
                      f"e5v_queue_depth {self.queue_depth()}"]
            lines += ["# HELP e5v_batch_size Items per model call.", "# TYPE e5v_batch_size histogram"]
            lines += self.batch_sizes.lines("e5v_batch_size")
            lines += ["# HELP e5v_batch_seconds Time per model call.", "# TYPE e5v_batch_seconds histogram"]
            lines += self.batch_seconds.lines("e5v_batch_seconds")
            lines += ["# HELP e5v_request_seconds Request latency by route.",
                      "# TYPE e5v_request_seconds histogram"]
            for route, hist in sorted(self.latency.items()):
                lines += hist.lines("e5v_request_seconds", f'route="{route}"')
        return "\n".join(lines) + "\n"
