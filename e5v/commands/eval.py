"""`e5v eval retrieval|composed|i2i|sts`: the paper's protocols on files the user has on disk.

Thin shells: read the dataset (``e5v.eval.datasets`` / ``sts_formats``), run the protocol through the
cached ``Embedder`` (which calls ``E5V.encode``), print the markdown table and write JSON + markdown.
"""

from __future__ import annotations

import functools
import inspect
import time
from pathlib import Path
from typing import Any, Callable

import click

from .common import friendly_errors, load_model, model_options


def eval_options(f: Callable) -> Callable:
    """Options every eval shares (plus the model options)."""
    options = [
        click.option("--output", "-o", type=click.Path(dir_okay=False),
                     help="Write results to OUTPUT.json and OUTPUT.md (suffix .json/.md optional)."),
        click.option("--limit", type=click.IntRange(min=1), default=None,
                     help="Quick run on the first N images / queries / pairs (not comparable to full results)."),
        click.option("--batch-size", "-b", default=8, show_default=True, type=click.IntRange(min=1)),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                     help="Embedding cache (default: $E5V_CACHE_DIR/eval or ~/.cache/e5v/eval)."),
        click.option("--no-cache", is_flag=True, help="Do not read or write the embedding cache."),
        click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal)."),
    ]
    f = model_options(f)
    for option in reversed(options):
        f = option(f)
    return f


def _embedder(model_kw: dict, batch_size: int, cache_dir: str | None, no_cache: bool, progress: bool | None):
    from ..eval.cache import Embedder, EmbeddingCache, default_cache_dir
    from ..eval.lazy import cached_or_loaded

    lora = model_kw.get("lora")
    cache = None if no_cache else EmbeddingCache(cache_dir or default_cache_dir())
    options = {k: v for k, v in model_kw.items() if k not in ("model", "lora")}
    model = cached_or_loaded(cache.root if cache else None, model_kw["model"], options, lora,
                             lambda: load_model(**model_kw))
    return Embedder(model, cache=cache, batch_size=batch_size, progress=progress)


def _finish(task: str, dataset: str, embedder, started: float, table: dict, counts: dict, limit: int | None,
            output: str | None, **settings: Any) -> None:
    from ..eval.report import EvalReport

    lora = getattr(embedder.model, "lora", None)
    config = {**embedder.model.embedding_config(), "lora": str(Path(lora).resolve()) if lora else None, **settings}
    report = EvalReport(task=task, dataset=dataset, table=table, counts=counts, config=config, limit=limit,
                        elapsed_seconds=round(time.perf_counter() - started, 2))
    click.echo(report.to_markdown())
    if output:
        json_path, md_path = report.write(output)
        click.echo(f"wrote {json_path} and {md_path}", err=True)


def _shell(f: Callable) -> Callable:
    """Split the shared options from a command's own and hand it a ready Embedder.

    Every option that is neither an eval option nor a parameter of ``f`` is a model option and goes to
    ``load_model`` (so options added to ``@model_options`` later work here unchanged).
    """
    own_names = set(inspect.signature(f).parameters) - {"make_embedder", "finish", "limit"}

    @functools.wraps(f)
    def wrapper(output, limit, batch_size, cache_dir, no_cache, progress, **kwargs: Any) -> None:
        own = {k: v for k, v in kwargs.items() if k in own_names}
        model_kw = {k: v for k, v in kwargs.items() if k not in own_names}
        if model_kw.get("pooling") == "tokens":
            raise click.UsageError("--pooling tokens gives several vectors per input; the evals need one")
        started = time.perf_counter()
        try:
            f(lambda: _embedder(model_kw, batch_size, cache_dir, no_cache, progress),
              lambda *a, **k: _finish(*a, started=started, limit=limit, output=output, **k), limit=limit, **own)
        except ValueError as exc:  # e.g. Spearman on constant scores after --limit: a message, not a traceback
            raise click.ClickException(str(exc)) from None

    return wrapper


@click.group(name="eval")
def eval_group() -> None:
    """The paper's evaluation protocols, on datasets you have on disk (nothing is downloaded)."""


@eval_group.command()
@eval_options
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False), help="Image directory.")
@click.option("--captions", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Karpathy split JSON (dataset_coco.json / dataset_flickr30k.json) or JSONL {image, captions}.")
@click.option("--split", default="test", show_default=True, help="Karpathy split to evaluate.")
@click.option("--captions-per-image", default=5, show_default=True, type=click.IntRange(min=1))
@friendly_errors
@_shell
def retrieval(make_embedder, finish, limit, images, captions, split, captions_per_image) -> None:
    """Image-text retrieval: text->image and image->text R@1/5/10."""
    from ..eval.datasets import read_retrieval
    from ..eval.retrieval import run_retrieval

    data = read_retrieval(captions, images, split=split, captions_per_image=captions_per_image, limit=limit)
    embedder = make_embedder()
    table, counts = run_retrieval(embedder, data)
    finish("retrieval", data.name, embedder, table=table, counts=counts, split=split)


@eval_group.command()
@eval_options
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False), help="Image directory.")
@click.option("--captions", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Karpathy split JSON or JSONL {image, captions}; captions are rendered as images.")
@click.option("--split", default="test", show_default=True, help="Karpathy split to evaluate.")
@click.option("--captions-per-image", default=5, show_default=True, type=click.IntRange(min=1))
@friendly_errors
@_shell
def i2i(make_embedder, finish, limit, images, captions, split, captions_per_image) -> None:
    """Image-image retrieval with captions rendered as 800x400 text images."""
    from dataclasses import asdict

    from ..eval.datasets import read_retrieval
    from ..eval.i2i import run_i2i
    from ..eval.render import RenderSpec, render_version

    data = read_retrieval(captions, images, split=split, captions_per_image=captions_per_image, limit=limit)
    embedder = make_embedder()
    table, counts = run_i2i(embedder, data, RenderSpec())
    finish("i2i", data.name, embedder, table=table, counts=counts, split=split,
           render={**asdict(RenderSpec()), "version": render_version()})


@eval_group.command()
@eval_options
@click.option("--dataset", "dataset", required=True, type=click.Choice(["cirr", "fashioniq"]))
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset directory holding captions/ and image_splits/.")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Image directory (default: CIRR: --root or its parent; FashionIQ: ROOT/images).")
@click.option("--category", "categories", multiple=True, type=click.Choice(["dress", "shirt", "toptee"]),
              help="FashionIQ categories (repeatable; default all three).")
@click.option("--original-spelling", is_flag=True, help='CIRR: use the original code\'s "desribe" query prompt.')
@friendly_errors
@_shell
def composed(make_embedder, finish, limit, dataset, root, images, categories, original_spelling) -> None:
    """Composed retrieval: CIRR val (R@1/5/10) or FashionIQ val (R@10/R@50 per category)."""
    from ..eval import composed as cir
    from ..eval.datasets import FASHIONIQ_CATEGORIES, read_cirr, read_fashioniq

    if dataset == "cirr":
        data = read_cirr(root, images, limit=limit)
        embedder = make_embedder()
        table, counts, used = cir.run_cirr(embedder, data, original_spelling=original_spelling)
        finish("composed", data.name, embedder, table=table, counts=counts, prompts_used=used)
        return
    sets = [read_fashioniq(root, c, images, limit=limit) for c in (categories or FASHIONIQ_CATEGORIES)]
    embedder = make_embedder()
    table, counts, used = {}, {}, {}
    for category, data in zip(categories or FASHIONIQ_CATEGORIES, sets):
        table[category], cat_counts, used[category] = cir.run_fashioniq(embedder, data, category)
        counts.update(cat_counts)
    if len(table) > 1:
        table["average"] = {k: sum(row[k] for row in table.values()) / len(table) for k in ("R@10", "R@50")}
    finish("composed", "fashioniq-val", embedder, table=table, counts=counts, prompts_used=used)


@eval_group.command()
@eval_options
@click.option("--data", "data", required=True, multiple=True, type=click.Path(exists=True),
              help="sts-test.csv, SICK_test_annotated.txt / SICK.txt, STS.input.<name>.txt or an STS12-16 "
                   "directory; repeat to evaluate several and report their average.")
@click.option("--format", "fmt", type=click.Choice(["stsb", "sick", "sts12-16"]), default=None,
              help="File format of every --data (default: guessed from each name).")
@friendly_errors
@_shell
def sts(make_embedder, finish, limit, data, fmt) -> None:
    """Semantic textual similarity: Spearman x100 of cosine vs gold."""
    from ..eval.sts import run_sts_many
    from ..eval.sts_formats import detect_format, read_sts

    formats = [fmt or detect_format(path) for path in data]
    datasets = [(Path(path).name, read_sts(path, f, limit=limit)) for path, f in zip(data, formats)]
    names = [name for name, _ in datasets]
    if len(set(names)) != len(names):
        raise click.UsageError(f"two --data share a name ({', '.join(names)}); rename or pass each once")
    embedder = make_embedder()
    table, counts = run_sts_many(embedder, datasets)
    finish("sts", " + ".join(names), embedder, table=table, counts=counts,
           format=formats[0] if len(formats) == 1 else formats)
