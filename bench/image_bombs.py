"""Server memory under "pixel bombs": 1 kB lossless WebPs that decode to 5000x5000 (issue: hostile inputs).

A real ``e5v serve`` on the tiny model (the decode path, not the model, is what is measured) gets
  1. one request with 8 bombs (200 Mpx; over the default --max-request-pixels 64 Mpx),
  2. four concurrent requests with 2 bombs each (50 Mpx each; 200 Mpx queued = --max-queued-pixels),
and the server's peak RSS (VmHWM) is read from /proc after each step. ``--e5v-path DIR`` runs another
checkout of e5v (e.g. an older commit) side by side with the same script.

    python bench/image_bombs.py [--output bench/results/image_bombs.md] [--e5v-path /tmp/old-checkout]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import emit, machine_note  # noqa: E402


def bomb_uri(side: int = 5000) -> tuple[str, int]:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), "white").save(buf, "WEBP", lossless=True)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode(), len(buf.getvalue())


def memory(pid: int) -> int:
    """Peak RSS (VmHWM) of ``pid`` in MB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0


def run(model: Path, e5v_path: str | None) -> dict:
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, **({"PYTHONPATH": e5v_path} if e5v_path else {})}
    proc = subprocess.Popen([sys.executable, "-m", "e5v.cli", "serve", "-m", str(model), "--port", str(port),
                             "--log-level", "warning"], env=env, cwd=tempfile.gettempdir(),  # not this checkout's
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)    # dir: -m puts cwd first
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        uri, size = bomb_uri()
        out = {"bomb_bytes": size, "ready_mb": memory(proc.pid)}
        body = {"model": str(model), "modality": "image", "input": [uri] * 8}
        start = time.perf_counter()
        r = httpx.post(url + "/v1/embeddings", json=body, timeout=600)
        out.update(one_status=r.status_code, one_s=time.perf_counter() - start, one_mb=memory(proc.pid))
        statuses: list[int] = []

        def two() -> None:
            statuses.append(httpx.post(url + "/v1/embeddings", json={**body, "input": [uri] * 2},
                                       timeout=600).status_code)

        start = time.perf_counter()
        threads = [threading.Thread(target=two) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out.update(four_status=sorted(statuses), four_s=time.perf_counter() - start, four_mb=memory(proc.pid))
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=None)
    parser.add_argument("--e5v-path", default=None, help="another e5v checkout to measure side by side")
    args = parser.parse_args()
    from e5v.testing import make_tiny_model

    model = make_tiny_model(Path(tempfile.mkdtemp()) / "tiny")
    head = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    rows = [(f"this checkout ({head})", run(model, None))]
    if args.e5v_path:
        commit = subprocess.run(["git", "-C", args.e5v_path, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or args.e5v_path
        rows.append((f"e5v at {commit}", run(model, args.e5v_path)))
    lines = [f"\n### Pixel bombs vs the server ({machine_note()})", "",
             f"`python bench/image_bombs.py{' --e5v-path ' + args.e5v_path if args.e5v_path else ''}`; a bomb is "
             f"a {rows[0][1]['bomb_bytes']:,}-byte lossless WebP of 5000x5000. Peak RSS is the server's VmHWM.", "",
             "| code | idle peak RSS | 8 bombs, 1 request | peak RSS | 4 requests x 2 bombs | peak RSS |",
             "|---|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['ready_mb']} MB | {r['one_status']} in {r['one_s']:.2f} s | {r['one_mb']} MB | "
                     f"{r['four_status']} in {r['four_s']:.1f} s | {r['four_mb']} MB |")
    emit("\n".join(lines), args.output)


if __name__ == "__main__":
    main()
