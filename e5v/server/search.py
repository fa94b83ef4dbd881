"""``POST /v1/search`` (enabled by ``--db``): query a store built by ``e5v index`` with text, an image or both.

Body: ``{"query": "text" | {"image": "data:..."} | {"image": ..., "text": ...} | {"id": "<item id>"}, "k": 10,
"filter": null, "kind": null}``; ``filter`` is a structured metadata filter (``e5v.store.filters``); a raw
SQL ``where`` is refused unless the server runs with ``--allow-sql-filter``; ``{"id": ...}`` searches with a stored item's own vector ("more like this"). The store embeds the query with the same model; that call runs on the model thread
between batches (``Batcher.run_exclusive``), so searches and embeddings never use the model at once.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..errors import StoreError
from ..items import KINDS
from ..store.filters import FilterError, compile_filter
from .batcher import QueueFull
from .errors import APIError
from .requests import busy, read_json, resolve_items, until_disconnect
from .schemas import parse_query

MAX_K = 1000


def add_search_route(app: FastAPI, state: Any) -> None:

    @app.post("/v1/search")
    async def search(request: Request) -> Response:
        state.require_ready()
        body = await read_json(request, state)
        if not isinstance(body, dict) or "query" not in body:
            raise APIError(400, "the body must be a JSON object with a 'query'", "invalid_request", "query")
        state.check_model_name(body.get("model"))
        k = body.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise APIError(400, f"k must be an integer from 1 to {MAX_K}", "invalid_request", "k")
        where, kind, structured = body.get("where"), body.get("kind"), body.get("filter")
        if where is not None and not state.config.allow_sql_filter:
            raise APIError(400, "raw SQL 'where' filters are disabled on this server; use 'filter' (e.g. "
                                '{"source": "web"}) or start it with --allow-sql-filter', "sql_filter_disabled", "where")
        if where is not None and not isinstance(where, str):
            raise APIError(400, "'where' must be a string", "invalid_request", "where")
        if kind is not None and kind not in KINDS:
            raise APIError(400, f"'kind' must be one of {list(KINDS)}", "invalid_request", "kind")
        try:
            if structured is not None:
                compile_filter(structured)  # refuse a malformed filter before any work is queued
        except FilterError as exc:
            raise APIError(400, str(exc), "invalid_filter", "filter") from None
        query_spec = body["query"]
        if isinstance(query_spec, dict) and set(query_spec) == {"id"}:  # "more like this": a stored item's vector
            row = await asyncio.to_thread(state.store.get, query_spec["id"]) if isinstance(query_spec["id"], str) else None
            if row is None:
                raise APIError(404, f"no item {query_spec['id']!r} in the store", "not_found", "query")
            query = row["vector"]
        else:
            raw = parse_query(query_spec, state.config.limits)
            (query,) = await resolve_items([raw], state)
        def run() -> list[dict]:
            return state.store.search(query, k=k, where=where, kind=kind, filter=structured)

        try:
            hits = await until_disconnect(request, state.batcher.run_exclusive(run, counted=True), state, 1)
            if hits is None:  # the client left while the search waited: it never ran
                return Response(status_code=499)
        except QueueFull as exc:
            raise busy(state, str(exc)) from None
        except ValueError as exc:  # InputError (bad query item), unknown kind, wrong vector size
            raise APIError(400, f"search failed: {exc}", "invalid_request") from None
        except StoreError as exc:  # with a filter, most likely the filter; otherwise the store itself
            filtered = where is not None or structured is not None
            raise APIError(400 if filtered else 500, f"search failed: {exc}",
                           "invalid_request" if filtered else "store_error") from None
        data = [{"object": "search_result", "rank": i, **_jsonable(hit)} for i, hit in enumerate(hits)]
        return JSONResponse({"object": "list", "data": data, "model": state.name})


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays and NaN from a store row -> plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
