"""encode_iter: a stream in, chunks out, in input order, equal to encode; the input is read lazily."""

from __future__ import annotations

import io

import numpy as np
import pytest

from e5v import InputError


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def items(images):
    texts = [f"item number {i} " + "word " * (i % 7) for i in range(13)]
    pictures = [_png(im) for im in images.values()]
    out = []
    for i, text in enumerate(texts):
        out.append(text)
        if i < len(pictures):
            out.append(pictures[i] if i % 2 else {"image": pictures[i], "text": "make it red"})
    return out


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 256])
def test_chunks_in_order_equal_encode(model, items, chunk_size):
    expected = model.encode(items, batch_size=3)
    results = list(model.encode_iter(iter(items), chunk_size=chunk_size, batch_size=3))
    assert [r.offset for r in results] == list(range(0, len(items), chunk_size))
    assert all(len(r.vectors) == min(chunk_size, len(items) - r.offset) for r in results)
    np.testing.assert_allclose(np.concatenate([r.vectors for r in results]), expected, atol=1e-5)


def test_the_stream_is_read_one_chunk_at_a_time(model):
    pulled = []

    def stream():
        for i in range(20):
            pulled.append(i)
            yield f"text {i}"

    chunks = model.encode_iter(stream(), chunk_size=5)
    first = next(chunks)
    assert len(first.vectors) == 5 and len(pulled) == 5  # nothing beyond the first chunk was read
    rest = list(chunks)
    assert len(rest) == 3 and len(pulled) == 20


def test_errors_are_per_chunk_positions_and_raise_names_the_stream_index(model):
    stream = ["good", "fine", b"broken", "ok", "", "last"]
    results = list(model.encode_iter(stream, chunk_size=4))
    assert results[0].errors.keys() == {2} and results[1].errors.keys() == {0}
    assert np.isnan(results[0].vectors[2]).all() and np.isfinite(results[1].vectors[1]).all()
    assert results[1].offset == 4 and 0 not in results[1].token_counts
    with pytest.raises(InputError, match="input 3: text is empty") as info:
        list(model.encode_iter(stream[:2] + stream[3:], chunk_size=3, raise_on_error=True))
    assert info.value.index == 3  # position in the stream passed (b"broken" left out)


def test_multi_vector_pooling_streams_too(model):
    results = list(model.encode_iter(["a dog", "a cat runs"], chunk_size=1, pooling="tokens"))
    whole = model.encode(["a dog", "a cat runs"], pooling="tokens")
    for result, expected in zip(results, whole):
        np.testing.assert_allclose(result.vectors[0], expected, atol=1e-5)


def test_bad_arguments_fail_before_reading(model):
    def never():
        raise AssertionError("read")
        yield  # pragma: no cover

    with pytest.raises(ValueError, match="chunk_size"):
        next(model.encode_iter(never(), chunk_size=0))
    with pytest.raises(ValueError, match="image_mode"):
        next(model.encode_iter(never(), image_mode="tiles"))
