"""The FastAPI application: OpenAI-compatible ``/v1/embeddings`` plus models, health, metrics and search.

Each request: read the body within its size limit -> parse (schemas.py, 400 naming the field) -> fetch and
decode images off the event loop (images.py, limits.py) -> queue the items in the dynamic batcher -> answer
in OpenAI's shape with real token counts. The model is only ever called through ``E5V.encode_with_details``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from contextlib import asynccontextmanager
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import InputError
from ..imagefile import ImageLimits, ImageSource, probe
from .auth import BearerAuth
from .batcher import BatchFailed, QueueFull
from .errors import APIError, install_handlers
from .guard import RequestGuard
from .images import decode_data_uri, fetch_image
from .limits import check_request_pixels, parse_json, read_body
from .schemas import RawItem, parse_embedding_request
from .state import ServerConfig, ServerState

ROUTES = ("/v1/embeddings", "/v1/search", "/v1/models", "/health", "/metrics")


def create_app(config: ServerConfig, model: Any = None, loader: Callable[[], Any] | None = None,
               on_load_error: Callable[[BaseException], None] | None = None) -> FastAPI:
    """Build the app. Pass a loaded ``E5V`` as ``model`` or a ``loader`` that returns one (run at startup)."""
    state = ServerState(config, model=model, loader=loader, on_load_error=on_load_error)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.start()
        loading = asyncio.create_task(state.load())
        yield
        loading.cancel()
        await state.batcher.stop()

    app = FastAPI(title="e5v embedding server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.e5v = state
    install_handlers(app)

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.ready:
            return JSONResponse({"status": "ok", "model": state.name})
        status = "error" if state.load_error else "loading"
        return JSONResponse({"status": status, "error": state.load_error}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        state.require_ready()
        config_ = state.model.embedding_config()
        data = [{"id": name, "object": "model", "created": state.created, "owned_by": "e5v",
                 "embedding_config": config_} for name in config.model_names]
        return JSONResponse({"object": "list", "data": data})

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        state.require_ready()
        body = await read_json(request, state)  # before announcing: a slow body must not hold batches open
        with state.batcher.arriving():  # a forming batch may wait for this request (see Batcher.arriving)
            req = parse_embedding_request(body, config.limits, state.model.embedding_dim)
            state.check_model_name(req.model)
            items = await resolve_items(req.items, state)
            keys = [(req.instruction, "text" if raw.image is None else "image") for raw in req.items]
            futures = queue(state, items, keys)
        results = await until_disconnect(request, collect(state, futures, req.items), state, len(items))
        if results is None:
            return Response(status_code=499)
        data = [{"object": "embedding", "index": i, "embedding": encode_vector(vec, req.encoding_format)}
                for i, (vec, _) in enumerate(results)]
        tokens = sum(n for _, n in results)
        state.metrics.embedded([raw.kind for raw in req.items], tokens)
        return JSONResponse({"object": "list", "data": data, "model": state.name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    if config.db:
        from .search import add_search_route
        from .web import add_web_routes

        add_search_route(app, state)
        add_web_routes(app, state)

    # add_middleware wraps what is there, so the last added runs first: metrics -> guard -> auth -> routes
    if config.api_key:
        app.add_middleware(BearerAuth, api_key=config.api_key)
    app.add_middleware(RequestGuard, allowed_hosts=config.allowed_hosts)
    app.add_middleware(MetricsMiddleware, state=state)
    return app


async def read_json(request: Request, state: ServerState) -> Any:
    """The body as JSON, within the size, time and depth limits (limits.py)."""
    return parse_json(await read_body(request, state.config.limits), state.config.limits)


async def resolve_items(raw_items: list[RawItem], state: ServerState) -> list:
    """RawItems -> encoder items (str, probed image, or {"image", "text"}).

    Images are fetched and their headers checked here (format, pixels per image and per request) but not
    decoded: the encoder decodes them once, batch by batch, on the model thread.
    """
    limits = state.config.limits
    image_limits = ImageLimits(max_pixels=limits.max_image_pixels, formats=state.model.image_limits.formats)

    async def one(raw: RawItem) -> Any:
        if raw.image is None:
            return raw.text
        if raw.image[:5].lower() == "data:":
            data = decode_data_uri(raw.image, limits, raw.param)
        else:
            data = await fetch_image(raw.image, state.config.remote, limits, raw.param)
        try:
            image = await asyncio.to_thread(probe, data, None, image_limits)
        except InputError as exc:
            raise APIError(400, f"{raw.param}: {exc.reason}", "invalid_image", raw.param) from None
        return image if raw.text is None else {"image": image, "text": raw.text}

    if all(raw.image is None for raw in raw_items):  # texts: no I/O, no tasks
        return [raw.text for raw in raw_items]
    items = list(await asyncio.gather(*(one(raw) for raw in raw_items)))
    check_request_pixels(sum(image_pixels(item) for item in items), limits)
    return items


def image_pixels(item: Any) -> int:
    """Pixels an item's image will decode to (0 for text), from its probed header."""
    image = item.get("image") if isinstance(item, dict) else item
    return image.pixels if isinstance(image, ImageSource) else 0


def queue(state: ServerState, items: list, keys: list) -> list[asyncio.Future]:
    """Queue all items or none; a full queue, or queued images over the pixel budget, is 503 + Retry-After."""
    pixels = [image_pixels(item) for item in items]
    if not state.pixels.fits(sum(pixels)):
        raise busy(state, f"queued images hold {state.pixels.used:,} of {state.pixels.limit:,} pixels")
    try:
        futures = state.batcher.submit_nowait(items, keys)
    except QueueFull as exc:
        raise busy(state, str(exc)) from None
    state.pixels.hold(futures, pixels)
    return futures


def busy(state: ServerState, why: str) -> APIError:
    return APIError(503, f"the server is busy ({why}); retry later", "queue_full",
                    headers={"Retry-After": str(state.config.retry_after_s)})


async def collect(state: ServerState, futures: list[asyncio.Future], raw_items: list[RawItem]) -> list:
    """Batcher errors -> HTTP errors: a bad item 400 naming it, a failed batch 500, shutdown 503."""
    try:
        return await state.batcher.wait(futures)
    except QueueFull as exc:
        raise APIError(503, f"the server is shutting down ({exc})", "shutting_down") from None
    except InputError as exc:
        param = raw_items[exc.index].param if exc.index is not None else None
        raise APIError(400, f"{param}: {exc.reason}", "invalid_input", param) from None
    except BatchFailed as exc:
        raise APIError(500, str(exc), "batch_failed") from None


async def until_disconnect(request: Request, work, state: ServerState, n_items: int) -> Any:
    """Await ``work`` unless the client disconnects first; then cancel it (its queued items are skipped)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if task.done():
        return task.result()
    task.cancel()
    state.metrics.cancelled(n_items)
    return None


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """float: a JSON list; base64: little-endian float32 bytes, as OpenAI's clients decode them."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return np.asarray(vector, dtype=np.float32).tolist()


class MetricsMiddleware:
    """Counts requests by route and status and times them (pure ASGI: does not interfere with streaming)."""

    def __init__(self, app: ASGIApp, state: ServerState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        route = scope["path"] if scope["path"] in ROUTES else "other"
        try:
            await self.app(scope, receive, capture)
        finally:
            self.state.metrics.request(route, status, time.perf_counter() - started)
