"""LangChain: ``E5VEmbeddings``, a ``langchain_core.embeddings.Embeddings`` over a local E5V or an e5v server.

    from langchain_core.vectorstores import InMemoryVectorStore
    from e5v.integrations.langchain import E5VEmbeddings

    emb = E5VEmbeddings(model="/models/e5-v")            # or server_url="http://127.0.0.1:8000"
    texts = InMemoryVectorStore(embedding=emb)
    texts.add_texts(["a red car", "a dog on a beach"])
    texts.similarity_search("a vehicle", k=1)
    photos = InMemoryVectorStore(embedding=emb.for_images())  # documents are image paths / URIs
    photos.add_texts(["photos/car.jpg", "photos/dog.jpg"])
    photos.similarity_search("a dog", k=1)                  # images by text
    texts.similarity_search_by_vector(emb.embed_image(["photos/car.jpg"])[0])  # texts by image

Vectors are ``E5V.encode``'s (same prompts, L2-normalised), so a LangChain store and an e5v store agree.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from ..errors import require
from .source import EmbeddingSource

require("langchain_core", "langchain")
from langchain_core.embeddings import Embeddings  # noqa: E402


class E5VEmbeddings(Embeddings):
    """Text and image embeddings from e5v for LangChain.

    Args: ``model`` (an ``E5V``, or a path / id to load) or ``server_url`` (an e5v server; ``model_name``,
    ``api_key``); ``query_instruction`` (e.g. GME's or Qwen3-VL-Embedding's query instruction),
    ``query_prompt`` / ``document_prompt`` (named prompt sets, e.g. jina-embeddings-v4's "query" / "passage";
    local models only); ``batch_size``.
    """

    def __init__(self, model: Any = None, **options: Any):
        self.source = options.pop("source", None) or EmbeddingSource(model, **options)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.source.documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.source.query(text)

    def embed_image(self, uris: Sequence[str | os.PathLike | bytes]) -> list[list[float]]:
        """Images by path, ``file://`` or ``data:`` URI, or bytes, in order."""
        return self.source.images(uris)

    def for_images(self) -> "E5VImageEmbeddings":
        """A view whose *documents* are images (paths/URIs): for a vector store of images searched by text."""
        return E5VImageEmbeddings(source=self.source)


class E5VImageEmbeddings(E5VEmbeddings):
    """``E5VEmbeddings`` whose ``embed_documents`` takes image paths / URIs; queries stay text."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.source.images(texts)


__all__ = ["E5VEmbeddings", "E5VImageEmbeddings"]
