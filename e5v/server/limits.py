"""Server limits and the checks that enforce them before anything reaches the model.

Every limit answers a 4xx with an OpenAI error body naming the limit, the value and how to change it.
Text over ``max_text_chars`` is refused (400, the OpenAI behaviour) unless ``text_overflow="truncate"``;
independently of that, the encoder truncates text that does not fit the model's token limit (inside the
text slot, keeping the prompt template intact).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.requests import ClientDisconnect

from .errors import APIError, ClientGone

TEXT_OVERFLOW = ("error", "truncate")


@dataclass(frozen=True)
class Limits:
    """Per-request limits (all configurable from ``e5v serve``)."""

    max_body_bytes: int = 32 * 1024 * 1024  # raw request body; larger -> 413
    max_items: int = 256  # inputs per request; more -> 400
    max_image_bytes: int = 16 * 1024 * 1024  # one encoded image after base64 decoding / download; more -> 400
    max_image_pixels: int = 25_000_000  # width x height, read from the header before decoding; more -> 400
    max_request_pixels: int = 64_000_000  # all images of one request together, from their headers; more -> 400
    max_text_chars: int = 20_000  # characters per text; more -> 400 or truncation (text_overflow)
    text_overflow: str = "error"  # "error" (400) or "truncate" (cut to max_text_chars)
    body_timeout_s: float = 30.0  # the whole body must arrive within this; slower -> 408 (slow-body clients)
    max_json_depth: int = 32  # nesting of arrays/objects in a body; deeper -> 400 (real requests need ~6)

    def __post_init__(self) -> None:
        if self.text_overflow not in TEXT_OVERFLOW:
            raise ValueError(f"text_overflow must be one of {TEXT_OVERFLOW}")
        for name in ("max_body_bytes", "max_items", "max_image_bytes", "max_image_pixels", "max_request_pixels",
                     "max_text_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.body_timeout_s <= 0 or self.max_json_depth < 2:
            raise ValueError("body_timeout_s must be > 0 and max_json_depth >= 2")


@dataclass(frozen=True)
class RemoteImages:
    """Policy for ``http(s)`` image URLs. Off by default: fetching arbitrary URLs is an SSRF hole."""

    enabled: bool = False
    hosts: tuple[str, ...] = ()  # allowed host names; "*.example.com" matches subdomains; "*" any public host
    max_bytes: int = 16 * 1024 * 1024  # download size cap
    timeout_s: float = 5.0  # total time per image (connect + all redirects + body)
    max_redirects: int = 3  # each hop is re-checked (scheme, allowlist, public address)
    allow_private: bool = False  # also fetch from private/loopback addresses (only for trusted networks/tests)
    schemes: tuple[str, ...] = field(default=("http", "https"))


def check_text(text: str, limits: Limits, param: str) -> str:
    """Apply ``max_text_chars``: refuse (400) or truncate, as configured."""
    if len(text) <= limits.max_text_chars:
        return text
    if limits.text_overflow == "truncate":
        return text[: limits.max_text_chars]
    raise APIError(400, f"{param}: text is {len(text):,} characters, over the server's limit of "
                        f"{limits.max_text_chars:,} (server option --max-text-chars)", "text_too_long", param)


def check_items(n: int, limits: Limits) -> None:
    if n == 0:
        raise APIError(400, "input is empty: give at least one item", "empty_input", "input")
    if n > limits.max_items:
        raise APIError(400, f"{n} inputs in one request, over the server's limit of {limits.max_items} "
                            "(server option --max-items); split the request", "too_many_inputs", "input")


def check_image_bytes(size: int, limits: Limits, param: str) -> None:
    if size == 0:
        raise APIError(400, f"{param}: the image is empty (0 bytes)", "invalid_image", param)
    if size > limits.max_image_bytes:
        raise APIError(400, f"{param}: image is {size:,} bytes, over the server's limit of "
                            f"{limits.max_image_bytes:,} (server option --max-image-bytes)", "image_too_large", param)


def check_request_pixels(pixels: int, limits: Limits) -> None:
    if pixels > limits.max_request_pixels:
        raise APIError(400, f"the request's images hold {pixels:,} pixels together, over the server's limit of "
                            f"{limits.max_request_pixels:,} (server option --max-request-pixels); split the "
                            "request or send smaller images", "images_too_large", "input")


class PixelBudget:
    """Decoded pixels the server has accepted and not yet answered, across all requests.

    Queued images are held encoded (a few kB can claim 25 Mpx), so the item-count queue limit does not bound
    the decoding work or memory ahead; this does. Reserved when a request is queued, released per item as its
    future completes (answered, failed or cancelled). Event-loop only: no lock needed.
    """

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError("the pixel budget must be >= 1")
        self.limit = limit
        self.used = 0

    def fits(self, pixels: int) -> bool:
        return self.used + pixels <= self.limit

    def hold(self, futures: list, pixels: list[int]) -> None:
        """Count ``pixels[i]`` until ``futures[i]`` is done (caller checked ``fits`` first)."""
        for future, n in zip(futures, pixels):
            if n:
                self.used += n
                future.add_done_callback(lambda _f, n=n: self._release(n))

    def _release(self, n: int) -> None:
        self.used -= n


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request body, refusing (413) more than ``max_body_bytes`` without buffering it all first."""
    too_big = APIError(413, f"request body is over the server's limit of {limits.max_body_bytes:,} bytes "
                            "(server option --max-body-bytes)", "request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limits.max_body_bytes:
                raise too_big
        except ValueError:
            raise APIError(400, "invalid Content-Length header", "invalid_request") from None

    async def receive_all() -> bytes:
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limits.max_body_bytes:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(receive_all(), limits.body_timeout_s)
    except asyncio.TimeoutError:
        raise APIError(408, f"the request body did not arrive within {limits.body_timeout_s:g} s",
                       "request_timeout") from None
    except ClientDisconnect:
        raise ClientGone() from None


def parse_json(raw: bytes, limits: Limits) -> Any:
    """Parse a body; malformed, or nested deeper than ``max_json_depth`` (checked without recursion), is 400."""
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}", "invalid_json") from None
    except RecursionError:
        value, depth = None, limits.max_json_depth + 1
    else:
        depth = json_depth(value, limits.max_json_depth + 1)
    if depth > limits.max_json_depth:
        raise APIError(400, f"the request body nests arrays/objects deeper than {limits.max_json_depth} levels",
                       "invalid_json")
    return value


def json_depth(value: Any, stop: int) -> int:
    """Nesting depth of parsed JSON, iteratively, giving up once ``stop`` is reached."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (list, dict)):
            deepest = max(deepest, depth)
            if deepest >= stop:
                return deepest
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest
