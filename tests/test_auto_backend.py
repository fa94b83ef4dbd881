"""backend="auto": OpenVINO int8 from an export built once and cached, on CPUs with int8 dot-product units; torch
elsewhere. CPU flags are mocked, the export and both backends are real."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino")

from e5v import E5V  # noqa: E402
from e5v.backends import export_cache  # noqa: E402

ZEN4 = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
ZEN3 = {"avx2", "fma"}
SAPPHIRE = ZEN4 | {"avx_vnni", "amx_bf16", "amx_int8", "amx_tile"}


def _cos(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private export cache, and the suite's fp32 pin lifted (an E5V_DTYPE means torch to the auto route)."""
    monkeypatch.setenv("E5V_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("E5V_DTYPE", raising=False)
    monkeypatch.delenv("E5V_BACKEND", raising=False)
    return tmp_path / "cache"


def test_auto_builds_an_int8_export_once_and_reuses_it(tiny_model_path, model, cache, monkeypatch, images):
    monkeypatch.setattr(export_cache, "cpu_flags", lambda: ZEN4)
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
    monkeypatch.setattr(export_cache, "cpu_flags", lambda: ZEN3)
    m = E5V.from_pretrained(tiny_model_path, backend="auto")
    assert m.backend.name == "torch" and "no int8 dot-product units" in m.route
    assert not (cache / "exports").exists()


def test_auto_uses_torch_bf16_on_amx(tiny_model_path, cache, monkeypatch):
    """Measured on a Xeon with AMX: torch's AMX-BF16 beats OpenVINO's int8 export (routes.ROUTES["amx"])."""
    monkeypatch.setattr(export_cache, "cpu_flags", lambda: SAPPHIRE)
    monkeypatch.setattr("e5v.backends.routes.cpu_flags", lambda: SAPPHIRE)
    m = E5V.from_pretrained(tiny_model_path)
    assert m.backend.name == "torch" and m.embedding_config()["weights"] == "bf16"
    assert "auto on amx: torch bf16 on AMX-BF16" in m.route
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

    monkeypatch.setattr(export_cache, "cpu_flags", lambda: ZEN4)
    m = E5V.from_pretrained(make_tiny_qwen2vl(tmp_path / "qwen"), backend="auto")
    assert m.backend.name == "torch" and "run on torch only" in m.route


def test_the_default_is_the_auto_route_and_torch_options_keep_torch(tiny_model_path, model, cache, monkeypatch):
    monkeypatch.setattr(export_cache, "cpu_flags", lambda: ZEN4)
    default = E5V.from_pretrained(tiny_model_path)  # no backend, no dtype: the route table decides
    assert default.backend.name == "openvino" and default.backend.weights == "int8"
    assert "cached int8 export" in default.route
    exact = E5V.from_pretrained(tiny_model_path, dtype="fp32")  # fp32-exact stays one argument away
    assert exact.backend.name == "torch" and "dtype='fp32' asked for" in exact.route
    assert np.array_equal(exact.encode(["a red car"]), model.encode(["a red car"]))
    monkeypatch.setenv("E5V_DTYPE", "fp32")
    assert E5V.from_pretrained(tiny_model_path).backend.name == "torch"
    monkeypatch.delenv("E5V_DTYPE")
    monkeypatch.setenv("E5V_BACKEND", "torch")
    assert E5V.from_pretrained(tiny_model_path).backend.name == "torch"


def test_concurrent_loads_build_the_export_once(tiny_model_path, cache, monkeypatch):
    """Processes loading one checkpoint at once (Spark workers) wait for the first build instead of each
    exporting (a model's worth of memory each): the build runs under a lock beside the export."""
    import threading
    import time

    import e5v.export.openvino as exporter

    real, calls = exporter.export_openvino, []

    def slow_export(*args, **kwargs):
        calls.append(1)
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(exporter, "export_openvino", slow_export)
    found: list = []
    threads = [threading.Thread(target=lambda: found.append(export_cache.ensure(tiny_model_path, "int8", log=lambda m: None)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(found)) == 1 and (found[0] / "e5v_manifest.json").is_file()


def test_a_failed_export_falls_back_to_torch_with_a_warning(tiny_model_path, cache, monkeypatch):
    import e5v.export.openvino as exporter

    monkeypatch.setattr(export_cache, "cpu_flags", lambda: ZEN4)

    def broken(*args, **kwargs):
        raise RuntimeError("conversion failed on op Foo")

    monkeypatch.setattr(exporter, "export_openvino", broken)
    with pytest.warns(UserWarning, match="conversion failed on op Foo"):
        m = E5V.from_pretrained(tiny_model_path)
    assert m.backend.name == "torch" and "export failed" in m.route
    assert not any(p.name.endswith(("-int8",)) for p in (cache / "exports").iterdir())


def test_a_store_built_on_the_default_route_reloads_through_it(tiny_model_path, cache, monkeypatch, tmp_path):
    """The store records backend "openvino" with the checkpoint's path; `e5v search` without --model finds
    the cached export again through the auto route."""
    pytest.importorskip("lancedb")
    import json

    from click.testing import CliRunner

    from e5v.cli import cli

    monkeypatch.setattr(export_cache, "cpu_flags", lambda: ZEN4)
    passages = tmp_path / "p.txt"
    passages.write_text("a red car\na green field\n")
    runner = CliRunner()
    made = runner.invoke(cli, ["index", str(passages), "--db", str(tmp_path / "db"), "-m", str(tiny_model_path), "-q"])
    assert made.exit_code == 0, made.output
    found = runner.invoke(cli, ["search", "--db", str(tmp_path / "db"), "--text", "a red car", "--json"])
    assert found.exit_code == 0, found.output
    assert "openvino" in found.output.splitlines()[0]  # "using the store's model: ... (openvino, int8, ...)"
    hits = json.loads(found.output.splitlines()[-1])["results"]
    assert hits[0]["text"] == "a red car" and hits[0]["score"] > 0.9999


def test_an_export_that_would_convert_more_than_fits_falls_back_to_torch(tiny_model_path, tmp_path, cache,
                                                                         monkeypatch):
    """fp16 weights cannot be memory-mapped into the export's load dtype: the whole model would be converted
    in memory. Over the budget, the auto route says so and runs torch (with its own guard) instead."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    copy = shutil.copytree(tiny_model_path, tmp_path / "fp16")
    for shard in copy.glob("*.safetensors"):
        save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in load_file(shard).items()},
                  shard, metadata={"format": "pt"})
    assert export_cache._load_dtype(copy) == "bf16"  # converted, and it fits today's budget
    monkeypatch.setattr(export_cache, "cpu_flags", lambda: ZEN4)
    monkeypatch.setattr(export_cache, "export_budget", lambda: 1 << 20)  # 1 MiB for the export's conversion
    with pytest.warns(UserWarning, match="would convert its .*float16.* weights in memory"):
        m = E5V.from_pretrained(copy, backend="auto")
    assert m.backend.name == "torch"
