"""``--api-key``: every route except /health and the page shell / requires ``Authorization: Bearer <key>``.

The comparison is constant-time (``hmac.compare_digest`` on bytes) so response timing does not reveal
how much of a guessed key was right. /health stays open for load balancers and orchestrators.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response

#: /health for orchestrators; / is the search page's static shell (no data: its API calls carry the key).
OPEN_PATHS = frozenset({"/health", "/"})


class BearerAuth:
    """Pure ASGI middleware (runs before routing, so unknown paths are protected too)."""

    def __init__(self, app: ASGIApp, api_key: str):
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if not self.authorized(dict(scope["headers"]).get(b"authorization", b"")):
            response = error_response(401, "missing or invalid API key: send 'Authorization: Bearer <key>'",
                                      "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def authorized(self, header: bytes) -> bool:
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer":
            hmac.compare_digest(self.key, self.key)  # same work either way
            return False
        return hmac.compare_digest(token.strip(), self.key)
