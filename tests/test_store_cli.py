"""`e5v index` / `e5v search` end to end, including a real SIGKILL in the middle of indexing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lancedb")

from click.testing import CliRunner  # noqa: E402

from e5v.cli import cli  # noqa: E402
from e5v.errors import StoreError  # noqa: E402
from e5v.store import Store  # noqa: E402
from store_util import stored_rows, wait_for_rows  # noqa: E402


def _index_cmd(paths: list[Path], db: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from e5v.cli import main; main()", "index", *map(str, paths), "--db", str(db),
            "--model", str(model), "--batch-size", "4", "--commit-every", "4", *extra]


def test_cli_index_then_search_table_and_json(tiny_model_path, images, tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    for i, image in enumerate(images.values()):
        image.save(data / f"photo{i}", format="PNG")
    (data / "captions.jsonl").write_text(json.dumps({"text": "a caption", "album": "summer"}) + "\n")
    db = tmp_path / "db"
    runner = CliRunner()
    out = runner.invoke(cli, ["index", str(data), "--db", str(db), "-m", str(tiny_model_path), "-q"])
    assert out.exit_code == 0, out.output
    assert "added 5, skipped 0 already present, failed 0" in out.output
    again = runner.invoke(cli, ["index", str(data), "--db", str(db), "-q"])  # model taken from the store
    assert again.exit_code == 0 and "added 0, skipped 5 already present" in again.output, again.output

    res = runner.invoke(cli, ["search", "--db", str(db), "--image", str(data / "photo2"), "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output.splitlines()[-1])["results"]
    assert len(hits) == 3 and hits[0]["path"] == str((data / "photo2").resolve()) and hits[0]["kind"] == "image"
    res = runner.invoke(cli, ["search", "--db", str(db), "--text", "x", "--where",
                              "json_get_string(metadata, 'album') = 'summer'", "--json"])
    assert [h["text"] for h in json.loads(res.output.splitlines()[-1])["results"]] == ["a caption"]
    table = runner.invoke(cli, ["search", "--db", str(db), "--image", str(data / "photo0"), "--text", "bluer",
                                "--kind", "image", "-k", "2"])
    assert table.exit_code == 0 and "photo" in table.output and "score" in table.output, table.output
    bad = runner.invoke(cli, ["search", "--db", str(db), "--text", "x", "-m", str(tiny_model_path),
                              "--image-mode", "base"])
    assert bad.exit_code != 0 and "another embedding config" in bad.output
    implicit = runner.invoke(cli, ["search", "--db", str(db), "--text", "x", "--image-mode", "base"])
    assert implicit.exit_code != 0 and "image_mode: store has 'anyres', model has 'base'" in implicit.output
    assert runner.invoke(cli, ["search", "--db", str(db)]).exit_code == 2  # no query


@pytest.mark.slow
def test_sigkill_mid_index_loses_nothing_and_resumes_without_duplicates(tiny_model_path, model, tmp_path):
    data = tmp_path / "passages.txt"
    n = 300
    data.write_text("\n".join(f"passage number {i} about topic {i % 7}" for i in range(n)) + "\n")
    db = tmp_path / "db"
    counts = []
    for attempt in range(2):  # kill twice at different points, then let the third run finish
        proc = subprocess.Popen(_index_cmd([data], db, tiny_model_path), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        seen = wait_for_rows(db, proc, at_least=(counts[-1] if counts else 0) + 8 * (attempt + 1))
        if attempt == 0:  # a second writer meanwhile is refused with the holder's pid
            with pytest.raises(StoreError, match=f"another process \\(pid {proc.pid}\\)"):
                Store.open(db, model).add([data], show_progress=False)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        counts.append(stored_rows(db))
        assert seen <= counts[-1] < n, "the run must be killed mid-way for this test to mean anything"
        hits = Store.open(db).search([1.0] * 64, k=n)  # every committed row is whole and readable
        assert len(hits) == counts[-1] and all(h["text"].startswith("passage number") for h in hits)
    done = subprocess.run(_index_cmd([data], db, tiny_model_path, "-q"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"added {n - counts[-1]}, skipped {counts[-1]} already present, failed 0" in done.stdout
    hits = Store.open(db).search([1.0] * 64, k=2 * n)
    texts = [h["text"] for h in hits]
    assert len(texts) == n and len(set(texts)) == n
    assert len({h["id"] for h in hits}) == n


def test_demo_search_indexes_samples_and_queries_three_ways(model, images, capsys):
    from e5v.commands.store import demo_search

    captions = [f"a {name.split()[0]} picture" for name in images]
    demo_search(model, images, captions)
    out = capsys.readouterr().out
    assert "added 8, skipped 0 already present, failed 0" in out
    for title in ("text -> image", "image -> image: red square", "image+text: red square"):
        assert f"search {title}" in out
    image_block = out.split("search image -> image")[1].split("search image+text")[0]
    assert "red_square.png" in image_block.splitlines()[4]  # the query image ranks itself first
