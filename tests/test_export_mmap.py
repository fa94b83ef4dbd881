"""The shard-by-shard random checkpoint writer and the memory-mapped export route (small shapes)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from e5v import E5V, ModelLoadError
from e5v.testing import sample_images
from e5v.testing_fullsize import make_random_checkpoint

SHARD_GB = 40_000 / 1024 ** 3  # ~40 kB: forces several shards on the tiny shapes


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    """A tiny bf16 checkpoint in royokong/e5-v's key layout, sharded."""
    return make_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "bf16", shape="tiny", text_layers=2,
                                  vision_layers=2, vocab_size=512, shard_gb=SHARD_GB)


def _shard_tensors(path):
    from safetensors.torch import load_file

    return {k: v for shard in sorted(path.glob("model-*.safetensors")) for k, v in load_file(shard).items()}


def test_random_checkpoint_is_sharded_and_complete(bf16_checkpoint):
    from safetensors import safe_open
    from transformers import LlavaNextForConditionalGeneration

    shards = sorted(bf16_checkpoint.glob("model-*.safetensors"))
    assert len(shards) > 2 and shards[0].name == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((bf16_checkpoint / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [s.name for s in shards]
    for shard in shards:  # bound holds unless a shard is a single larger tensor
        with safe_open(shard, "pt") as f:
            keys = list(f.keys())
            nbytes = sum(int(np.prod(f.get_slice(k).get_shape())) for k in keys) * 2  # bf16
        assert nbytes <= SHARD_GB * 1024 ** 3 or len(keys) == 1, shard.name
    assert any(k.startswith("vision_tower.vision_model.") for k in index["weight_map"])  # e5-v's layout
    assert "language_model.lm_head.weight" in index["weight_map"]
    config = json.loads((bf16_checkpoint / "config.json").read_text())
    assert config["image_token_index"] == config["text_config"]["vocab_size"] == 512  # e5-v's quirk
    model, info = LlavaNextForConditionalGeneration.from_pretrained(bf16_checkpoint, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"] and not info["unexpected_keys"]
    assert model.dtype == torch.bfloat16


def test_random_checkpoint_encodes_and_is_deterministic(bf16_checkpoint, tmp_path):
    vectors = E5V.from_pretrained(bf16_checkpoint).encode(["a dog", "snow on the mountain",
                                                           sample_images()["green wide"]])
    assert np.isfinite(vectors).all() and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert float((vectors[0] * vectors[1]).sum()) < 0.999  # random, but not degenerate
    one_shard = make_random_checkpoint(tmp_path / "one", shape="tiny", text_layers=2, vision_layers=2,
                                       vocab_size=512, shard_gb=1.0)
    assert len(list(one_shard.glob("model-*.safetensors"))) == 1
    a, b = _shard_tensors(bf16_checkpoint), _shard_tensors(one_shard)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # sharding never changes weights


def test_mmap_load_equals_from_pretrained(bf16_checkpoint):
    from transformers import AutoConfig, LlavaNextForConditionalGeneration

    from e5v.export.mmap_load import load_base_mmap

    mapped = load_base_mmap(bf16_checkpoint, AutoConfig.from_pretrained(bf16_checkpoint))
    loaded = LlavaNextForConditionalGeneration.from_pretrained(bf16_checkpoint, dtype=torch.bfloat16).model
    a, b = mapped.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    buffers = dict(loaded.named_buffers())
    assert all(torch.equal(t, buffers[n]) for n, t in mapped.named_buffers())  # inv_freq, position_ids rebuilt


@pytest.fixture(scope="module")
def both_routes(bf16_checkpoint, tmp_path_factory):
    from e5v.export import export_openvino

    out, logs = tmp_path_factory.mktemp("routes"), {}
    for name, memory_map in (("mmap", True), ("copy", False)):
        logs[name] = []
        export_openvino(str(bf16_checkpoint), out / name, weights="int8", load_dtype="bf16", memory_map=memory_map,
                        log=logs[name].append)
    return out / "mmap", out / "copy", logs


def test_mmap_route_matches_from_pretrained_route(both_routes, bf16_checkpoint):
    mapped, copied, logs = both_routes
    assert any("memory-mapped" in line for line in logs["mmap"])
    assert not any("memory-mapped" in line for line in logs["copy"])
    images = sample_images()
    items = ["a dog", "two people ride bicycles down a busy street", "snow", images["green wide"],
             images["blue tall"], {"image": images["red square"], "text": "make it blue"}]
    a = E5V.from_pretrained(mapped).encode(items, batch_size=4)
    b = E5V.from_pretrained(copied).encode(items, batch_size=4)
    assert np.isfinite(a).all() and float((a * b).sum(1).min()) >= 0.9999
    reference = E5V.from_pretrained(bf16_checkpoint, backend="torch", dtype="fp32").encode(items, batch_size=4)
    assert float((a * reference).sum(1).min()) >= 0.99  # int8 vs torch fp32, as the OpenVINO parity tests
    table = np.load(mapped / "embed_tokens.npy", mmap_mode="r")
    assert table.dtype == np.float16 and np.array_equal(table, np.load(copied / "embed_tokens.npy"))


def test_fp32_checkpoint_with_bf16_load_falls_back_with_a_log_line(tiny_model_path, tmp_path):
    from e5v.checkpoint import stored_dtypes
    from e5v.export.openvino import _load_base

    lines = []
    base = _load_base(tiny_model_path, None, torch.bfloat16, True, lines.append)
    assert stored_dtypes(tiny_model_path) == {torch.float32}
    assert "from_pretrained" in lines[0] and "float32" in lines[0] and "memory-mapped" in lines[0]
    assert next(base.parameters()).dtype == torch.bfloat16


def _rewrite_shard(checkpoint, edit):
    """Apply ``edit(tensors)`` to the shard holding a decoder down_proj and save it back."""
    from safetensors.torch import load_file, save_file

    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    key = next(k for k in index["weight_map"] if "layers.1.mlp.down_proj" in k)
    shard = checkpoint / index["weight_map"][key]
    tensors = load_file(shard)
    edit(tensors, key)
    save_file(tensors, shard, metadata={"format": "pt"})


@pytest.fixture
def damaged_checkpoint(bf16_checkpoint, tmp_path):
    return shutil.copytree(bf16_checkpoint, tmp_path / "damaged")


def _export(path, tmp_path):
    from e5v.export import export_openvino

    return export_openvino(str(path), tmp_path / "out", weights="int8", load_dtype="bf16", log=lambda m: None)


def test_missing_tensor_is_refused(damaged_checkpoint, tmp_path):
    _rewrite_shard(damaged_checkpoint, lambda tensors, key: tensors.pop(key))
    with pytest.raises(ModelLoadError, match=r"1 missing and 0 mis-shaped.*layers\.1\.mlp\.down_proj"):
        _export(damaged_checkpoint, tmp_path)


def test_misshaped_tensor_is_refused(damaged_checkpoint, tmp_path):
    def shrink(tensors, key):
        tensors[key] = tensors[key][:, :-1].contiguous()

    _rewrite_shard(damaged_checkpoint, shrink)
    with pytest.raises(ModelLoadError, match=r"0 missing and 1 mis-shaped.*down_proj.*!="):
        _export(damaged_checkpoint, tmp_path)


def test_truncated_shard_is_refused(damaged_checkpoint, tmp_path):
    shard = sorted(damaged_checkpoint.glob("model-*.safetensors"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelLoadError, match=f"{shard.name} is truncated"):
        _export(damaged_checkpoint, tmp_path)


def test_missing_shard_is_refused(damaged_checkpoint, tmp_path):
    shard = sorted(damaged_checkpoint.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(ModelLoadError, match=f"{shard.name} is missing"):
        _export(damaged_checkpoint, tmp_path)


def test_bf16_route_compiles_to_compressed_fully_connected(both_routes):
    """A bf16-loaded model must export the same f32 graph shape as an fp32 one: the CPU plugin then runs
    FullyConnected on compressed weights. Traced in bf16, it kept bf16 MatMuls and materialised every
    decompressed weight at run time (14 GB instead of ~4 GB on the 8B)."""
    import openvino as ov

    mapped, _, _ = both_routes
    core = ov.Core()
    compiled = core.compile_model(core.read_model(mapped / "language.xml"), "CPU")
    kinds = [op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()]
    assert kinds.count("FullyConnected") == 7 * 2  # q, k, v, o, gate, up, down per decoder layer
    assert "MatMul" not in kinds
