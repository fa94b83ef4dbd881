"""LangChain and LlamaIndex adapters against the real frameworks: LangChain's InMemoryVectorStore retrieving
images by text and texts by image, LlamaIndex's VectorStoreIndex (and MultiModalVectorStoreIndex) queries, local
and through a real e5v server on 127.0.0.1; every vector equals ``E5V.encode``'s."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

TEXTS = ["a red square", "a green field, wide", "a blue tower, tall"]
IMAGES = ["red square", "green wide", "blue tall"]


def _cos(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def photo_paths(images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in IMAGES:
        path = folder / (name.replace(" ", "_") + ".png")
        images[name].save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def server(model):
    import httpx
    from test_server_queue import InProcessServer

    from e5v.server import ServerConfig, create_app

    with InProcessServer(create_app(ServerConfig(model_names=("e5-v",)), model=model)) as base:
        for _ in range(100):
            if httpx.get(base + "/health").status_code == 200:
                break
            time.sleep(0.1)
        yield base


def _expected_ranking(model, query_vector, candidates):
    return int(np.argmax(candidates @ query_vector))


@pytest.mark.parametrize("where", ["local", "server"])
def test_langchain_in_memory_store_images_by_text_and_texts_by_image(model, photo_paths, server, where):
    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore

    from e5v.integrations.langchain import E5VEmbeddings

    emb = E5VEmbeddings(model) if where == "local" else E5VEmbeddings(server_url=server, model_name="e5-v")
    text_vectors, image_vectors = model.encode(TEXTS), model.encode([Path(p) for p in photo_paths])
    got_docs = np.array(emb.embed_documents(TEXTS))
    got_images = np.array(emb.embed_image(photo_paths))
    assert min(_cos(a, b) for a, b in zip(got_docs, text_vectors)) >= 0.9999
    assert min(_cos(a, b) for a, b in zip(got_images, image_vectors)) >= 0.9999
    assert _cos(emb.embed_query(TEXTS[0]), text_vectors[0]) >= 0.9999

    texts = InMemoryVectorStore(embedding=emb)
    texts.add_documents([Document(page_content=t) for t in TEXTS])
    photos = InMemoryVectorStore(embedding=emb.for_images())
    photos.add_documents([Document(page_content=p, metadata={"kind": "image"}) for p in photo_paths])
    for i, query in enumerate(TEXTS):  # images by text: the store's ranking is e5v's ranking
        hit = photos.similarity_search(query, k=1)[0]
        assert hit.page_content == photo_paths[_expected_ranking(model, model.encode([query])[0], image_vectors)]
    for path, vector in zip(photo_paths, image_vectors):  # texts by image
        hit = texts.similarity_search_by_vector(emb.embed_image([path])[0], k=1)[0]
        assert hit.page_content == TEXTS[_expected_ranking(model, vector, text_vectors)]


def test_langchain_async_forms_and_errors(model, photo_paths, tmp_path):
    import asyncio

    from e5v.integrations.langchain import E5VEmbeddings

    emb = E5VEmbeddings(model)
    docs = asyncio.run(emb.aembed_documents(TEXTS[:2]))
    query = asyncio.run(emb.aembed_query(TEXTS[0]))
    assert _cos(docs[0], query) >= 0.9999 and len(docs) == 2
    assert emb.embed_documents([]) == []
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(Exception, match="not a readable image"):
        emb.embed_image([str(tmp_path / "bad.png")])
    with pytest.raises(ValueError, match="either model= .* or server_url="):
        E5VEmbeddings()
    with pytest.raises(ValueError, match="does not fetch URLs"):
        emb.embed_image(["https://example.com/cat.jpg"])
    with pytest.raises(ValueError, match="local only"):
        E5VEmbeddings(server_url="http://127.0.0.1:1", query_prompt="query")


@pytest.mark.parametrize("where", ["local", "server"])
def test_llama_index_vector_store_index_query(model, photo_paths, server, where):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    from e5v.integrations.llama_index import E5VEmbedding

    embed = E5VEmbedding(model) if where == "local" else E5VEmbedding(server_url=server, model_name="e5-v")
    text_vectors = model.encode(TEXTS)
    index = VectorStoreIndex([TextNode(text=t, id_=str(i)) for i, t in enumerate(TEXTS)], embed_model=embed)
    for i, query in enumerate(["a red thing", "grass", "a tall building"]):
        hit = index.as_retriever(similarity_top_k=1).retrieve(query)[0]
        assert hit.node.get_content() == TEXTS[_expected_ranking(model, model.encode([query])[0], text_vectors)]
        assert hit.score == pytest.approx(float(np.max(text_vectors @ model.encode([query])[0])), abs=1e-4)
    image = embed.get_image_embedding(photo_paths[1])
    assert _cos(image, model.encode([Path(photo_paths[1])])[0]) >= 0.9999
    batch = embed.get_text_embedding_batch(TEXTS)
    assert min(_cos(a, b) for a, b in zip(batch, text_vectors)) >= 0.9999


def test_llama_index_multimodal_index_retrieves_images_by_text(model, photo_paths):
    from llama_index.core.indices import MultiModalVectorStoreIndex
    from llama_index.core.schema import ImageNode, TextNode

    from e5v.integrations.llama_index import E5VEmbedding

    embed = E5VEmbedding(model)
    nodes = [TextNode(text=t) for t in TEXTS] + [ImageNode(image_path=p, text=Path(p).name) for p in photo_paths]  # LlamaIndex skips empty nodes
    index = MultiModalVectorStoreIndex(nodes, embed_model=embed, image_embed_model=embed)
    image_vectors = model.encode([Path(p) for p in photo_paths])
    for query in TEXTS:
        hit = index.as_retriever(image_similarity_top_k=1).text_to_image_retrieve(query)[0]
        assert hit.node.image_path == photo_paths[_expected_ranking(model, model.encode([query])[0], image_vectors)]
