"""One request's path from body to results, shared by the embeddings and search routes.

read the body within its size/time/depth limits -> resolve items (fetch images, check their headers against
the pixel budgets; no pixel is decoded here) -> queue all of them or none (503 when the queue or the pixel
budget is full) -> collect the results, or cancel them when the client disconnects first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request

from ..errors import InputError
from ..imagefile import ImageSource, probe
from .batcher import BatchFailed, QueueFull
from .errors import APIError
from .images import decode_data_uri, fetch_image
from .limits import check_request_pixels, parse_json, read_body
from .schemas import RawItem
from .state import ServerState


async def read_json(request: Request, state: ServerState) -> Any:
    """The body as JSON, within the size, time and depth limits (limits.py)."""
    return parse_json(await read_body(request, state.config.limits), state.config.limits)


async def resolve_items(raw_items: list[RawItem], state: ServerState) -> list:
    """RawItems -> encoder items (str, probed image, or {"image", "text"}).

    Images are fetched and their headers checked here (format, pixels per image and per request) but not
    decoded: the encoder decodes them once, batch by batch, on the model thread.
    """
    limits = state.config.limits
    image_limits = state.image_limits

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
