"""Queue behaviour of the real server: 503 + Retry-After when full, disconnecting clients, text truncation,
remote images off by default, and /health before the model is ready."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest
import uvicorn
from server_util import cos, free_port, serve

NAME = "e5v-test"
WAIT_MS = 3000  # the worker holds a batch open this long, so queued items stay queued while we look


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def url(tiny_model_path):
    with serve(tiny_model_path, "--batch-wait-ms", str(WAIT_MS), "--fixed-batch-wait", "--max-batch-size", "32", "--max-queue", "4",
               "--max-items", "4", "--text-overflow", "truncate", "--max-text-chars", "50",
               "--max-request-pixels", "250000", "--max-queued-pixels", "300000") as base:
        yield base


def embed(url: str, texts: list[str], timeout: float = 60.0) -> httpx.Response:
    return httpx.post(url + "/v1/embeddings", json={"model": NAME, "input": texts}, timeout=timeout)


def test_full_queue_answers_503_with_retry_after(url):
    first: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: first.append(embed(url, ["a", "b", "c", "d"])))
    thread.start()
    wait_for(lambda: metric(url, "e5v_queue_depth") == 4)  # the queue (4 items) is full
    refused = embed(url, ["e"])
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"
    thread.join(60)
    assert first[0].status_code == 200 and len(first[0].json()["data"]) == 4
    assert embed(url, ["e"]).status_code == 200  # accepted again once the queue drained


def test_a_client_that_disconnects_is_dropped_from_the_queue(url, model):
    cancelled = metric(url, "e5v_cancelled_items_total")
    batched = metric(url, "e5v_batch_size_sum")
    with pytest.raises(httpx.ReadTimeout):
        embed(url, ["gone 1", "gone 2"], timeout=0.5)  # gives up long before the batch runs
    wait_for(lambda: metric(url, "e5v_cancelled_items_total") == cancelled + 2)
    ok = embed(url, ["still here"])
    assert ok.status_code == 200
    assert cos(ok.json()["data"][0]["embedding"], model.encode(["still here"])[0]) >= 0.9999
    assert metric(url, "e5v_batch_size_sum") == batched + 1  # the abandoned items never reached the model


def embed_images(url: str, sizes: list[tuple[int, int]], timeout: float = 60.0) -> httpx.Response:
    from PIL import Image
    from server_util import data_uri, png_bytes

    uris = [data_uri(png_bytes(Image.new("RGB", size, (90, 30, 200)))) for size in sizes]
    return httpx.post(url + "/v1/embeddings", json={"model": NAME, "modality": "image", "input": uris},
                      timeout=timeout)


def test_pixel_budgets_are_checked_from_headers_per_request_and_across_the_queue(url):
    """A few kB of PNG can claim many pixels: requests and the queue are bounded in pixels, not bytes."""
    over = embed_images(url, [(400, 400), (400, 300)])  # 280,000 > 250,000 pixels in one request
    assert over.status_code == 400 and over.json()["error"]["code"] == "images_too_large"
    assert "--max-request-pixels" in over.json()["error"]["message"]
    first: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: first.append(embed_images(url, [(400, 400)])))  # 160,000 queued
    thread.start()
    wait_for(lambda: metric(url, "e5v_queue_depth") == 1)
    refused = embed_images(url, [(400, 400)])  # 160,000 more would pass the 300,000 budget
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1", refused.text
    assert "pixels" in refused.json()["error"]["message"]
    thread.join(60)
    assert first[0].status_code == 200
    assert embed_images(url, [(400, 400)]).status_code == 200  # released once answered


def test_long_text_is_truncated_when_configured(url, model):
    text = "a dog runs in the grass " * 4  # 96 characters, limit 50
    got = embed(url, [text]).json()["data"][0]["embedding"]
    assert cos(got, model.encode([text[:50]])[0]) >= 0.9999
    assert cos(got, model.encode([text])[0]) < 0.9999


def test_remote_images_are_refused_by_default(url):
    for link in ("http://127.0.0.1:1/x.png", "https://example.com/cat.png", "http://169.254.169.254/latest"):
        r = httpx.post(url + "/v1/embeddings", json={"model": NAME, "modality": "image", "input": [link]}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "remote_images_disabled"
        assert "SSRF" in r.json()["error"]["message"]


# ----------------------------------------------------------------------------- readiness (in-process uvicorn)
class InProcessServer:
    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        wait_for(lambda: self.server.started)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def test_health_is_503_until_the_model_is_loaded_and_warmed_up(model):
    from e5v.server import ServerConfig, create_app

    release = threading.Event()

    def loader():
        release.wait(60)
        return model

    with InProcessServer(create_app(ServerConfig(model_names=(NAME,)), loader=loader)) as base:
        health = httpx.get(base + "/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        r = httpx.post(base + "/v1/embeddings", json={"model": NAME, "input": "a"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading" and "Retry-After" in r.headers
        release.set()
        wait_for(lambda: httpx.get(base + "/health").status_code == 200)
        assert metric(base, "e5v_batch_size_count") >= 1  # the warm-up went through the batcher
        assert httpx.post(base + "/v1/embeddings", json={"model": NAME, "input": "a"}).status_code == 200


def test_a_model_that_fails_to_load_is_reported():
    from e5v.server import ServerConfig, create_app

    seen: list[BaseException] = []

    def loader():
        raise OSError("no such model: /nowhere")

    with InProcessServer(create_app(ServerConfig(), loader=loader, on_load_error=seen.append)) as base:
        wait_for(lambda: httpx.get(base + "/health").json()["status"] == "error")
        assert "/nowhere" in httpx.get(base + "/health").json()["error"]
        r = httpx.post(base + "/v1/embeddings", json={"input": "a"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_load_failed"
    assert isinstance(seen[0], OSError)


def test_cli_exits_nonzero_when_the_model_cannot_load(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "e5v.cli", "serve", "--model", str(tmp_path / "missing"),
                           "--port", str(free_port()), "--log-level", "critical"],
                          capture_output=True, text=True, timeout=180, env={**__import__("os").environ,
                                                                            "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0 and "failed to load" in proc.stderr
