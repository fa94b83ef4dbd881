"""Host and content-type checks: defences against DNS rebinding and cross-site requests to a local server.

A web page the user visits can make their browser send requests to ``http://127.0.0.1:8000`` (a "simple"
cross-origin POST with ``Content-Type: text/plain`` needs no CORS preflight), and with DNS rebinding it can
even read the answers: ``evil.example`` is re-pointed at 127.0.0.1 and the page's own origin now reaches
the server. Two checks close both holes:

* ``Host`` must be a name the server answers to: loopback names by default, plus ``--allowed-host``
  entries (``*`` turns the check off, e.g. behind a proxy that checks it). A rebinding page sends its own
  name (``evil.example``) and gets 421.
* requests with a body must say ``Content-Type: application/json`` (415 otherwise), which a cross-site page
  cannot send without a CORS preflight, which this server never grants.

Pure ASGI, so it runs before routing, auth and body reading.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from .images import host_allowed  # the same host patterns as the remote-image allowlist

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def host_name(header: str) -> str:
    """``Host`` header -> lower-case name without port (``[::1]:8000`` -> ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    if header.count(":") == 1:
        header = header.rsplit(":", 1)[0]
    return header.rstrip(".")


class RequestGuard:
    """421 for a foreign ``Host``, 415 for a POST body that is not JSON (OpenAI-style error bodies)."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...] = ()):
        self.app = app
        self.allowed = LOOPBACK_HOSTS + tuple(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        name = host_name(headers.get("host", ""))
        if not host_allowed(name, self.allowed):
            await _refuse(send, 421, f"this server does not answer to the host {name or '(none)'!r}; start it "
                                     "with --allowed-host NAME to add a name (DNS-rebinding protection)",
                          "host_not_allowed")
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media != "application/json":
                await _refuse(send, 415, f"request bodies must be JSON (Content-Type: application/json), not "
                                         f"{media or 'unspecified'!r}", "unsupported_media_type")
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, message: str, code: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code,
                                 "param": None}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
