"""`e5v demo`: runs offline on a fresh machine with a generated tiny model (random weights)."""

from __future__ import annotations

import os
from pathlib import Path

import click


def demo_model_dir() -> Path:
    """Where the demo's generated model lives (created on first use)."""
    root = Path(os.environ.get("E5V_CACHE", Path.home() / ".cache" / "e5v"))
    return root / "tiny-e5v-demo"


def ensure_demo_model() -> Path:
    from ..testing import make_tiny_model

    path = demo_model_dir()
    if not (path / "model.safetensors").is_file():
        click.echo(f"generating the tiny demo model in {path} ...", err=True)
        make_tiny_model(path, seed=0)
    return path


def build_demo_library(model, images: dict, captions: list[str]) -> Path:
    """A persistent store of the sample images and captions (for `--serve`); indexing again is a no-op."""
    from ..store import Store

    root = demo_model_dir().parent / "demo-library"
    folder = root / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        image.save(folder / f"{name.replace(' ', '_')}.png")
    (folder / "captions.txt").write_text("\n".join(captions) + "\n")
    db = root / f"db-{Path(str(model.components.path)).name}"
    Store.open(db, model).add([folder], show_progress=False)
    return db


@click.command()
@click.option("--model", "-m", default=None,
              help="Use this model instead of the generated one (e.g. royokong/e5-v or a local copy).")
@click.option("--serve", "serve_page", is_flag=True,
              help="Afterwards, serve the demo store's search page on 127.0.0.1 (Ctrl+C stops it).")
@click.option("--port", default=8000, show_default=True, type=int, help="Port for --serve.")
@click.pass_context
def demo(ctx: click.Context, model: str | None, serve_page: bool, port: int) -> None:
    """Embed sample images and captions and print their similarity table."""
    from ..encoder import E5V
    from ..testing import sample_images
    from .embed import print_matrix

    if model is None:
        path = ensure_demo_model()
        click.echo(
            "NOTE: this demo uses a tiny model with RANDOM weights generated on this machine, so the numbers "
            "below show the pipeline working, not meaningful similarities. For real embeddings run "
            "`e5v demo --model royokong/e5-v` (or a local copy of it).\n"
        )
    else:
        path = model
    m = E5V.from_pretrained(path)
    images = sample_images()
    captions = [f"a {name.split()[0]} picture" for name in images]
    labels = [f"image: {name}" for name in images] + [f"text: {c}" for c in captions]
    labels.append("image+text: red square | make it blue")
    items = list(images.values()) + captions + [{"image": images["red square"], "text": "make it blue"}]
    vectors = m.encode(items)
    click.echo(f"{m!r}\nembedded {len(items)} items -> {vectors.shape[0]} x {vectors.shape[1]} float32\n")
    print_matrix(labels, m.similarity(vectors, vectors), title="cosine similarity")

    from .store import demo_search

    demo_search(m, images, captions)
    if serve_page:
        from .serve import serve

        db = build_demo_library(m, images, captions)
        del m  # the server loads its own copy
        click.echo(f"\nsearch page: http://127.0.0.1:{port}/  (store {db}; Ctrl+C to stop)")
        ctx.invoke(serve, model=str(path), db=str(db), host="127.0.0.1", port=port)
