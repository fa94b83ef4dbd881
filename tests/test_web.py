"""The search page in a real headless Chromium against the real server on 127.0.0.1 (issue: search page)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="chromium not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(proc: subprocess.Popen, base: str, timeout: float) -> None:
    """Poll /health until 200; fail with the server's output if it exits or never gets ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(proc.stdout.read().decode())
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not become ready")


@pytest.fixture(scope="module")
def library(tmp_path_factory, model):
    """A store with four generated photos (one deleted after indexing) and a caption manifest."""
    from e5v.store import Store

    root = tmp_path_factory.mktemp("library")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    colours = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "gone": (90, 90, 90)}
    for name, colour in colours.items():
        pixels = np.clip(np.array(colour) + rng.integers(-30, 30, (96, 128, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(photos / f"{name}.png")
    (root / "captions.csv").write_text("text,source\na red square,web\na green field,camera\n")
    db = root / "db"
    store = Store.open(db, model)
    store.add([photos, root / "captions.csv"], show_progress=False)
    (photos / "gone.png").unlink()  # disappeared since indexing -> placeholder
    return root, db


@pytest.fixture(scope="module")
def server(library, tiny_model_path):
    _, db = library
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "e5v.cli", "serve", "--model", str(tiny_model_path), "--db",
                             str(db), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}"
    _wait_ready(proc, base, timeout=180)
    yield base
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def _images_loaded(page) -> list[int]:
    return page.eval_on_selector_all("#results img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")


def test_text_query_shows_cards_with_thumbnails(server, browser, artifacts_dir):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server + "/")
    page.wait_for_function("document.querySelector('#info').textContent.includes('items')")
    page.fill("#q", "a red square")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .card")
    page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
    cards = page.locator("#results .card")
    assert cards.count() >= 4
    assert all(w > 0 for w in _images_loaded(page))
    scores = [float(t.split("score ")[1].split(" ")[0]) for t in page.locator(".score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    assert "source: web" in page.inner_text("#results")  # manifest metadata shown
    page.screenshot(path=str(artifacts_dir / "web-text-query.png"), full_page=True)
    page.close()


def test_upload_image_and_more_like_this(server, browser, library, artifacts_dir):
    root, _ = library
    page = browser.new_page(viewport={"width": 390, "height": 844})  # phone width
    page.goto(server + "/")
    page.set_input_files("#file", str(root / "photos" / "green.png"))
    page.wait_for_selector("#results .card")
    first = page.locator("#results .card").first
    assert first.locator(".path").inner_text().endswith("green.png")  # the image finds itself first
    assert float(first.locator(".score").inner_text().split("score ")[1].split(" ")[0]) > 0.999
    # "more like this" on the red photo: it must rank itself first
    red = page.locator("#results .card", has_text="red.png").first
    red.locator("button.more").click()
    page.wait_for_function("document.querySelector('#results .card .path').textContent.endsWith('red.png')")
    page.screenshot(path=str(artifacts_dir / "web-more-like-this-phone.png"), full_page=True)
    page.close()


def test_composed_query_and_keyboard_only_use(server, browser, library):
    root, _ = library
    page = browser.new_page()
    page.goto(server + "/")
    page.set_input_files("#file", str(root / "photos" / "blue.png"))
    page.wait_for_selector("#results .card")
    page.focus("#q")
    page.keyboard.type("make it red")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#status').textContent.includes('results')")
    assert page.locator("#results .card").count() > 0
    # The drop zone opens the file picker from the keyboard: count the clicks it forwards to the file
    # input (and cancel them, so no native dialog is needed in headless mode).
    page.evaluate("""() => { window.pickerOpened = 0;
        document.getElementById('file').addEventListener('click', e => { window.pickerOpened++; e.preventDefault(); }); }""")
    page.focus("#drop")
    page.keyboard.press("Enter")
    page.keyboard.press(" ")
    assert page.evaluate("window.pickerOpened") == 2
    assert page.get_attribute("#drop", "tabindex") == "0" and page.get_attribute("#drop", "role") == "button"
    page.close()


def test_missing_file_gets_a_placeholder(server, library):
    hits = httpx.post(f"{server}/v1/search", json={"query": "grey", "k": 10}).json()["data"]
    gone = next(h for h in hits if (h["path"] or "").endswith("gone.png"))
    res = httpx.get(f"{server}/v1/items/{gone['id']}/thumbnail")
    assert res.status_code == 200 and res.headers["X-E5V-Placeholder"] == "missing"
    red = next(h for h in hits if (h["path"] or "").endswith("red.png"))
    res = httpx.get(f"{server}/v1/items/{red['id']}/thumbnail?size=128")
    assert res.headers["content-type"] == "image/jpeg"
    assert max(Image.open(__import__("io").BytesIO(res.content)).size) == 128


@pytest.mark.parametrize("path", [
    "/v1/items/..%2F..%2Fetc%2Fpasswd/thumbnail",
    "/v1/items/../../etc/passwd/thumbnail",
    "/v1/items/%2Fetc%2Fpasswd/thumbnail",
    "/v1/items/deadbeef/thumbnail",
    "/v1/items/x/thumbnail?size=4096",
    "/static/../../../../etc/passwd",
])
def test_no_path_traversal_or_arbitrary_reads(server, path):
    res = httpx.get(server + path)
    assert 400 <= res.status_code < 500
    assert b"root:" not in res.content


def test_text_items_have_no_thumbnail(server):
    hits = httpx.post(f"{server}/v1/search", json={"query": "a green field", "k": 10, "kind": "text"}).json()["data"]
    assert hits and httpx.get(f"{server}/v1/items/{hits[0]['id']}/thumbnail").status_code == 404


def test_demo_serve_opens_the_demo_store_in_the_page(tmp_path):
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "E5V_CACHE": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "e5v.cli", "demo", "--serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base, timeout=240)
        assert "e5v search" in httpx.get(base + "/").text
        info = httpx.get(base + "/v1/store").json()
        assert info["count"] == 8  # 4 sample images + 4 captions
        hits = httpx.post(base + "/v1/search", json={"query": "a red picture", "k": 3}).json()["data"]
        assert len(hits) == 3
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert "search page: http://127.0.0.1:" in out
