"""`e5v index/search/serve --db postgresql://...` end to end on a real PostgreSQL: a SIGKILLed indexer resumes
with every row once, two indexers write at the same time, and the server searches while an indexer runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

pytest.importorskip("psycopg")

from click.testing import CliRunner  # noqa: E402

from e5v.cli import cli  # noqa: E402
from e5v.store import Store  # noqa: E402
from store_util import stored_rows, wait_for_rows  # noqa: E402
from server_util import serve  # noqa: E402


def _index_cmd(paths, db: str, model, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from e5v.cli import main; main()", "index", *map(str, paths), "--db", db,
            "--model", str(model), "--batch-size", "4", "--commit-every", "4", *extra]


def _passages(tmp_path, n: int, name: str = "passages.txt"):
    path = tmp_path / name
    path.write_text("\n".join(f"passage number {i} about topic {i % 7}" for i in range(n)) + "\n")
    return path


def test_cli_index_then_search_reloads_the_model_from_the_store(tiny_model_path, images, tmp_path, pg_db):
    data = tmp_path / "photos"
    data.mkdir()
    for i, image in enumerate(images.values()):
        image.save(data / f"photo{i}", format="PNG")
    (data / "captions.jsonl").write_text(json.dumps({"text": "a caption", "album": "summer"}) + "\n")
    runner = CliRunner()
    out = runner.invoke(cli, ["index", str(data), "--db", pg_db, "-m", str(tiny_model_path), "-q"])
    assert out.exit_code == 0 and "added 5, skipped 0 already present, failed 0" in out.output, out.output
    again = runner.invoke(cli, ["index", str(data), "--db", pg_db, "-q"])  # the model comes from the store
    assert again.exit_code == 0 and "added 0, skipped 5 already present" in again.output, again.output
    res = runner.invoke(cli, ["search", "--db", pg_db, "--image", str(data / "photo2"), "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output.splitlines()[-1])["results"]
    assert hits[0]["path"] == str((data / "photo2").resolve()) and hits[0]["score"] == pytest.approx(1, abs=1e-5)
    res = runner.invoke(cli, ["search", "--db", pg_db, "--text", "x", "--where", "metadata->>'album' = 'summer'",
                              "--json"])
    assert [h["text"] for h in json.loads(res.output.splitlines()[-1])["results"]] == ["a caption"]
    res = runner.invoke(cli, ["search", "--db", pg_db, "--text", "x", "--filter", '{"album": "summer"}', "--json"])
    assert [h["text"] for h in json.loads(res.output.splitlines()[-1])["results"]] == ["a caption"]
    bad = runner.invoke(cli, ["search", "--db", pg_db, "--text", "x", "--image-mode", "base"])
    assert bad.exit_code != 0 and "image_mode: store has 'anyres', model has 'base'" in bad.output
    missing = runner.invoke(cli, ["search", "--db", pg_db.rsplit("#", 1)[0] + "#nothing_here", "--text", "x",
                                  "-m", str(tiny_model_path)])
    assert missing.exit_code != 0 and "no store at" in missing.output


def test_cli_chooses_the_postgres_ann_index_and_its_knob(tiny_model_path, tmp_path, pg_db):
    data = _passages(tmp_path, 12)
    runner = CliRunner()
    out = runner.invoke(cli, ["index", str(data), "--db", pg_db, "-m", str(tiny_model_path), "-q", "--build-ann",
                              "--ann-index", "hnsw"])
    assert out.exit_code == 0, out.output
    with Store.open(pg_db) as store:
        assert store.ann_index.kind == "hnsw"
    search = ["search", "--db", pg_db, "--text", "passage number 3 about topic 3", "-k", "2", "--json"]
    res = runner.invoke(cli, search + ["--ef-search", "80"])
    assert res.exit_code == 0 and json.loads(res.output.splitlines()[-1])["results"][0]["text"].startswith(
        "passage number 3 "), res.output
    wrong = runner.invoke(cli, search + ["--nprobes", "4"])
    assert wrong.exit_code == 2 and "this store's ANN index is HNSW" in wrong.output
    assert runner.invoke(cli, ["index", str(data), "--db", pg_db, "-q", "--build-ann", "--ann-index",
                               "ivfflat"]).exit_code == 0  # switches the kind: nothing new to add
    res = runner.invoke(cli, search + ["--nprobes", "4"])
    assert res.exit_code == 0 and json.loads(res.output.splitlines()[-1])["results"][0]["text"].startswith(
        "passage number 3 "), res.output
    lance = runner.invoke(cli, ["index", str(data), "--db", str(tmp_path / "lance"), "-m", str(tiny_model_path),
                                "-q", "--ann-index", "hnsw"])
    assert lance.exit_code == 2 and "--ann-index chooses a PostgreSQL store's index" in lance.output


@pytest.mark.slow
def test_sigkill_mid_index_then_rerun_leaves_every_row_once(tiny_model_path, tmp_path, pg_db):
    n = 300
    data = _passages(tmp_path, n)
    counts = []
    for attempt in range(2):  # kill twice at different points, then let the third run finish
        proc = subprocess.Popen(_index_cmd([data], pg_db, tiny_model_path), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        seen = wait_for_rows(pg_db, proc, at_least=(counts[-1] if counts else 0) + 8 * (attempt + 1))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        counts.append(stored_rows(pg_db))
        assert seen <= counts[-1] < n, "the run must be killed mid-way for this test to mean anything"
    done = subprocess.run(_index_cmd([data], pg_db, tiny_model_path, "-q"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"added {n - counts[-1]}, skipped {counts[-1]} already present, failed 0" in done.stdout
    with Store.open(pg_db) as store:
        texts = [h["text"] for h in store.search([1.0] * 64, k=2 * n)]
    assert len(texts) == n and len(set(texts)) == n


@pytest.mark.slow
def test_two_indexers_at_once_share_the_work_and_store_each_item_once(tiny_model_path, tmp_path, pg_db):
    """Unlike the LanceDB store (one writer), both run to the end; overlapping content is stored once."""
    a = _passages(tmp_path, 120, "a.txt")
    b = tmp_path / "b.txt"
    b.write_text("\n".join(f"passage number {i} about topic {i % 7}" for i in range(60, 180)) + "\n")
    procs = [subprocess.Popen(_index_cmd([path], pg_db, tiny_model_path, "-q"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for path in (a, b)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    added = [int(out.split("added ", 1)[1].split(",")[0]) for out, _ in outs]
    assert sum(added) == 180 and stored_rows(pg_db) == 180


@pytest.mark.slow
def test_server_searches_the_postgres_store_while_an_indexer_writes(tiny_model_path, tmp_path, pg_db, model):
    Store.open(pg_db, model).add([{"text": "first passage"}], show_progress=False)
    with serve(tiny_model_path, "--db", pg_db) as base:
        client = httpx.Client(base_url=base, timeout=60)
        indexer = subprocess.Popen(_index_cmd([_passages(tmp_path, 200)], pg_db, tiny_model_path, "-q"),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sizes = []
        while indexer.poll() is None:
            r = client.post("/v1/search", json={"query": "first passage", "k": 500})
            assert r.status_code == 200, r.text
            sizes.append(len(r.json()["data"]))
        assert indexer.returncode == 0
        final = client.post("/v1/search", json={"query": "first passage", "k": 500, "filter": {"missing": 1}})
        assert final.status_code == 200 and final.json()["data"] == []
        top = client.post("/v1/search", json={"query": "first passage", "k": 500}).json()["data"]
        assert top[0]["text"] == "first passage" and len(top) == 201
        info = client.get("/v1/store")
        assert info.status_code == 200 and info.json()["count"] == 201
    assert len(sizes) >= 2 and sizes == sorted(sizes) and sizes[0] < 201, sizes  # searched during the run
