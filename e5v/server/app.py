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

from .auth import BearerAuth
from .errors import install_handlers
from .guard import RequestGuard
from .requests import collect, queue, read_json, resolve_items, until_disconnect
from .schemas import parse_embedding_request
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
