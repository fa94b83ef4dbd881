"""Pooling strategies against references computed directly from transformers' hidden states."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e5v.pooling import get_pooler, maxsim


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _items(images):
    return ["a dog runs in the grass", images["green wide"], {"image": images["red square"], "text": "make it blue"}]


def _ref_kwargs(item):
    if isinstance(item, str):
        return {"text": item}
    if isinstance(item, dict):
        return item
    return {"image": item}


@pytest.mark.parametrize("pooling", ["mean", "vision_mean", "last"])
def test_single_vector_poolers_match_reference(model, reference, images, pooling):
    items = _items(images)
    vectors = model.encode(items, pooling=pooling, batch_size=3)
    for item, vec in zip(items, vectors):
        hidden, ids = reference.hidden(**_ref_kwargs(item))  # (T, D), (T,)
        image_positions = ids == model.components.image_token_id  # positions of the expanded <image> tokens
        if pooling == "mean" or (pooling == "vision_mean" and not image_positions.any()):
            expected = hidden.mean(dim=0)
        elif pooling == "vision_mean":
            expected = hidden[image_positions].mean(dim=0)
        else:
            expected = hidden[-1]
        assert _cos(vec, expected.numpy()) >= 0.9999, (pooling, type(item))


def test_tokens_pooler_matches_reference_and_is_batch_invariant(model, reference, images):
    items = _items(images)
    batched = model.encode(items, pooling="tokens", batch_size=3)
    single = [model.encode([item], pooling="tokens")[0] for item in items]
    for item, got, alone in zip(items, batched, single):
        hidden, _ = reference.hidden(**_ref_kwargs(item))
        expected = torch.nn.functional.normalize(hidden, dim=-1).numpy()
        assert got.shape == expected.shape
        assert (got * expected).sum(axis=1).min() >= 0.9999
        assert (got * alone).sum(axis=1).min() >= 0.9999
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_vision_mean_is_batch_invariant_with_left_padding(model, images):
    items = ["short", images["yellow small"], "a far longer text so the batch is padded on the left", images["blue tall"]]
    batched = model.encode(items, pooling="vision_mean", batch_size=4)
    single = np.stack([model.encode([i], pooling="vision_mean")[0] for i in items])
    assert (batched * single).sum(axis=1).min() >= 0.9999


def test_pooling_is_recorded_in_the_embedding_config(model):
    assert model.embedding_config()["pooling"] == "last"
    assert model.embedding_config(pooling="vision_mean")["pooling"] == "vision_mean"


def test_unknown_pooling_lists_valid_names():
    with pytest.raises(ValueError, match=r"choose one of \['last', 'mean', 'tokens', 'vision_mean'\]"):
        get_pooler("max")


def test_maxsim_on_planted_vectors():
    e = np.eye(4, dtype=np.float32)
    query = e[[0, 1]]  # two query tokens
    doc_both = e[[1, 0, 3]]  # contains both -> 1 + 1
    doc_one = np.stack([e[0], (e[2] + e[3]) / np.sqrt(2)])  # contains token 0 only -> 1 + 0
    assert maxsim(query, doc_both) == pytest.approx(2.0)
    assert maxsim(query, doc_one) == pytest.approx(1.0)
    assert maxsim(query * 3, doc_both * 0.5) == pytest.approx(2.0)  # scale-free
    with pytest.raises(ValueError, match="matrices"):
        maxsim(e[0], e)


def test_pooler_masks_ignore_padding():
    hidden = torch.tensor([[[9.0, 9.0], [1.0, 3.0], [3.0, 5.0]]])  # row left-padded by one
    mask = torch.tensor([[0, 1, 1]])
    image_mask = torch.tensor([[False, False, True]])
    assert torch.allclose(get_pooler("mean")(hidden, mask), torch.tensor([[2.0, 4.0]]))
    assert torch.allclose(get_pooler("vision_mean")(hidden, mask, image_mask), torch.tensor([[3.0, 5.0]]))
    assert [t.tolist() for t in get_pooler("tokens")(hidden, mask)] == [[[1.0, 3.0], [3.0, 5.0]]]
