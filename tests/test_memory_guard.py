"""The memory budget is checked before any weight is read: an over-budget load is refused with the routes that
fit, the default fp32 falls back to bf16 when only that fits, and the budget reads MemAvailable and cgroups."""

from __future__ import annotations

import pytest
import torch

from e5v import E5V, ModelLoadError
from e5v.backends.memory import cgroup_headroom, estimate_torch, mem_available, memory_budget, parse_size


@pytest.fixture
def no_weights_read(monkeypatch):
    """Fail the test if the loader touches the weights (the refusal must come first)."""
    import e5v.backends.torch_backend as tb

    def refuse(*args, **kwargs):
        raise AssertionError("weights were read before the memory check refused the load")

    monkeypatch.setattr(tb, "load_narrowed", refuse)


def _estimates(path):
    from e5v.loading import load_components

    hidden = load_components(path).config.text_config.hidden_size
    return (estimate_torch(path, torch.float32, hidden, 8192).peak,
            estimate_torch(path, torch.bfloat16, hidden, 8192).peak)


def test_an_over_budget_load_is_refused_before_reading_weights(tiny_model_path, no_weights_read):
    fp32, bf16 = _estimates(tiny_model_path)
    with pytest.raises(ModelLoadError, match=r"needs about .* but .* is available.*e5v export --model"):
        E5V.from_pretrained(tiny_model_path, max_memory=min(fp32, bf16) // 2)
    with pytest.raises(ModelLoadError, match=r"Routes that fit: torch bf16"):  # explicit fp32 is not overridden
        E5V.from_pretrained(tiny_model_path, dtype="fp32", max_memory=(fp32 + bf16) // 2)


def test_the_default_falls_back_to_bf16_when_only_bf16_fits(tiny_model_path, monkeypatch):
    fp32, bf16 = _estimates(tiny_model_path)
    assert bf16 < fp32
    monkeypatch.setenv("E5V_MAX_MEMORY", str((fp32 + bf16) // 2))
    with pytest.warns(RuntimeWarning, match="loading in bf16"):
        model = E5V.from_pretrained(tiny_model_path)
    assert model.backend.weights == "bf16" and "fp32 needs" in model.route
    monkeypatch.delenv("E5V_MAX_MEMORY")
    roomy = E5V.from_pretrained(tiny_model_path)
    assert roomy.backend.weights == "fp32" and "estimated peak" in roomy.route


def test_estimate_counts_weights_from_headers(tiny_model_path):
    from safetensors import safe_open

    with safe_open(str(tiny_model_path / "model.safetensors"), framework="pt") as f:
        params = sum(f.get_slice(k).get_shape().numel() if hasattr(f.get_slice(k).get_shape(), "numel") else
                     __import__("math").prod(f.get_slice(k).get_shape()) for k in f.keys())
    e32 = estimate_torch(tiny_model_path, torch.float32, 64, 8192)
    e16 = estimate_torch(tiny_model_path, torch.bfloat16, 64, 8192)
    assert e32.parameters == params and e32.weights == 4 * params and e32.conversion == 0
    from e5v.backends.narrowing import CHUNK_BYTES

    # converted from the mapped fp32 file in slices: at most one slice (the tiny model is smaller than one)
    assert e16.weights == 2 * params and e16.conversion == min(4 * params, CHUNK_BYTES)


def test_budget_sources(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 24000000 kB\nMemAvailable: 20000000 kB\n")
    v2 = tmp_path / "cg"
    v2.mkdir()
    (v2 / "memory.max").write_text("8000000000\n")
    (v2 / "memory.current").write_text("1000000000\n")
    monkeypatch.delenv("E5V_MAX_MEMORY", raising=False)
    assert mem_available(meminfo) == 20000000 * 1024
    assert cgroup_headroom(v2) == 7_000_000_000
    assert memory_budget(meminfo=meminfo, cgroup=v2) == 7_000_000_000
    assert memory_budget("6GB", meminfo=meminfo, cgroup=v2) == 6_000_000_000
    (v2 / "memory.max").write_text("max\n")
    assert cgroup_headroom(v2) is None
    assert memory_budget(meminfo=meminfo, cgroup=v2) == 20000000 * 1024
    monkeypatch.setenv("E5V_MAX_MEMORY", "512MiB")
    assert memory_budget(meminfo=meminfo, cgroup=v2) == 512 * 2**20
    assert memory_budget(meminfo=tmp_path / "none", cgroup=tmp_path / "none") == 512 * 2**20


@pytest.mark.parametrize("text, expected", [("6GB", 6 * 10**9), ("512MiB", 512 * 2**20), ("1.5g", 1.5e9),
                                            ("1024", 1024), (2048, 2048)])
def test_parse_size(text, expected):
    assert parse_size(text) == int(expected)
    with pytest.raises(ValueError, match="memory size"):
        parse_size("lots")


def test_cli_info_says_what_was_chosen_and_max_memory_refuses(tiny_model_path):
    import json

    from click.testing import CliRunner

    from e5v.cli import cli

    out = CliRunner().invoke(cli, ["info", "-m", str(tiny_model_path)])
    assert out.exit_code == 0, out.output
    facts = json.loads(out.output)
    assert facts["family"] == "llava_next" and facts["route"].startswith("torch fp32")
    assert facts["machine"]["memory_budget_bytes"] > 0
    refused = CliRunner().invoke(cli, ["embed", "-m", str(tiny_model_path), "-t", "a", "--max-memory", "1MB",
                                       "-o", "/tmp/never.npy"])
    assert refused.exit_code == 1 and "is available" in refused.output
