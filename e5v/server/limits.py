"""Server limits and the checks that enforce them before anything reaches the model.

Every limit answers a 4xx with an OpenAI error body naming the limit, the value and how to change it.
Text over ``max_text_chars`` is refused (400, the OpenAI behaviour) unless ``text_overflow="truncate"``;
independently of that, the encoder truncates text that does not fit the model's token limit (inside the
text slot, keeping the prompt template intact).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from .errors import APIError

TEXT_OVERFLOW = ("error", "truncate")


@dataclass(frozen=True)
class Limits:
    """Per-request limits (all configurable from ``e5v serve``)."""

    max_body_bytes: int = 32 * 1024 * 1024  # raw request body; larger -> 413
    max_items: int = 256  # inputs per request; more -> 400
    max_image_bytes: int = 16 * 1024 * 1024  # one encoded image after base64 decoding / download; more -> 400
    max_image_pixels: int = 25_000_000  # width x height, read from the header before decoding; more -> 400
    max_text_chars: int = 20_000  # characters per text; more -> 400 or truncation (text_overflow)
    text_overflow: str = "error"  # "error" (400) or "truncate" (cut to max_text_chars)

    def __post_init__(self) -> None:
        if self.text_overflow not in TEXT_OVERFLOW:
            raise ValueError(f"text_overflow must be one of {TEXT_OVERFLOW}")
        for name in ("max_body_bytes", "max_items", "max_image_bytes", "max_image_pixels", "max_text_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


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
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limits.max_body_bytes:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)
