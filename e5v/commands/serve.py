"""`e5v serve`: the OpenAI-compatible embedding server (a thin shell over e5v.server and E5V.encode)."""

from __future__ import annotations

import logging
import os
import sys

import click

from .common import load_model, model_options


@click.command()
@model_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (0.0.0.0 exposes it).")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--api-key", envvar="E5V_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on every route but /health (env: E5V_API_KEY).")
@click.option("--served-model-name", "served_names", multiple=True,
              help="Name(s) clients send as 'model' (repeatable; default: the --model value).")
@click.option("--db", default=None,
              help="A store (a directory from `e5v index`, or postgresql://...[#table]): enables POST /v1/search.")
@click.option("--allowed-host", "allowed_hosts", multiple=True,
              help="Host name clients may use besides localhost/127.0.0.1/::1 (repeatable; '*.example.com' for "
                   "subdomains, '*' for any). Other Host headers get 421 (DNS-rebinding protection).")
@click.option("--allow-sql-filter", is_flag=True,
              help="Accept raw SQL 'where' filters in /v1/search (off: clients send structured 'filter' objects; "
                   "raw SQL can exhaust memory). Only for trusted clients.")
@click.option("--max-batch-size", default=32, show_default=True, type=click.IntRange(1),
              help="Items per model call.")
@click.option("--batch-wait-ms", default=5.0, show_default=True, type=click.FloatRange(0),
              help="How long a batch waits to fill before it runs.")
@click.option("--fixed-batch-wait", is_flag=True,
              help="Always wait the full --batch-wait-ms for a batch to fill (default: wait only while more "
                   "requests are already arriving, so a lone client pays no wait).")
@click.option("--max-queue", default=1024, show_default=True, type=click.IntRange(1),
              help="Items waiting for a batch; when full, requests get 503 + Retry-After.")
@click.option("--max-body-bytes", default=32 * 1024 * 1024, show_default=True, type=click.IntRange(1))
@click.option("--max-items", default=256, show_default=True, type=click.IntRange(1), help="Inputs per request.")
@click.option("--max-image-bytes", default=16 * 1024 * 1024, show_default=True, type=click.IntRange(1))
@click.option("--max-image-pixels", default=25_000_000, show_default=True, type=click.IntRange(1))
@click.option("--max-request-pixels", default=64_000_000, show_default=True, type=click.IntRange(1),
              help="Pixels of all images in one request together (from their headers, before decoding).")
@click.option("--max-queued-pixels", default=200_000_000, show_default=True, type=click.IntRange(1),
              help="Image pixels accepted and not yet answered, across requests; beyond, 503 + Retry-After.")
@click.option("--body-timeout", default=30.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds a request body may take to arrive; slower clients get 408.")
@click.option("--max-text-chars", default=20_000, show_default=True, type=click.IntRange(1))
@click.option("--text-overflow", type=click.Choice(["error", "truncate"]), default="error", show_default=True,
              help="Text over --max-text-chars: 400 error, or cut to the limit.")
@click.option("--allow-remote-images", is_flag=True,
              help="Fetch http(s) image URLs from --remote-host hosts (off by default: SSRF).")
@click.option("--remote-host", "remote_hosts", multiple=True,
              help="Allowed remote image host (repeatable; '*.example.com' for subdomains, '*' for any public host).")
@click.option("--remote-timeout", default=5.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds per remote image (all redirects included).")
@click.option("--remote-max-bytes", default=16 * 1024 * 1024, show_default=True, type=click.IntRange(1))
@click.option("--remote-allow-private", is_flag=True,
              help="Also fetch from private/loopback addresses (trusted networks only).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(host, port, api_key, served_names, db, allowed_hosts, allow_sql_filter, max_batch_size, batch_wait_ms, fixed_batch_wait, max_queue, max_body_bytes,
          max_items, max_image_bytes, max_image_pixels, max_request_pixels, max_queued_pixels,
          body_timeout, max_text_chars, text_overflow, allow_remote_images,
          remote_hosts, remote_timeout, remote_max_bytes, remote_allow_private, log_level, **model_kw) -> None:
    """OpenAI-compatible embedding server: POST /v1/embeddings (text, images, image+text), /v1/search."""
    # OpenMP worker threads that spin while idle starve the event loop on a busy CPU (measured: 2-10x
    # lower throughput on a shared 2-core machine); must be set before torch loads. An explicit value wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ..errors import require

    require("fastapi", "serve")
    uvicorn = require("uvicorn", "serve")
    from ..server import Limits, RemoteImages, ServerConfig, create_app

    if allow_remote_images and not remote_hosts:
        raise click.UsageError("--allow-remote-images needs at least one --remote-host")
    if max_items > max_queue:
        raise click.UsageError(f"--max-items ({max_items}) must not exceed --max-queue ({max_queue}), "
                               "or such requests could never be queued")
    from ..store.pg_schema import is_postgres_url

    if db and not is_postgres_url(db) and not os.path.isdir(db):
        raise click.UsageError(f"--db {db}: no such directory (build one with `e5v index`)")
    config = ServerConfig(
        model_names=tuple(served_names) or (model_kw["model"],),
        limits=Limits(max_body_bytes=max_body_bytes, max_items=max_items, max_image_bytes=max_image_bytes,
                      max_image_pixels=max_image_pixels,
                      max_request_pixels=max_request_pixels, body_timeout_s=body_timeout, max_text_chars=max_text_chars, text_overflow=text_overflow),
        remote=RemoteImages(enabled=allow_remote_images, hosts=tuple(remote_hosts), timeout_s=remote_timeout,
                            max_bytes=remote_max_bytes, allow_private=remote_allow_private),
        api_key=api_key or None, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms,
        adaptive_wait=not fixed_batch_wait, max_queue=max_queue, max_queued_pixels=max_queued_pixels,
        db=db, allow_sql_filter=allow_sql_filter, allowed_hosts=tuple(allowed_hosts))
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server: uvicorn.Server | None = None
    failed: list[BaseException] = []

    def on_load_error(exc: BaseException) -> None:  # a server without a model is useless: exit non-zero
        failed.append(exc)
        if server is not None:
            server.should_exit = True

    if db and model_kw.get("dtype") is None:  # search the store in the dtype it was built with
        from .store import store_dtype

        model_kw["dtype"] = store_dtype(db)
    app = create_app(config, loader=lambda: load_model(**model_kw), on_load_error=on_load_error)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           timeout_graceful_shutdown=10))
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if not loopback and not allowed_hosts:
        click.echo(f"note: serving on {host}; only requests for localhost/127.0.0.1/::1 are answered until you "
                   "add the names clients use with --allowed-host (DNS-rebinding protection)", err=True)
    if not loopback and not api_key:
        click.echo(f"warning: serving on {host} without --api-key; anyone who can reach it can use it", err=True)
    server.run()
    if failed:
        raise click.ClickException(f"model failed to load: {failed[0]}")
    sys.exit(0)
