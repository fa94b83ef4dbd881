"""Batch invariance (left padding, position ids), order restoration, and the right-padding pitfall."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e5v.pooling import LastTokenPooler


def _mixed(images):
    return [
        "short",
        images["red square"],
        "a much longer sentence about two people riding bicycles down a very busy street at dusk",
        {"image": images["blue tall"], "text": "make it green"},
        "mid length caption here",
        images["yellow small"],
        images["green wide"],
        "x",
        {"image": images["yellow small"], "text": "a longer modification text that adds many tokens to it"},
        "the end",
    ]


@pytest.fixture(scope="module")
def singles(model, images):
    return np.stack([model.encode([item], batch_size=1)[0] for item in _mixed(images)])


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_batch_invariance(model, images, singles, batch_size):
    vectors = model.encode(_mixed(images), batch_size=batch_size)
    cos = (vectors * singles).sum(axis=1)
    assert cos.min() >= 0.9999, cos
    assert np.isfinite(vectors).all()


def test_order_is_restored(model, images, singles):
    items = _mixed(images)
    perm = np.random.default_rng(1).permutation(len(items))
    vectors = model.encode([items[i] for i in perm], batch_size=4)
    assert np.allclose(vectors, singles[perm], atol=1e-4)


def test_rows_are_unit_norm_float32(model, images):
    vectors = model.encode(_mixed(images), batch_size=4)
    assert vectors.dtype == np.float32 and vectors.shape == (10, model.embedding_dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_right_padded_last_index_reads_pad_but_pooler_does_not():
    """Pitfall 1: hidden[:, -1] of a right-padded batch is a pad state; the pooler takes the last real token."""
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])  # row 0 right-padded
    pooled = LastTokenPooler()(hidden, mask)
    assert torch.equal(pooled[0], hidden[0, 1])
    assert torch.equal(pooled[1], hidden[1, 3])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(LastTokenPooler()(hidden, left)[0], hidden[0, 3])


def test_reference_recipe_with_right_padding_is_wrong(reference):
    """Document why: the recipe batched with right padding gives a different vector for the short text."""
    from reference import TEXT

    proc = reference.processor
    proc.tokenizer.pad_token = proc.tokenizer.eos_token
    proc.tokenizer.padding_side = "right"
    texts = ["hi", "a much longer sentence about two people riding bicycles"]
    inputs = proc(text=[TEXT.replace("<sent>", t) for t in texts], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = reference.model(**inputs, output_hidden_states=True).hidden_states[-1][:, -1]
    batched = torch.nn.functional.normalize(out[0], dim=-1).numpy()
    alone = reference.embed(text="hi")
    assert float(batched @ alone) < 0.99


def test_progress_bar_counts_items(model, capsys):
    model.encode(["a", "b c", "d e f"], batch_size=1, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "3/3" in err


def test_batches_group_similar_lengths_within_the_batch_size():
    from e5v.preprocess import MIN_LENGTH_SHARE, Prepared, plan_batches

    lengths = [3, 40, 77, 114, 36, 70, 107, 26, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100]
    items = [Prepared(index=i, ids=[0] * n, image=None, image_tokens=0) for i, n in enumerate(lengths)]
    batches = plan_batches(items, batch_size=4)
    assert sorted(p.index for b in batches for p in b) == list(range(len(items)))  # each item exactly once
    assert all(1 <= len(b) <= 4 for b in batches)
    for batch in batches:  # padding never exceeds the share the planner allows
        assert min(p.length for p in batch) >= MIN_LENGTH_SHARE * max(p.length for p in batch)
    flat = [p.length for b in batches for p in b]
    assert flat == sorted(flat, reverse=True)  # longest first: memory errors surface in the first batch
    assert [[p.length for p in b] for b in batches] == [[114, 107], [100] * 4, [100] * 4, [100] * 2, [77, 70],
                                                        [40, 36], [26], [3]]
    with pytest.raises(ValueError):
        plan_batches(items, 0)


def test_batches_stop_at_the_token_budget():
    """Long items (anyres images are ~2.4k tokens) fill a batch only up to ``max_tokens`` padded tokens, so
    activation memory is bounded whatever ``batch_size`` is; an item over the budget still runs, alone."""
    from e5v.preprocess import MAX_BATCH_TOKENS, Prepared, plan_batches

    lengths = [2400, 2390, 2380, 2370, 2360, 10000, 30, 30, 30]
    items = [Prepared(index=i, ids=[0] * n, image=None, image_tokens=0) for i, n in enumerate(lengths)]
    batches = plan_batches(items, batch_size=8, max_tokens=MAX_BATCH_TOKENS)
    assert sorted(p.index for b in batches for p in b) == list(range(len(items)))
    assert [[p.length for p in b] for b in batches] == [[10000], [2400, 2390, 2380], [2370, 2360], [30, 30, 30]]
    assert all(len(b) * b[0].length <= MAX_BATCH_TOKENS for b in batches if len(b) > 1)
    with pytest.raises(ValueError, match="max_tokens"):
        plan_batches(items, 8, max_tokens=0)


def test_token_budget_splits_forward_passes_without_changing_vectors(model, images, singles, monkeypatch):
    """With a budget smaller than two items, every forward pass holds one item, and the vectors are the
    one-at-a-time ones (the budget only changes how work is cut)."""
    backend = model.backend
    shapes = []
    original = backend.hidden_states

    def spy(embeds, mask, positions):
        shapes.append(tuple(mask.shape))
        return original(embeds, mask, positions)

    monkeypatch.setattr(backend, "hidden_states", spy)
    monkeypatch.setattr(model, "max_batch_tokens", 1)
    got = model.encode(_mixed(images), batch_size=8)
    assert len(shapes) == len(_mixed(images)) and all(b == 1 for b, _ in shapes)
    np.testing.assert_allclose(got, singles, atol=1e-4)
