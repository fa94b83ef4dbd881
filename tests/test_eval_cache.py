"""The on-disk embedding cache: re-runs encode nothing, any change of space re-encodes, bad items are named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from e5v.errors import InputError
from e5v.eval.cache import Embedder, EmbeddingCache, file_key, files_fingerprint, text_key
from e5v.prompts import NAMED_PROMPTS


class Spy:
    """The real model, with a count of the items it was asked to embed."""

    def __init__(self, model):
        self._model = model
        self.encoded: list = []

    def encode_iter(self, items, **kw):
        def recorded():
            for item in items:
                self.encoded.append(item)
                yield item

        return self._model.encode_iter(recorded(), **kw)

    def __getattr__(self, name):
        return getattr(self._model, name)


TEXTS = ["a dog runs", "a cat sleeps", "a dog runs", "the sky is blue", "snow on the mountain"]


def _encode(embedder, texts, prompt=None):
    return embedder.encode(texts, [text_key(t) for t in texts], texts, prompt=prompt)


def test_rerun_hits_cache_and_matches_direct_encode(model, tmp_path):
    spy = Spy(model)
    embedder = Embedder(spy, cache=EmbeddingCache(tmp_path), chunk_size=2)
    first = _encode(embedder, TEXTS)
    assert len(spy.encoded) == 4  # the duplicate is embedded once
    direct = model.encode(TEXTS, normalize=False)
    np.testing.assert_allclose(first, direct, rtol=1e-4, atol=1e-5)
    spy.encoded.clear()
    again = _encode(Embedder(spy, cache=EmbeddingCache(tmp_path)), TEXTS)
    assert spy.encoded == []
    np.testing.assert_array_equal(again, first)
    # a longer run (e.g. --limit grown) only embeds what is new
    _encode(Embedder(spy, cache=EmbeddingCache(tmp_path)), TEXTS + ["a red car"])
    assert spy.encoded == ["a red car"]


def test_changing_prompts_or_lora_or_weights_changes_the_space(model, tmp_path):
    spy = Spy(model)
    _encode(Embedder(spy, cache=EmbeddingCache(tmp_path)), TEXTS[:2])
    spy.encoded.clear()
    _encode(Embedder(spy, cache=EmbeddingCache(tmp_path)), TEXTS[:2], prompt=NAMED_PROMPTS["cirr-target"])
    assert spy.encoded == []  # cirr-target only changes the image prompt: same text space
    adapter = tmp_path.parent / f"{tmp_path.name}-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    spy.lora = str(adapter)  # what E5V.from_pretrained(lora=...) records
    _encode(Embedder(spy, cache=EmbeddingCache(tmp_path)), TEXTS[:2])
    assert len(spy.encoded) == 2
    spy.lora = None
    spy.encoded.clear()
    custom = NAMED_PROMPTS["e5v"].__class__(text="<sent>\nIn one word: ")
    _encode(Embedder(spy, cache=EmbeddingCache(tmp_path)), TEXTS[:2], prompt=custom)
    assert len(spy.encoded) == 2
    # two spaces (base, LoRA), each with its description; the prompt lives in the item keys
    assert len(list(tmp_path.iterdir())) == 2
    assert all((d / "space.json").is_file() for d in tmp_path.iterdir())


def test_weights_fingerprint_changes_with_the_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    (tmp_path / "notes.txt").write_text("ignored")
    before = files_fingerprint(tmp_path)
    assert [row[0] for row in before] == ["config.json", "model.safetensors"]
    (tmp_path / "model.safetensors").write_bytes(b"y" * 11)
    assert files_fingerprint(tmp_path) != before


def test_no_cache_always_encodes(model):
    spy = Spy(model)
    _encode(Embedder(spy), TEXTS[:2])
    _encode(Embedder(spy), TEXTS[:2])
    assert len(spy.encoded) == 4


def test_bad_image_is_named_and_nothing_half_written(model, tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(good)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    embedder = Embedder(model, cache=EmbeddingCache(tmp_path / "cache"), chunk_size=1)
    with pytest.raises(InputError, match="broken.png"):
        embedder.encode([good, bad], [file_key(good), file_key(bad)], [str(good), str(bad)])
    # the good chunk was saved before the failure: a fixed re-run resumes from it
    spy = Spy(model)
    Embedder(spy, cache=EmbeddingCache(tmp_path / "cache")).encode([good], [file_key(good)], [str(good)])
    assert spy.encoded == []
    with pytest.raises(InputError, match="nothere.png"):
        file_key(tmp_path / "nothere.png")


def test_file_key_follows_content_not_name(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(a)
    b.write_bytes(a.read_bytes())
    assert file_key(a) == file_key(b)
    Image.new("RGB", (4, 4), (1, 2, 4)).save(b)
    assert file_key(a) != file_key(b)
