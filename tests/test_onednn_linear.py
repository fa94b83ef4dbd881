"""fp32 linears on oneDNN (e5v/backends/onednn_linear.py): the same outputs as nn.Linear, chosen by CPU vendor or
E5V_ONEDNN_LINEAR, and the same vectors through the real loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e5v import E5V
from e5v.backends import onednn_linear
from e5v.backends.cpu_features import cpu_vendor

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch has no oneDNN")


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 64), (2, 7, 64), (1, 1, 64)])
def test_packed_linear_computes_what_nn_linear_does(bias, shape, dtype, tol):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=bias).to(dtype)
    packed = onednn_linear.PackedLinear(linear)
    x = torch.randn(*shape).to(dtype)
    with torch.inference_mode():
        got, want = packed(x), linear(x)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.allclose(got.float(), want.float(), atol=tol, rtol=tol)
    assert "packed_weight" not in dict(packed.named_buffers()) and all(not p.requires_grad for p in packed.parameters())


def test_the_vendor_the_cpu_kind_and_the_environment_decide():
    fp32, bf16 = torch.float32, torch.bfloat16
    assert onednn_linear.wanted(fp32, {}, "AuthenticAMD")[0] is True
    assert onednn_linear.wanted(fp32, {}, "GenuineIntel")[0] is False
    assert onednn_linear.wanted(fp32, {"E5V_ONEDNN_LINEAR": "0"}, "AuthenticAMD") == (False, "E5V_ONEDNN_LINEAR=0")
    assert onednn_linear.wanted(fp32, {"E5V_ONEDNN_LINEAR": "1"}, "GenuineIntel")[0] is True
    assert onednn_linear.wanted(bf16, {}, flags={"avx2", "avx512_bf16"})[0] is True
    assert onednn_linear.wanted(bf16, {}, flags={"avx2", "amx_bf16"})[0] is True
    assert onednn_linear.wanted(bf16, {}, flags={"avx2"})[0] is False
    with pytest.raises(ValueError, match="E5V_ONEDNN_LINEAR must be 0 or 1"):
        onednn_linear.wanted(fp32, {"E5V_ONEDNN_LINEAR": "yes"}, "AuthenticAMD")
    assert cpu_vendor("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t: avx2\n") == "AuthenticAMD"
    assert cpu_vendor("") is None


def test_a_packed_fp32_load_gives_the_same_vectors(tiny_model_path, images, monkeypatch):
    items = ["a red car on a wet street", images["green wide"], {"image": images["blue tall"], "text": "in red"}]
    monkeypatch.setenv("E5V_ONEDNN_LINEAR", "0")
    plain = E5V.from_pretrained(tiny_model_path, backend="torch", dtype="fp32")
    monkeypatch.setenv("E5V_ONEDNN_LINEAR", "1")
    released = []
    real = onednn_linear.release_range
    monkeypatch.setattr(onednn_linear, "release_range", lambda *a: released.append(real(*a)) or released[-1])
    packed = E5V.from_pretrained(tiny_model_path, backend="torch", dtype="fp32")
    assert sum(released) > 0, "the originals' mapped pages were never dropped"
    kinds = {type(m).__name__ for m in packed.backend.model.modules()}
    assert "PackedLinear" in kinds and "Linear" not in kinds  # vision tower, projector and decoder alike
    assert "PackedLinear" not in {type(m).__name__ for m in plain.backend.model.modules()}
    assert "oneDNN" not in plain.route and "E5V_ONEDNN_LINEAR=1" in packed.route
    a, b = plain.encode(items), packed.encode(items)
    assert np.min(np.sum(a * b, axis=1)) >= 0.99999
    lora_free_bf16 = E5V.from_pretrained(tiny_model_path, backend="torch", dtype="bf16")  # packed too (forced)
    assert "PackedLinear" in {type(m).__name__ for m in lora_free_bf16.backend.model.modules()}
    monkeypatch.setenv("E5V_ONEDNN_LINEAR", "0")
    plain_bf16 = E5V.from_pretrained(tiny_model_path, backend="torch", dtype="bf16")
    c, d = plain_bf16.encode(items), lora_free_bf16.encode(items)
    assert np.min(np.sum(c * d, axis=1)) >= 0.999  # bf16 rounding in another summation order
