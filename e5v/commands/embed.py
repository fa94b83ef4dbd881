"""`e5v embed` and `e5v similarity`: thin shells over E5V.encode."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from .common import friendly_errors, load_model, model_options


def _items(texts: tuple[str, ...], images: tuple[str, ...], composed: tuple[tuple[str, str], ...]):
    """(label, item) pairs in the order given: texts, then images, then image+text pairs."""
    out = [(f"text:{t}", t) for t in texts]
    out += [(f"image:{p}", Path(p)) for p in images]
    out += [(f"composed:{p}|{t}", {"image": Path(p), "text": t}) for p, t in composed]
    if not out:
        raise click.UsageError("give at least one --text, --image or --composed")
    return out


@click.command()
@model_options
@click.option("--text", "-t", "texts", multiple=True, help="Text to embed (repeatable).")
@click.option("--image", "-i", "images", multiple=True, type=click.Path(), help="Image file (repeatable).")
@click.option("--composed", "-c", nargs=2, multiple=True, metavar="IMAGE TEXT",
              help="Image + modification text (composed query; repeatable).")
@click.option("--text-file", type=click.Path(exists=True, dir_okay=False),
              help="Also embed each non-empty line of this file as a text.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="Output file: .npy (vectors), .jsonl or .parquet (input + vector per row).")
@click.option("--batch-size", "-b", default=8, show_default=True)
@click.option("--no-normalize", is_flag=True, help="Keep raw hidden states (no L2 normalisation).")
@click.option("--skip-errors", is_flag=True, help="Write NaN rows for bad inputs instead of failing.")
@friendly_errors
def embed(texts, images, composed, text_file, output, batch_size, no_normalize, skip_errors, **model_kw) -> None:
    """Embed texts, images and image+text pairs and write the vectors to OUTPUT."""
    if text_file:
        texts = texts + tuple(line.rstrip("\n") for line in Path(text_file).read_text().splitlines() if line.strip())
    pairs = _items(texts, images, composed)
    suffix = Path(output).suffix.lower()
    if suffix not in (".npy", ".jsonl", ".parquet"):
        raise click.UsageError("--output must end in .npy, .jsonl or .parquet")
    if model_kw.get("pooling") == "tokens" and suffix == ".npy":
        raise click.UsageError("--pooling tokens gives one matrix per input; write .jsonl or .parquet")
    model = load_model(**model_kw)
    vectors = model.encode([item for _, item in pairs], batch_size=batch_size, normalize=not no_normalize,
                           show_progress_bar=len(pairs) > batch_size, on_error="skip" if skip_errors else "raise")
    write_vectors(output, [label for label, _ in pairs], vectors)
    click.echo(f"wrote {len(pairs)} embeddings (dim {model.embedding_dim}) to {output}", err=True)


def write_vectors(output: str, labels: list[str], vectors) -> None:
    """Write vectors as .npy, or as rows of {input, embedding} in .jsonl/.parquet.

    ``vectors`` is an (N, D) array (failed rows NaN -> null) or, for multi-vector pooling, a list of
    (T_i, D) arrays (failed items None -> null).
    """
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(path, vectors)
        return
    rows = [None if v is None or np.isnan(v).any() else v.tolist() for v in vectors]
    if suffix == ".jsonl":
        with path.open("w") as f:
            for label, row in zip(labels, rows):
                f.write(json.dumps({"input": label, "embedding": row}) + "\n")
        return
    from ..errors import require

    pa = require("pyarrow", "parquet")
    pq = require("pyarrow.parquet", "parquet")
    multi = not isinstance(vectors, np.ndarray)
    kind = pa.list_(pa.list_(pa.float32())) if multi else pa.list_(pa.float32())
    pq.write_table(pa.table({"input": labels, "embedding": pa.array(rows, type=kind)}), path)


@click.command()
@model_options
@click.option("--text", "-t", "texts", multiple=True, help="Text (repeatable).")
@click.option("--image", "-i", "images", multiple=True, type=click.Path(), help="Image file (repeatable).")
@click.option("--composed", "-c", nargs=2, multiple=True, metavar="IMAGE TEXT", help="Image + text (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the matrix as JSON.")
@friendly_errors
def similarity(texts, images, composed, as_json, **model_kw) -> None:
    """Print the cosine similarity matrix of all inputs against each other."""
    pairs = _items(texts, images, composed)
    model = load_model(**model_kw)
    vectors = model.encode([item for _, item in pairs])
    matrix = model.similarity(vectors, vectors)
    labels = [label for label, _ in pairs]
    if as_json:
        click.echo(json.dumps({"inputs": labels, "similarity": np.round(matrix, 6).tolist()}))
        return
    print_matrix(labels, matrix)


def print_matrix(labels: list[str], matrix: np.ndarray, title: str | None = None) -> None:
    """A readable similarity table (rich): rows labelled, columns numbered, sized to fit its content."""
    from rich.console import Console
    from rich.table import Table

    short = [label if len(label) <= 34 else label[:31] + "..." for label in labels]
    table = Table(title=title, show_lines=False, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("input", no_wrap=True)
    for i in range(len(short)):
        table.add_column(str(i), justify="right", no_wrap=True)
    for i, label in enumerate(short):
        table.add_row(str(i), label, *[f"{x:+.2f}" for x in matrix[i]])
    width = 12 + max(len(s) for s in short) + 8 * len(short)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(width, 80))
    console.print(table)
