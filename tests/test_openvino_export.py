"""`e5v export` and the manifest: what gets written, and clear errors for bad or foreign export dirs."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("openvino")

from e5v import E5V, MissingExtraError, ModelLoadError  # noqa: E402
from e5v.cli import cli  # noqa: E402
from e5v.export import MANIFEST, export_openvino, verify_manifest  # noqa: E402


@pytest.fixture(scope="module")
def fp32_export(tiny_model_path, tmp_path_factory):
    return export_openvino(str(tiny_model_path), tmp_path_factory.mktemp("ov") / "fp32", weights="fp32",
                           log=lambda m: None)


@pytest.fixture
def damaged(fp32_export, tmp_path):
    """A private copy of the export to break."""
    return shutil.copytree(fp32_export, tmp_path / "copy")


def test_manifest_records_the_export(fp32_export, tiny_model_path):
    from e5v import __version__

    m = json.loads((fp32_export / MANIFEST).read_text())
    assert m["e5v_version"] == __version__ and m["weights"] == "fp32" and m["prompt_family"] == "llama3"
    assert m["source_model"] == str(tiny_model_path)
    assert set(m["parts"]) == {"vision", "language", "embeddings", "image_newline"}
    for name, entry in m["files"].items():
        assert (fp32_export / name).stat().st_size == entry["size"] and len(entry["sha256"]) == 64
    assert m["export_peak_rss_mb"] > 0
    assert not list(fp32_export.glob("*.safetensors"))  # no torch weights copied
    verify_manifest(fp32_export, __version__, checksums=True)


def _edit_manifest(directory, **changes):
    path = directory / MANIFEST
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_other_e5v_version_is_refused(damaged):
    _edit_manifest(damaged, e5v_version="0.0.1")
    with pytest.raises(ModelLoadError, match="exported by e5v 0.0.1.*Re-export"):
        E5V.from_pretrained(damaged)


def test_missing_manifest_is_a_partial_export(damaged):
    (damaged / MANIFEST).unlink()
    with pytest.raises(ModelLoadError, match="no e5v_manifest.json"):
        E5V.from_pretrained(damaged)  # auto-detected as an export by its IR parts


def test_corrupt_manifest(damaged):
    (damaged / MANIFEST).write_text("{not json")
    with pytest.raises(ModelLoadError, match="corrupt"):
        E5V.from_pretrained(damaged)


def test_truncated_weights_are_detected(damaged):
    data = (damaged / "language.bin").read_bytes()
    (damaged / "language.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="language.bin is corrupt"):
        E5V.from_pretrained(damaged)


def test_missing_part_is_detected(damaged):
    (damaged / "vision.xml").unlink()
    with pytest.raises(ModelLoadError, match="vision.xml is missing"):
        E5V.from_pretrained(damaged)


def test_same_size_corruption_is_caught_by_checksums(damaged):
    from e5v import __version__

    path = damaged / "embed_tokens.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="SHA-256"):
        verify_manifest(damaged, __version__, checksums=True)


def test_missing_openvino_names_the_extra(fp32_export, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "e5v\[openvino\]"'):
        E5V.from_pretrained(fp32_export)


def test_exporting_a_non_llava_next_model_fails_clearly(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=100).save_pretrained(tmp_path / "llama")
    with pytest.raises(ModelLoadError, match="(?i)llava"):
        export_openvino(str(tmp_path / "llama"), tmp_path / "out", weights="fp32")
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_cli_export_then_embed(tiny_model_path, model, tmp_path):
    runner = CliRunner()
    out = tmp_path / "ir"
    result = runner.invoke(cli, ["export", "-m", str(tiny_model_path), "--weights", "int8", "-o", str(out),
                                 "--verify"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / MANIFEST).read_text())["weights"] == "int8"
    vectors = tmp_path / "v.npy"
    result = runner.invoke(cli, ["embed", "-m", str(out), "-t", "a dog", "-t", "a red car", "-o", str(vectors)])
    assert result.exit_code == 0, result.output
    expected = model.encode(["a dog", "a red car"])
    assert float((np.load(vectors) * expected).sum(1).min()) >= 0.99


def test_cli_refuses_a_foreign_non_empty_output(tiny_model_path, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(cli, ["export", "-m", str(tiny_model_path), "--weights", "fp32",
                                      "-o", str(tmp_path)])
    assert result.exit_code != 0 and "not empty" in result.output
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_exporting_another_supported_family_fails_clearly(tmp_path):
    """Qwen2-VL runs on the torch backend, but the OpenVINO export is LLaVA-NeXT-shaped."""
    from e5v.testing_qwen import make_tiny_qwen2vl

    path = make_tiny_qwen2vl(tmp_path / "qwen", variant="qwen2_vl")
    with pytest.raises(ModelLoadError, match="qwen2_vl.*LLaVA-NeXT"):
        export_openvino(str(path), tmp_path / "out", weights="fp32")


def test_bf16_load_route_keeps_int8_parity(tiny_model_path, model, tmp_path):
    """The low-memory route (source loaded in bf16, bf16 weights compressed directly) stays finite and close.

    Guards a real failure: freeing the torch module before NNCF compressed the graph left the IR's
    shared-memory bf16 constants dangling (NaN everywhere)."""
    out = export_openvino(str(tiny_model_path), tmp_path / "bf16", weights="int8", load_dtype="bf16",
                          log=lambda m: None)
    items = ["a dog", "two people ride bicycles down a busy street", "snow"]
    got = E5V.from_pretrained(out).encode(items)
    assert np.isfinite(got).all()
    assert float((got * model.encode(items)).sum(1).min()) >= 0.99
    with pytest.raises(ValueError, match="fp32 export needs"):
        export_openvino(str(tiny_model_path), tmp_path / "x", weights="fp32", load_dtype="bf16")


@pytest.mark.parametrize("name", ["/etc/hostname", "../x.bin", "sub/dir.bin", ".hidden"])
def test_manifest_names_outside_the_export_dir_are_refused(damaged, name):
    from e5v import __version__

    data = json.loads((damaged / MANIFEST).read_text())
    data["files"][name] = {"size": 1, "sha256": "0" * 64}
    (damaged / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="outside the export directory"):
        verify_manifest(damaged, __version__)


def test_manifest_file_entry_without_size_is_corrupt_not_a_key_error(damaged):
    from e5v import __version__

    data = json.loads((damaged / MANIFEST).read_text())
    first = next(iter(data["files"]))
    del data["files"][first]["size"]
    (damaged / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="integer 'size'"):
        verify_manifest(damaged, __version__)
    with pytest.raises(ModelLoadError, match="integer 'size'"):
        E5V.from_pretrained(damaged)


@pytest.mark.parametrize("memory_map", [False, True])
def test_an_incomplete_checkpoint_is_refused_on_every_load_route(tiny_model_path, tmp_path, memory_map):
    """The copied route (from_pretrained: a checkpoint whose dtype differs from the export's, or
    memory_map=False) used to export missing tensors as random weights; both routes refuse now."""
    from safetensors.torch import load_file, save_file

    broken = shutil.copytree(tiny_model_path, tmp_path / "broken")
    tensors = load_file(broken / "model.safetensors")
    dropped = next(k for k in tensors if "layers.1.mlp.down_proj" in k)
    del tensors[dropped]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="1 missing"):
        export_openvino(str(broken), tmp_path / "out", weights="fp32", memory_map=memory_map, log=lambda m: None)
