"""LlamaIndex: ``E5VEmbedding``, a ``llama_index.core`` ``MultiModalEmbedding`` over a local E5V or an e5v server.

    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode
    from e5v.integrations.llama_index import E5VEmbedding

    embed = E5VEmbedding(model="/models/e5-v")            # or server_url="http://127.0.0.1:8000"
    index = VectorStoreIndex([TextNode(text="a red car"), TextNode(text="a dog")], embed_model=embed)
    index.as_retriever(similarity_top_k=1).retrieve("a vehicle")
    embed.get_image_embedding("photos/car.jpg")           # images: paths, file:// or data: URIs

Text and image embeddings land in one space (E5-V's point), so ``MultiModalVectorStoreIndex`` can use the same
object for ``embed_model`` and ``image_embed_model``. Batching goes through ``E5V.encode``.
"""

from __future__ import annotations

from typing import Any

from ..errors import require
from .source import EmbeddingSource

require("llama_index.core", "llama-index")
from llama_index.core.bridge.pydantic import PrivateAttr  # noqa: E402
from llama_index.core.embeddings import MultiModalEmbedding  # noqa: E402


class E5VEmbedding(MultiModalEmbedding):
    """Text and image embeddings from e5v for LlamaIndex (options as ``e5v.integrations.langchain.E5VEmbeddings``)."""

    _source: EmbeddingSource = PrivateAttr()

    def __init__(self, model: Any = None, *, embed_batch_size: int = 8, **options: Any):
        source = options.pop("source", None) or EmbeddingSource(model, batch_size=embed_batch_size, **options)
        name = getattr(getattr(source.model, "components", None), "model_id", None) or source.model_name or "e5v"
        super().__init__(model_name=str(name), embed_batch_size=embed_batch_size)
        self._source = source

    @classmethod
    def class_name(cls) -> str:
        return "E5VEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._source.query(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._source.documents([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._source.documents(texts)

    def _get_image_embedding(self, img_file_path: Any) -> list[float]:
        return self._source.images([img_file_path])[0]

    async def _aget_image_embedding(self, img_file_path: Any) -> list[float]:
        return self._get_image_embedding(img_file_path)

    def _get_image_embeddings(self, img_file_paths: list[Any]) -> list[list[float]]:
        return self._source.images(img_file_paths)


__all__ = ["E5VEmbedding"]
