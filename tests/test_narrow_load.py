"""A load narrower than the checkpoint's dtype (bf16 from fp32) converts in bounded slices from the memory-mapped
file (e5v/backends/narrowing.py) and gives exactly what transformers' own narrow load gives. The peak-memory
effect is measured by bench/load_memory.py (BENCHMARKS.md), not asserted here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e5v import E5V
from e5v.backends import narrowing


@pytest.fixture(scope="module")
def fp32_path(tmp_path_factory):
    from e5v.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("fp32"))


def _state(model):
    return {k: v for k, v in model.backend.model.state_dict().items()}


@pytest.mark.parametrize("chunk", [narrowing.CHUNK_BYTES, 16384])  # 16 KB: tensors converted in many slices
def test_sliced_conversion_equals_transformers_narrow_load(fp32_path, images, monkeypatch, chunk):
    items = ["a red car", images["green wide"], {"image": images["blue tall"], "text": "in red"}]
    monkeypatch.setenv("E5V_ONEDNN_LINEAR", "0")  # plain nn.Linear: every weight stays in the state_dict compared
    monkeypatch.setattr(narrowing, "CHUNK_BYTES", chunk)
    released = []
    real = narrowing.release_range
    monkeypatch.setattr(narrowing, "release_range", lambda *a: released.append(real(*a)) or released[-1])
    sliced = E5V.from_pretrained(fp32_path, dtype="bf16")  # pages really dropped (madvise) as slices convert
    assert sum(released) > 0, "the mapped pages were never released"
    monkeypatch.setattr(narrowing, "wider_stored_dtype", lambda path, dtype: None)  # transformers converts
    direct = E5V.from_pretrained(fp32_path, dtype="bf16")
    a, b = _state(sliced), _state(direct)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key
    assert np.array_equal(sliced.encode(items), direct.encode(items))
    assert sliced.backend.weights == "bf16"


def test_matching_dtypes_and_mixed_checkpoints_load_directly(fp32_path, tmp_path):
    assert narrowing.wider_stored_dtype(fp32_path, torch.float32) is None
    assert narrowing.wider_stored_dtype(fp32_path, torch.bfloat16) == torch.float32
    assert narrowing.wider_stored_dtype(tmp_path, torch.bfloat16) is None  # no safetensors: transformers decides
