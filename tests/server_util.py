"""Start ``e5v serve`` in a subprocess on 127.0.0.1 (free port) and wait until /health says ready."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(model_path: Path, *args: str, timeout: float = 240.0, log_path: Path | None = None):
    """Yield the base URL of a real server; stop it (SIGTERM, then SIGKILL) afterwards.

    ``log_path``: keep the server's output there (default: a temporary file, deleted at the end)."""
    port = free_port()
    log = open(log_path, "wb") if log_path else tempfile.NamedTemporaryFile(prefix="e5v-serve-", suffix=".log",
                                                                              delete=False)
    cmd = [sys.executable, "-m", "e5v.cli", "serve", "--model", str(model_path), "--served-model-name", "e5v-test",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{Path(log.name).read_text()[-3000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout} s:\n{Path(log.name).read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if log_path is None:
            os.unlink(log.name)


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_uri(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode()


def cos(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
