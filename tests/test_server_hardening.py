"""The real server against hostile clients: foreign Host headers, non-JSON bodies, slow and abandoned bodies,
deeply nested JSON, and remote-image URLs that try to reach internal addresses."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from server_util import serve

NAME = "e5v-test"


@pytest.fixture(scope="module")
def server(tiny_model_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("hardening") / "server.log"
    with serve(tiny_model_path, "--allowed-host", "embed.example", "--body-timeout", "1.5", log_path=log) as base:
        yield base, log


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def raw_request(base: str, head: bytes, body: bytes = b"", read: bool = True) -> bytes:
    """Send bytes over a plain socket (for requests httpx will not send) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port_of(base)), timeout=30) as s:
        s.sendall(head + body)
        if not read:
            return b""
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def embed(base: str, **kw) -> httpx.Response:
    return httpx.post(base + "/v1/embeddings", json={"model": NAME, "input": ["a dog"]}, timeout=30, **kw)


def metric(base: str, pattern: str) -> float:
    text = httpx.get(base + "/metrics", timeout=10).text
    return sum(float(m) for m in re.findall(pattern + r" ([0-9.e+]+)", text))


# ------------------------------------------------------------------ DNS rebinding / cross-site requests
def test_a_foreign_host_header_is_refused(server):
    base, _ = server
    r = embed(base, headers={"Host": "evil.example"})
    assert r.status_code == 421 and r.json()["error"]["code"] == "host_not_allowed"
    assert "--allowed-host" in r.json()["error"]["message"]
    for host in ("localhost", f"localhost:{port_of(base)}", "127.0.0.1", "[::1]:80", "embed.example",
                 "EMBED.example."):
        assert embed(base, headers={"Host": host}).status_code == 200, host
    assert raw_request(base, b"GET /health HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 421")  # no Host at all


def test_bodies_must_be_json(server):
    """text/plain is what a cross-site page can POST without a preflight; it is refused before parsing."""
    base, _ = server
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": media} if media else {}
        r = httpx.post(base + "/v1/embeddings", content=b'{"model": "e5v-test", "input": ["a"]}', headers=headers,
                       timeout=30)
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type", media
    r = httpx.post(base + "/v1/embeddings", content=b'{"model": "e5v-test", "input": ["a"]}',
                   headers={"Content-Type": "application/json; charset=utf-8"}, timeout=30)
    assert r.status_code == 200


# ------------------------------------------------------------------ bodies: time, disconnects, depth
def head(length: int) -> bytes:
    return (f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def test_a_body_that_never_finishes_gets_408_and_does_not_stall_others(server):
    base, _ = server
    answers: list[bytes] = []
    threads = [threading.Thread(target=lambda: answers.append(raw_request(base, head(500), b'{"input": [')))
               for _ in range(10)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    assert embed(base).status_code == 200  # served while ten bodies hang
    for t in threads:
        t.join(30)
    assert len(answers) == 10 and all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[:1]
    assert all(b"1.5 s" in a for a in answers)


def test_a_client_that_disconnects_mid_body_is_not_a_server_error(server):
    base, log = server
    errors_before = metric(base, r'e5v_requests_total\{route="/v1/embeddings",status="500"\}')
    for _ in range(5):
        raw_request(base, head(1000), b'{"model": "e5v-test", "input": ["half', read=False)
    time.sleep(1.0)
    assert embed(base).status_code == 200
    assert metric(base, r'e5v_requests_total\{route="/v1/embeddings",status="500"\}') == errors_before
    assert metric(base, r'e5v_requests_total\{route="/v1/embeddings",status="499"\}') >= 5
    assert "Traceback" not in log.read_text(errors="replace")


def test_deeply_nested_json_is_a_400(server):
    base, _ = server
    for depth in (200_000, 40):
        body = b"[" * depth + b"]" * depth
        r = httpx.post(base + "/v1/embeddings", content=body, headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 400 and "deeper than 32" in r.json()["error"]["message"], depth
    ok = {"model": NAME, "input": [[{"type": "text", "text": "nested but fine"}]]}
    assert httpx.post(base + "/v1/embeddings", json=ok, timeout=30).status_code == 200


# ------------------------------------------------------------------ remote images: the checked address is the one used
@pytest.mark.parametrize("address", ["[64:ff9b::a9fe:a9fe]", "[::127.0.0.1]", "[2002:a9fe:a9fe::1]",
                                     "[::ffff:169.254.169.254]", "[::ffff:7f00:1]", "[2001:0:4136:e378:8000:63bf:3fff:fdd2]"])
def test_ipv6_forms_of_internal_ipv4_addresses_are_refused(address):
    from e5v.server.images import is_public

    assert not is_public(address.strip("[]"))


def test_public_addresses_and_their_nat64_form_are_allowed():
    from e5v.server.images import is_public

    assert is_public("8.8.8.8") and is_public("64:ff9b::808:808") and is_public("2606:4700:4700::1111")


def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch, images):
    """A rebinding resolver answers the check with one address and a later lookup with another: the
    fetch must not look the name up again. The image host sees the original Host header."""
    from server_util import png_bytes

    from e5v.server.images import fetch_image
    from e5v.server.limits import Limits, RemoteImages

    png, seen_hosts = png_bytes(images["red square"]), []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen_hosts.append(self.headers.get("Host"))
            self.send_response(200)
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    answers = iter(["127.0.0.1"] + ["10.255.255.1"] * 10)  # the check's answer, then a rebound one
    lookups = []

    async def rebinding_getaddrinfo(self, host, *args, **kwargs):
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", rebinding_getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("the name was resolved again"))
    policy = RemoteImages(enabled=True, hosts=("images.test",), allow_private=True, timeout_s=5)
    try:
        data = asyncio.run(fetch_image(f"http://images.test:{port}/cat.png", policy, Limits(), "input[0]"))
    finally:
        httpd.shutdown()
    assert data == png and lookups == ["images.test"] and seen_hosts == [f"images.test:{port}"]


# ------------------------------------------------------------------ in-process: decode once, searches that were abandoned
def test_each_image_is_decoded_once_on_the_model_thread(model, images, monkeypatch):
    """The request path only probes headers; the pixels are decoded once, by the encoder, per batch."""
    from server_util import data_uri, png_bytes
    from test_server_queue import InProcessServer

    from e5v.imagefile import ImageSource
    from e5v.server import ServerConfig, create_app

    decoded: list[str] = []
    original = ImageSource.decode

    def counting(self, index=None, **kwargs):
        decoded.append(threading.current_thread().name)
        return original(self, index, **kwargs)

    with InProcessServer(create_app(ServerConfig(model_names=(NAME,)), model=model)) as base:
        for _ in range(100):
            if httpx.get(base + "/health").status_code == 200:
                break
            time.sleep(0.1)
        monkeypatch.setattr(ImageSource, "decode", counting)
        uris = [data_uri(png_bytes(images[name])) for name in ("red square", "blue tall", "green wide")]
        r = httpx.post(base + "/v1/embeddings", json={"model": NAME, "modality": "image", "input": uris}, timeout=60)
    assert r.status_code == 200, r.text
    assert len(decoded) == 3 and all(name.startswith("e5v-model") for name in decoded), decoded


def test_searches_whose_clients_left_never_run(model, tmp_path):
    """20 searches with a 0.3 s client timeout used to all run (and delay later work); now the ones still
    waiting for the model thread when their client leaves are dropped."""
    from test_server_queue import InProcessServer

    from e5v.server import ServerConfig, create_app
    from e5v.store import Store

    db = tmp_path / "db"
    Store.open(db, model).add([{"text": f"text {i}"} for i in range(5)], show_progress=False)
    app = create_app(ServerConfig(model_names=(NAME,), db=str(db)), model=model)
    with InProcessServer(app) as base:
        for _ in range(100):
            if httpx.get(base + "/health").status_code == 200:
                break
            time.sleep(0.1)
        state = app.state.e5v
        ran: list[int] = []
        search = state.store.search

        def slow_search(*args, **kwargs):
            ran.append(1)
            time.sleep(0.5)
            return search(*args, **kwargs)

        state.store.search = slow_search

        def give_up_early() -> None:
            try:
                httpx.post(base + "/v1/search", json={"query": "text", "k": 2}, timeout=0.3)
            except httpx.TimeoutException:
                pass

        threads = [threading.Thread(target=give_up_early) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(1.5)  # let whatever was already running finish
        ok = httpx.post(base + "/v1/search", json={"query": "text 3", "k": 1}, timeout=30)
    assert ok.status_code == 200 and ok.json()["data"][0]["text"] == "text 3"
    assert len(ran) <= 3 + 1, f"{len(ran)} abandoned searches ran"  # the ones already on the model thread, + ours
