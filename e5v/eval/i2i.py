"""Image-image retrieval: the retrieval protocol with every caption replaced by a picture of its text.

The paper renders each caption (black on white, 800x400, word-wrapped, ~40 px) and embeds it with the
*image* prompt, then retrieves real images with it (and the reverse). It measures whether the model
reads text in images into the same space as the text itself. Data: the retrieval formats.
"""

from __future__ import annotations

from .cache import Embedder, digest
from .datasets import RetrievalSet
from .render import RenderSpec, render_text, render_version
from .retrieval import embed_images, score_retrieval


class _Rendered:
    """Lazily rendered captions: only the chunk being embedded is held in memory as images."""

    def __init__(self, captions: list[str], spec: RenderSpec):
        self.captions, self.spec = captions, spec

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int):
        return render_text(self.captions[i], self.spec)


def rendered_key(text: str, spec: RenderSpec) -> str:
    """Cache key of a rendered caption: the text plus everything that decides its pixels."""
    return digest("rendered", render_version(), repr(spec), text)


def run_i2i(embedder: Embedder, data: RetrievalSet, spec: RenderSpec = RenderSpec()) -> tuple[dict, dict]:
    """(table, counts): rendered-caption->image and image->rendered-caption Recall@1/5/10."""
    rendered = _Rendered(data.captions, spec)
    keys = [rendered_key(c, spec) for c in data.captions]
    labels = [f"rendered caption {i}: {c[:40]!r}" for i, c in enumerate(data.captions)]
    captions = embedder.encode(rendered, keys, labels, desc="rendered captions", kind="image")
    images = embed_images(embedder, data.images)
    table = score_retrieval(captions, images, data.caption_image, query_name="rendered text")
    return table, {"images": len(data.images), "rendered_captions": len(data.captions)}
