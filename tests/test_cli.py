"""The `e5v` command: thin shells over E5V.encode, clean errors, instant help."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import numpy as np
import pytest
from click.testing import CliRunner

from e5v.cli import cli


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return invoke


def test_version_and_help(run):
    from e5v import __version__

    assert __version__ in run("--version").output
    out = run("--help").output
    for name in ("embed", "similarity", "demo", "index", "serve", "export", "train", "eval"):
        assert name in out


def test_help_does_not_import_torch():
    code = "import sys; from e5v.cli import cli; sys.argv=['e5v','--help']\ntry: cli()\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


@pytest.mark.parametrize("suffix", [".npy", ".jsonl", ".parquet"])
def test_embed_writes_vectors_equal_to_encode(run, model, tiny_model_path, images, tmp_path, suffix):
    image_path = tmp_path / "img.png"
    images["red square"].save(image_path)
    out = tmp_path / f"out{suffix}"
    result = run("embed", "-m", tiny_model_path, "-t", "a dog", "-i", image_path, "-c", image_path, "make it blue",
                 "-o", out)
    assert result.exit_code == 0, result.output
    expected = model.encode(["a dog", image_path, {"image": image_path, "text": "make it blue"}])
    if suffix == ".npy":
        got = np.load(out)
    elif suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["input"].split(":")[0] for r in rows] == ["text", "image", "composed"]
        got = np.array([r["embedding"] for r in rows], dtype=np.float32)
    else:
        import pyarrow.parquet as pq

        got = np.array(pq.read_table(out).column("embedding").to_pylist(), dtype=np.float32)
    assert np.allclose(got, expected, atol=1e-5)


def test_embed_bad_input_is_a_clean_error(run, tiny_model_path, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    result = CliRunner().invoke(cli, ["embed", "-m", str(tiny_model_path), "-i", str(bad), "-o", str(tmp_path / "o.npy")])
    assert result.exit_code == 1 and "input 0" in result.output and "Traceback" not in result.output
    result = run("embed", "-m", tiny_model_path, "-i", bad, "-t", "ok", "--skip-errors", "-o", tmp_path / "o.jsonl")
    assert result.exit_code == 0
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert rows[0]["embedding"] is not None and rows[1]["embedding"] is None


def test_embed_missing_model_and_bad_output(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["embed", "-m", str(tmp_path / "none"), "-t", "x", "-o", str(tmp_path / "o.npy")])
    assert result.exit_code == 1 and "not found" in result.output
    result = runner.invoke(cli, ["embed", "-m", str(tmp_path), "-t", "x", "-o", str(tmp_path / "o.csv")])
    assert result.exit_code == 2 and ".npy, .jsonl or .parquet" in result.output


def test_similarity_json(run, model, tiny_model_path):
    result = run("similarity", "-m", tiny_model_path, "-t", "a dog", "-t", "a cat", "--json")
    data = json.loads(result.stdout)
    vectors = model.encode(["a dog", "a cat"])
    assert np.allclose(data["similarity"], model.similarity(vectors, vectors), atol=1e-5)


def test_demo_runs_offline_and_says_weights_are_random(tmp_path, monkeypatch):
    monkeypatch.setenv("E5V_CACHE", str(tmp_path))
    result = CliRunner().invoke(cli, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output and "royokong/e5-v" in result.output
    assert "cosine similarity" in result.output


def test_embed_with_tokens_pooling_writes_one_matrix_per_input(run, model, tiny_model_path, tmp_path):
    out = tmp_path / "tokens.jsonl"
    result = run("embed", "-m", tiny_model_path, "--pooling", "tokens", "-t", "a dog", "-t", "a red car", "-o", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = model.encode(["a dog", "a red car"], pooling="tokens")
    for row, exp in zip(rows, expected):
        assert np.allclose(np.array(row["embedding"], dtype=np.float32), exp, atol=1e-5)
    bad = CliRunner().invoke(cli, ["embed", "-m", str(tiny_model_path), "--pooling", "tokens", "-t", "x",
                                   "-o", str(tmp_path / "t.npy")])
    assert bad.exit_code == 2 and ".jsonl or .parquet" in bad.output


def test_option_errors_are_clean(tiny_model_path, tmp_path):
    result = CliRunner().invoke(cli, ["embed", "-m", str(tiny_model_path), "--qwen-max-pixels", "1000", "-t", "x",
                                      "-o", str(tmp_path / "o.npy")])
    assert result.exit_code == 1 and "Qwen2-VL" in result.output and "Traceback" not in result.output


def test_no_command_has_clashing_options():
    """Two options with one parameter name silently overwrite each other (a real bug once: --max-image-pixels)."""
    from e5v.cli import COMMANDS, LazyGroup

    ctx = click.Context(cli)
    for name in COMMANDS:
        command = LazyGroup.get_command(cli, ctx, name)
        commands = list(command.commands.values()) if isinstance(command, click.Group) else [command]
        for cmd in commands:
            names = [p.name for p in cmd.params]
            assert len(names) == len(set(names)), (name, cmd.name, sorted(n for n in names if names.count(n) > 1))
            flags = [o for p in cmd.params for o in getattr(p, "opts", [])]
            assert len(flags) == len(set(flags)), (name, cmd.name)
