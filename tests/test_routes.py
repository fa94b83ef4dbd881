"""The default CPU route (e5v/backends/routes.py): bf16 where the CPU has native bf16, fp32 elsewhere; the
memory guard still decides what fits; explicit dtypes and E5V_DTYPE win. CPU flags and MemAvailable are mocked,
the loader is real."""

from __future__ import annotations

import pytest

from e5v import E5V, ModelLoadError
from e5v.backends import routes

ZEN2 = {"avx2", "fma", "sse4_2"}
ZEN4 = ZEN2 | {"avx512f", "avx512_vnni", "avx512_bf16"}
ICELAKE = ZEN2 | {"avx512f", "avx512_vnni"}
SAPPHIRE = ICELAKE | {"avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}
ALDER = ZEN2 | {"avx_vnni"}  # Intel client CPUs: AVX-VNNI without AVX-512


@pytest.mark.parametrize("flags, kind, dtype", [(ZEN2, "avx2", "fp32"), (ICELAKE, "avx512_vnni", "fp32"),
                                                (ZEN4, "avx512_bf16", "bf16"), (SAPPHIRE, "amx", "bf16"),
                                                (ALDER, "avx_vnni", "fp32"), (set(), "unknown", "fp32")])
def test_the_table_picks_the_documented_dtype_per_cpu(flags, kind, dtype):
    assert routes.cpu_kind(flags) == kind and routes.cpu_kind(None) == "unknown"
    choice = routes.default_cpu_dtype(flags, environ={})
    assert choice.dtype == dtype and kind in choice.reason
    assert routes.default_cpu_dtype(flags, environ={"E5V_DTYPE": "fp32"}).dtype == "fp32"
    assert routes.default_cpu_dtype(flags, environ={"E5V_DTYPE": "auto"}).dtype == dtype


@pytest.mark.parametrize("flags, backend", [(ZEN2, "torch"), (ICELAKE, "openvino"), (ZEN4, "openvino"),
                                           (ALDER, "openvino"), (SAPPHIRE, "torch"), (set(), "torch")])
def test_the_auto_backend_follows_the_table_per_cpu(tiny_model_path, monkeypatch, flags, backend):
    """The decision alone (the export build is recorded, not run; tests/test_auto_backend.py builds real ones)."""
    from e5v.backends import export_cache
    from e5v.loading import load_components

    pytest.importorskip("openvino")
    built = []
    monkeypatch.setattr(export_cache, "ensure", lambda path, weights, log: built.append(weights) or path)
    name, export, why = export_cache.auto_backend(load_components(tiny_model_path), flags=flags)
    kind = routes.cpu_kind(flags)
    assert (name, built) == (backend, ["int8"] if backend == "openvino" else [])
    assert why.startswith(f"auto on {kind}: {routes.ROUTES[kind].why}")
    assert set(routes.ROUTES) == {"amx", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx2", "unknown"}


def _cpu(monkeypatch, flags):
    """This CPU for the dtype table and for the auto route's int8 check; the suite's fp32 pin lifted."""
    from e5v.backends import export_cache

    monkeypatch.delenv("E5V_DTYPE", raising=False)
    monkeypatch.setattr(routes, "cpu_flags", lambda: flags)
    monkeypatch.setattr(export_cache, "cpu_flags", lambda: flags)


def test_the_torch_route_follows_the_cpu_and_says_why(tiny_model_path, monkeypatch):
    _cpu(monkeypatch, ZEN4)
    m = E5V.from_pretrained(tiny_model_path, backend="torch")  # the default route's torch leg (see auto tests)
    assert m.backend.weights == "bf16" and "auto on avx512_bf16" in m.route
    assert m.embedding_config()["weights"] == "bf16"
    assert E5V.from_pretrained(tiny_model_path, dtype="fp32").backend.weights == "fp32"  # explicit wins
    _cpu(monkeypatch, ZEN2)
    m = E5V.from_pretrained(tiny_model_path, backend="torch", dtype="auto")
    assert m.backend.weights == "fp32" and "auto on avx2" in m.route


def test_an_auto_route_over_budget_is_refused_before_loading(tiny_model_path, monkeypatch):
    _cpu(monkeypatch, ZEN4)
    with pytest.raises(ModelLoadError, match="needs about .* but .* is available"):
        E5V.from_pretrained(tiny_model_path, backend="torch", max_memory="1MB")


def test_a_store_reopened_on_another_cpu_keeps_its_dtype(tiny_model_path, tmp_path, monkeypatch):
    """A store built with fp32 vectors is searched with fp32, whatever the new machine's default route is."""
    import json

    from click.testing import CliRunner

    from e5v.cli import cli

    texts = tmp_path / "t.txt"
    texts.write_text("a red car\na green field\n")
    runner = CliRunner()
    _cpu(monkeypatch, ZEN2)
    assert runner.invoke(cli, ["index", str(texts), "--db", str(tmp_path / "db"), "-m", str(tiny_model_path),
                               "-q"]).exit_code == 0
    _cpu(monkeypatch, ZEN4)
    res = runner.invoke(cli, ["search", "--db", str(tmp_path / "db"), "-t", "a red car", "--json", "-k", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["results"][0]["score"] > 0.9999
