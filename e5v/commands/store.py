"""`e5v index` and `e5v search`: thin shells over ``e5v.store.Store``.

When ``--model`` is not given and the store exists, the model is loaded from the config the store
recorded (model, backend, image mode, pooling and the exact prompts), so searching an existing store
needs only ``--db``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .common import friendly_errors, load_model, model_options
from ..store import ann, pg_ann  # the ANN defaults the help text names (light: no lancedb, no psycopg)


def _model_for(db: str, ctx: click.Context, model_kw: dict[str, Any]):
    """The user's model if they chose one, else the one recorded in an existing store.

    Without ``--model``, the store's recorded settings are the base and any option given explicitly
    (``--image-mode``, ``--pooling``, ``--instruction``, ``--backend``) overrides them, so a conflicting
    option is refused by the config check rather than silently ignored.
    """
    from ..store import Store, store_exists

    explicit = {k for k in model_kw if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT}
    if "model" in explicit or not store_exists(db):
        return load_model(**model_kw)
    from ..prompts import PromptSet

    with Store.open(db, None) as store:
        config = store.config
    kw = dict(model_kw, model=config["model"], backend=_reload_backend(config),
              image_mode=config.get("image_mode", "anyres"), pooling=config.get("pooling", "last"),
              family=config.get("family"), task=config.get("task"),
              dtype=_torch_dtype(config) or model_kw.get("dtype"))
    kw.update({k: model_kw[k] for k in explicit})
    click.echo(f"using the store's model: {config['model']} ({config['backend']}, {config['weights']}, "
               f"image mode {kw['image_mode']})", err=True)
    if "instruction" in explicit:
        return load_model(**kw)
    from ..encoder import E5V
    from ..errors import E5VError

    kw.pop("instruction", None)
    try:
        kw["min_image_pixels"], kw["max_image_pixels"] = kw.pop("qwen_min_pixels", None), kw.pop("qwen_max_pixels", None)
        return E5V.from_pretrained(kw.pop("model"), prompt=PromptSet(**config["prompts"]),
                                   **{k: v for k, v in kw.items() if k in _FROM_PRETRAINED})
    except (E5VError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def _reload_backend(config: dict) -> str | None:
    """The backend to reload a store's model with. A store the default route built from a checkpoint records
    "openvino" with the checkpoint's path (the export lives in the cache): "auto" finds that export again, and
    on a CPU where auto picks torch instead the config check names the difference."""
    backend = config.get("backend")
    model = Path(str(config.get("model", "")))
    if backend == "openvino" and not (model / "e5v_manifest.json").is_file():
        return "auto"
    return backend


def _torch_dtype(config: dict) -> str | None:
    """The dtype a torch-built store was embedded in: reloads use it, not this machine's default route (bf16 on
    one CPU, fp32 on another: vectors that do not mix)."""
    return config.get("weights") if config.get("backend") == "torch" else None


def store_dtype(db: str) -> str | None:
    """``_torch_dtype`` of the store at ``db`` (None when it is not a store yet)."""
    from ..store import Store, store_exists

    if not store_exists(db):
        return None
    with Store.open(db, None) as store:
        return _torch_dtype(store.config)


_FROM_PRETRAINED = ("backend", "device", "dtype", "image_mode", "lora", "pooling", "min_image_pixels",
                    "max_image_pixels", "family", "max_memory", "task")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--db", required=True, help="Store directory (created if missing), or a PostgreSQL URL "
              "postgresql://user@host/dbname[#table] (docs/store.md#postgresql).")
@model_options
@click.option("--batch-size", "-b", default=32, show_default=True, help="Items per forward pass.")
@click.option("--commit-every", default=64, show_default=True,
              help="Items per atomic commit (a killed run loses at most this much work).")
@click.option("--text-unit", type=click.Choice(["line", "file"]), default="line", show_default=True,
              help="Text files: one passage per non-blank line, or one per file.")
@click.option("--pairs", type=click.Choice(["composed", "separate"]), default="composed", show_default=True,
              help="Manifest rows with image and text: one composed item, or an image item plus a text item.")
@click.option("--build-ann", is_flag=True, help="Build (or rebuild) the ANN index after adding.")
@click.option("--no-ann", is_flag=True, help="Never build an ANN index automatically.")
@click.option("--ann-index", type=click.Choice(["ivfflat", "hnsw"]), default=None,
              help="PostgreSQL stores: the ANN index to build (docs/store.md#ann-on-postgresql).  [default: hnsw]")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
@friendly_errors
def index(ctx, paths, db, batch_size, commit_every, text_unit, pairs, build_ann, no_ann, ann_index, quiet,
          **model_kw) -> None:
    """Embed PATHS (folders, files, CSV/JSONL manifests) into the store at --db.

    Images are found by content, not extension; text files give one passage per line (or per file);
    manifests have `image` and/or `text` columns, other columns become metadata. Re-running skips
    content already stored, so an interrupted run resumes where it stopped.
    """
    import contextlib

    from ..errors import StoreError
    from ..store import Store
    from ..store.lock import WriterLock
    from ..store.pg_schema import is_postgres_url

    guard: Any = contextlib.nullcontext()  # PostgreSQL takes many writers at once
    extra = {"ann_kind": ann_index} if ann_index else {}
    if ann_index and not is_postgres_url(db):
        raise click.UsageError("--ann-index chooses a PostgreSQL store's index; a LanceDB store's is IVF_RQ")
    if not is_postgres_url(db):
        root = Path(db)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create a store at {root}: {exc.strerror or exc}") from None
        guard = WriterLock(root)  # refuse a second writer before spending time on loading the model
    with guard:
        model = _model_for(db, ctx, model_kw)
        with Store.open(db, model) as store:
            report = store.add(list(paths), batch_size=batch_size, show_progress=not quiet, text_unit=text_unit,
                               pairs=pairs, commit_every=commit_every,
                               build_ann=True if build_ann else False if no_ann else None, **extra)
    click.echo(str(report))


@click.command()
@click.option("--db", required=True, help="Store directory, or a PostgreSQL URL postgresql://...[#table].")
@click.option("--text", "-t", default=None, help="Text query (or, with --image, the modification text).")
@click.option("--image", "-i", default=None, type=click.Path(), help="Image query (with --text: composed query).")
@click.option("-k", "k", default=10, show_default=True, help="Number of results.")
@click.option("--where", default=None,
              help="SQL filter, e.g. \"kind = 'image'\" or \"json_get_string(metadata, 'split') = 'test'\" "
                   "(PostgreSQL: \"metadata->>'split' = 'test'\").")
@click.option("--filter", "filter_json", default=None, metavar="JSON",
              help="Structured metadata filter, e.g. '{\"source\": \"web\", \"year\": {\"$gte\": 2020}}' "
                   "(docs/store.md#filters).")
@click.option("--kind", type=click.Choice(["image", "text", "composed"]), default=None, help="Only this kind.")
@click.option("--exact", is_flag=True, help="Full scan even if the store has an ANN index.")
@click.option("--nprobes", type=click.IntRange(min=1), default=None,
              help="ANN: IVF partitions probed per query (more = better recall, slower); PostgreSQL: IVFFlat "
                   f"lists.  [default: LanceDB 5% of the partitions, at least {ann.MIN_NPROBES}; PostgreSQL sqrt(lists), "
                   f">= {pg_ann.MIN_PROBES}]")
@click.option("--refine-factor", type=click.IntRange(min=1), default=None,
              help="ANN: re-rank refine-factor x k candidates with the full vectors.  [default: 20]")
@click.option("--ef-search", type=click.IntRange(min=1, max=1000), default=None,
              help="PostgreSQL HNSW index: candidate list size.  [default: refine-factor x k, at least 40]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object with the ranked results).")
@model_options
@click.pass_context
@friendly_errors
def search(ctx, db, text, image, k, where, filter_json, kind, exact, nprobes, refine_factor, ef_search, as_json,
           **model_kw) -> None:
    """Search the store at --db by text, by image, or by image + modification text."""
    from ..store import Store

    if text is None and image is None:
        raise click.UsageError("give --text, --image, or both (composed query)")
    if image is not None and not Path(image).is_file():
        raise click.UsageError(f"--image {image}: no such file")
    try:
        structured = json.loads(filter_json) if filter_json is not None else None
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"--filter is not valid JSON: {exc}") from None
    query: Any = text if image is None else Path(image) if text is None else {"image": Path(image), "text": text}
    model = _model_for(db, ctx, model_kw)
    store = Store.open(db, model, create=False)
    tuning = {name: value for name, value in (("nprobes", nprobes), ("refine_factor", refine_factor),
                                              ("ef_search", ef_search)) if value}
    try:
        hits = store.search(query, k=k, where=where, filter=structured, kind=kind, exact=exact or None, **tuning)
    except ValueError as exc:  # FilterError: a malformed --where / --filter
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"query": {"text": text, "image": image}, "results": hits}, default=str))
        return
    _print_hits(hits)


def _print_hits(hits: list[dict]) -> None:
    """A readable ranked table (rich)."""
    from rich.console import Console
    from rich.table import Table

    if not hits:
        click.echo("no results")
        return
    table = Table(show_lines=False)
    for name, justify in (("#", "right"), ("score", "right"), ("kind", "left"), ("path", "left"),
                          ("text", "left"), ("metadata", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for rank, h in enumerate(hits, start=1):
        text = (h["text"] or "")[:60]
        meta = json.dumps(h["metadata"], ensure_ascii=False)[:60] if h["metadata"] else ""
        table.add_row(str(rank), f"{h['score']:.4f}", h["kind"], h["path"] or "", text, meta)
    Console().print(table)


def demo_search(model: Any, images: dict, captions: list[str]) -> None:
    """For `e5v demo`: index the sample images and captions into a temporary store and query it 3 ways."""
    import tempfile

    from ..errors import MissingExtraError
    from ..store import Store

    try:
        with tempfile.TemporaryDirectory(prefix="e5v-demo-store-") as tmp:
            folder = Path(tmp) / "samples"
            folder.mkdir()
            for name, image in images.items():
                image.save(folder / f"{name.replace(' ', '_')}.png")
            (folder / "captions.txt").write_text("\n".join(captions) + "\n")
            store = Store.open(Path(tmp) / "db", model)
            click.echo(f"\nindexing {len(images)} images + {len(captions)} captions into a temporary store:")
            click.echo(str(store.add([folder], show_progress=False)))
            first = next(iter(images))
            queries = [(f"text -> image: {captions[0]!r}", captions[0], "image"),
                       (f"image -> image: {first}", folder / f"{first.replace(' ', '_')}.png", "image"),
                       (f"image+text: {first} | 'make it blue'",
                        {"image": folder / f"{first.replace(' ', '_')}.png", "text": "make it blue"}, None)]
            for title, query, kind in queries:
                click.echo(f"\nsearch {title}")
                _print_hits([{**h, "path": Path(h["path"]).name} for h in store.search(query, k=3, kind=kind)])
    except MissingExtraError as exc:
        click.echo(f"\n(skipping the search demo: {exc})")
