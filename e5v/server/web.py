"""The search page (``GET /``) and what it needs: store facts and thumbnails. Enabled with ``--db``.

The page is one static HTML file shipped in the package (no build step) that calls the same JSON API
scripts use (``/v1/search``). Thumbnails are served **by item id only**: the server looks the id up in
the store and reads the path recorded at indexing time, so no request can name a file (no path
traversal, no arbitrary reads). Files that disappeared since indexing get a placeholder image.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, ImageDraw

from .errors import APIError

THUMB_SIZES = (128, 256, 512)
CACHE_ENTRIES = 1024
PLACEHOLDER_HEADER = "X-E5V-Placeholder"


class ThumbnailCache:
    """LRU of encoded JPEG thumbnails keyed by (path, mtime, size, edge): a changed file is re-read."""

    def __init__(self, entries: int = CACHE_ENTRIES):
        self.entries = entries
        self._data: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, edge: int, max_pixels: int) -> bytes | None:
        """JPEG bytes of the file's thumbnail, or None when the file is missing or unreadable."""
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (str(path), stat.st_mtime_ns, stat.st_size, edge)
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        data = make_thumbnail(path, edge, max_pixels)
        if data is not None:
            with self._lock:
                self._data[key] = data
                while len(self._data) > self.entries:
                    self._data.popitem(last=False)
        return data


def make_thumbnail(path: Path, edge: int, max_pixels: int) -> bytes | None:
    """Decode safely (e5v's guards: bombs, animation, EXIF, modes), shrink to ``edge``, encode JPEG."""
    from ..errors import InputError
    from ..inputs import ImageLimits, load_image

    try:
        image = load_image(path, None, ImageLimits(max_pixels=max_pixels))
    except InputError:
        return None
    image.thumbnail((edge, edge))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def placeholder(edge: int) -> bytes:
    """A grey PNG with a crossed frame: 'this file is gone'."""
    image = Image.new("RGB", (edge, edge * 3 // 4), (226, 229, 234))
    draw = ImageDraw.Draw(image)
    w, h = image.size
    draw.rectangle([0, 0, w - 1, h - 1], outline=(170, 176, 186), width=2)
    draw.line([0, 0, w, h], fill=(170, 176, 186), width=2)
    draw.line([0, h, w, 0], fill=(170, 176, 186), width=2)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def page_html() -> str:
    return resources.files("e5v.server").joinpath("static/index.html").read_text(encoding="utf-8")


def add_web_routes(app: FastAPI, state: Any) -> None:
    """GET / (the page), GET /v1/store (facts), GET /v1/items/{id}/thumbnail (JPEG)."""
    cache = ThumbnailCache()
    html = page_html()

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    @app.get("/v1/store")
    async def store_info() -> JSONResponse:
        state.require_ready()
        store = state.store
        count = await asyncio.to_thread(len, store)
        return JSONResponse({"object": "store", "count": count, "model": store.config.get("model"),
                             "dim": store.dim, "ann": store.has_ann, "config": store.config})

    @app.get("/v1/items/{item_id}/thumbnail")
    async def thumbnail(item_id: str, size: int = 256) -> Response:
        state.require_ready()
        if size not in THUMB_SIZES:
            raise APIError(400, f"size must be one of {list(THUMB_SIZES)}", "invalid_request", "size")
        if not item_id.isalnum() or len(item_id) > 128:
            raise APIError(404, "no such item", "not_found", "item_id")
        row = await asyncio.to_thread(state.store.get, item_id)
        if row is None:
            raise APIError(404, f"no item {item_id!r} in the store", "not_found", "item_id")
        if row["kind"] == "text" or not row.get("path"):
            raise APIError(404, f"item {item_id!r} has no image file", "not_found", "item_id")
        data = await asyncio.to_thread(cache.get, Path(row["path"]), size, state.config.limits.max_image_pixels)
        headers = {"Cache-Control": "private, max-age=300"}
        if data is None:
            return Response(placeholder(size), media_type="image/png",
                            headers={**headers, PLACEHOLDER_HEADER: "missing"})
        return Response(data, media_type="image/jpeg", headers=headers)
