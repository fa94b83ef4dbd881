"""backend="auto": OpenVINO int8 from an export built once and cached, on CPUs with int8 dot-product units; torch
elsewhere. CPU flags are mocked, the export and both backends are real."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino")

from e5v import E5V  # noqa: E402
from e5v.backends import export_cache, routes  # noqa: E402

ZEN4 = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
ZEN3 = {"avx2", "fma"}


def _cos(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("E5V_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_auto_builds_an_int8_export_once_and_reuses_it(tiny_model_path, model, cache, monkeypatch, images):
    monkeypatch.setattr(routes, "cpu_flags", lambda: ZEN4)
    m = E5V.from_pretrained(tiny_model_path, backend="auto")
    assert m.backend.name == "openvino" and m.backend.weights == "int8"
    assert "cached int8 export" in m.route and "avx512_bf16" in m.route
    assert m.embedding_config()["model"] == str(tiny_model_path)  # the user's model, not the cache path
    items = ["a red car", images["green wide"]]
    got, exact = m.encode(items), model.encode(items)
    assert min(_cos(a, b) for a, b in zip(got, exact)) >= 0.99
    built = list((cache / "exports").iterdir())
    assert len(built) == 1 and (built[0] / "e5v_manifest.json").is_file()

    import e5v.export.openvino as exporter

    monkeypatch.setattr(exporter, "export_openvino", lambda *a, **k: pytest.fail("the cached export was rebuilt"))
    again = E5V.from_pretrained(tiny_model_path, backend="auto")
    assert np.array_equal(again.encode(items), got)


def test_auto_uses_torch_without_int8_units(tiny_model_path, cache, monkeypatch):
    monkeypatch.setattr(routes, "cpu_flags", lambda: ZEN3)
    m = E5V.from_pretrained(tiny_model_path, backend="auto")
    assert m.backend.name == "torch" and "no int8 dot-product units" in m.route
    assert not (cache / "exports").exists()


def test_a_changed_checkpoint_gets_a_new_export_and_a_half_build_is_never_used(tiny_model_path, tmp_path, cache):
    import shutil

    copy = shutil.copytree(tiny_model_path, tmp_path / "ckpt")
    first = export_cache.export_dir(copy, "int8")
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")  # any edit changes the key
    assert export_cache.export_dir(copy, "int8") != first
    half = export_cache.export_dir(copy, "int8")
    half.mkdir(parents=True)
    (half / "language.xml").write_text("<partial/>")
    assert export_cache.cached(copy, "int8") is None  # no manifest: not an export


def test_auto_keeps_torch_for_families_openvino_does_not_run(tmp_path, cache, monkeypatch):
    from e5v.testing_qwen import make_tiny_qwen2vl

    monkeypatch.setattr(routes, "cpu_flags", lambda: ZEN4)
    m = E5V.from_pretrained(make_tiny_qwen2vl(tmp_path / "qwen"), backend="auto")
    assert m.backend.name == "torch" and "run on torch only" in m.route
