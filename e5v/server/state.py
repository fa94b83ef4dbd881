"""What the running server holds: config, the model (loaded in the background), the batcher, metrics.

The model loads after the server starts listening, so ``/health`` can say "loading" (503) until the model
is loaded AND a warm-up encode (one text, one image) has run through the real batching path; only then
does it answer 200 and do the other routes accept work.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .batcher import Batcher
from .errors import APIError
from .limits import Limits, PixelBudget, RemoteImages
from .metrics import Metrics

log = logging.getLogger("e5v.server")


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``e5v serve`` configures (see docs/server.md for the defaults' reasons)."""

    model_names: tuple[str, ...] = ("e5v",)  # names clients may send as "model"; the first is reported
    limits: Limits = field(default_factory=Limits)
    remote: RemoteImages = field(default_factory=RemoteImages)
    api_key: str | None = None  # require "Authorization: Bearer <key>" on every route but /health
    max_batch_size: int = 32  # items per model call
    batch_wait_ms: float = 5.0  # how long the worker waits for a batch to fill
    adaptive_wait: bool = True  # wait only while announced requests are being parsed; False: always wait
    max_queue: int = 1024  # items waiting; beyond -> 503 + Retry-After
    max_queued_pixels: int = 200_000_000  # image pixels accepted and not yet answered; beyond -> 503
    retry_after_s: int = 1
    db: str | None = None  # a store directory: enables POST /v1/search
    allowed_hosts: tuple[str, ...] = ()  # Host names answered besides loopback ones ("*": any; see guard.py)
    allow_sql_filter: bool = False  # accept raw SQL "where" in /v1/search (trusted clients only)


class ServerState:
    def __init__(self, config: ServerConfig, model: Any = None, loader: Callable[[], Any] | None = None,
                 on_load_error: Callable[[BaseException], None] | None = None):
        if model is None and loader is None:
            raise ValueError("give a model or a loader")
        self.config = config
        self.model = model
        self.loader = loader
        self.on_load_error = on_load_error
        self.metrics = Metrics(queue_depth=lambda: self.batcher.queue_depth if self.batcher else 0)
        self.batcher: Batcher | None = None
        self.pixels = PixelBudget(config.max_queued_pixels)
        self.store: Any = None
        self.ready = False
        self.load_error: str | None = None
        self.created = int(time.time())

    @property
    def name(self) -> str:
        return self.config.model_names[0]

    def run(self, items: list, key: tuple) -> Any:
        """Model thread: one call to the shared encoder (length-sorted, left-padded batches inside)."""
        instruction, _modality = key
        return self.model.encode_with_details(items, batch_size=self.config.max_batch_size,
                                              instruction=instruction, show_progress_bar=False)

    async def start(self) -> None:
        c = self.config
        self.batcher = Batcher(self.run, c.max_batch_size, c.batch_wait_ms, c.max_queue, on_batch=self.metrics.batch,
                               adaptive=c.adaptive_wait)
        await self.batcher.start()

    async def load(self) -> None:
        """Load the model (if needed), warm up through the batcher, open the store; then mark ready."""
        assert self.batcher is not None
        try:
            if self.model is None:
                log.info("loading model ...")
                self.model = await self.batcher.run_exclusive(self.loader)
            from PIL import Image

            warm = [("warm-up", (None, "text")), (Image.new("RGB", (64, 48), (200, 100, 50)), (None, "image"))]
            await self.batcher.submit([w for w, _ in warm], [k for _, k in warm])
            if self.config.db:
                from ..store import Store

                self.store = await self.batcher.run_exclusive(Store.open, self.config.db, self.model)
            self.ready = True
            log.info("ready: %s", self.model)
        except Exception as exc:  # reported by /health and the CLI; never a half-ready server
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("model load failed: %s", self.load_error)
            if self.on_load_error is not None:
                self.on_load_error(exc)

    @property
    def image_limits(self) -> Any:
        """Header checks for request images: the server's pixel limit with the model's format allowlist
        (built once: an ImageLimits validates its formats against Pillow's registry)."""
        if getattr(self, "_image_limits", None) is None:
            from ..imagefile import ImageLimits

            self._image_limits = ImageLimits(max_pixels=self.config.limits.max_image_pixels,
                                             formats=self.model.image_limits.formats)
        return self._image_limits

    def require_ready(self) -> None:
        if self.load_error:
            raise APIError(503, f"the model failed to load: {self.load_error}", "model_load_failed")
        if not self.ready:
            raise APIError(503, "the model is still loading; retry shortly (GET /health says when it is ready)",
                           "model_loading", headers={"Retry-After": str(self.config.retry_after_s)})

    def check_model_name(self, name: str | None) -> None:
        if name is not None and name not in self.config.model_names:
            raise APIError(404, f"model {name!r} is not served here; available: {list(self.config.model_names)}",
                           "model_not_found", "model")
