"""The store against real-world folders and careless callers: a hostile JPEG among good files, two writer
threads, huge text files and CSV fields, and hashes that are not hashes."""

from __future__ import annotations

import csv
import threading
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

from e5v.cli import cli
from e5v.errors import StoreError
from e5v.store import Store
from e5v.store.walk import discover
from test_image_boundary import exif_retagged_jpeg


def test_index_over_a_folder_with_a_hostile_jpeg_stores_the_good_files(tiny_model_path, images, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    images["red square"].save(folder / "a.png")
    images["blue tall"].save(folder / "b.png")
    (folder / "c.jpg").write_bytes(exif_retagged_jpeg())
    db = tmp_path / "db"
    for run in range(2):  # and again: the good files are not re-embedded, the bad one is reported again
        out = CliRunner().invoke(cli, ["index", str(folder), "--db", str(db), "-m", str(tiny_model_path), "-q"])
        assert out.exit_code == 0, out.output
        assert ("added 2" if run == 0 else "added 0, skipped 2") in out.output
        assert "failed 1" in out.output and "c.jpg" in out.output and "cannot decode image" in out.output
    assert len(Store.open(db)) == 2


def test_a_second_writer_thread_is_refused_not_duplicated(model, tmp_path):
    store = Store.open(tmp_path / "db", model)
    texts = [f"text number {i}" for i in range(40)]
    outcomes: list[object] = []
    entered = threading.Event()
    release = threading.Event()
    original = store._commit

    def slow_commit(rows, report):
        entered.set()
        release.wait(30)
        return original(rows, report)

    store._commit = slow_commit

    def add():
        try:
            outcomes.append(store.add([{"text": t} for t in texts], show_progress=False))
        except StoreError as exc:
            outcomes.append(exc)

    first = threading.Thread(target=add)
    first.start()
    assert entered.wait(30)
    second = threading.Thread(target=add)
    second.start()
    second.join(30)
    release.set()
    first.join(60)
    assert len(outcomes) == 2
    refused = [o for o in outcomes if isinstance(o, StoreError)]
    assert len(refused) == 1 and "another thread" in str(refused[0])
    assert len(store) == 40


def test_a_large_text_file_is_streamed_not_held(tmp_path):
    big = tmp_path / "lines.txt"
    with big.open("w") as f:
        for i in range(300_000):
            f.write(f"passage number {i} about something worth finding\n")
    tracemalloc.start()
    count = sum(1 for _ in discover([big]))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 300_000
    assert peak < 16 * 2**20, f"discovery held {peak / 2**20:.0f} MB"


def test_add_commits_while_discovery_is_still_reading(model, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"line {i}\n" for i in range(50)))
    store = Store.open(tmp_path / "db", model)
    seen_at_commit = []
    original = store._commit

    def commit(rows, report):
        seen_at_commit.append(len(store))
        return original(rows, report)

    store._commit = commit
    report = store.add([lines], commit_every=10, show_progress=False)
    assert report.added == 50 and seen_at_commit == [0, 10, 20, 30, 40]


def test_same_lines_same_hashes_as_whole_file_reading(tmp_path):
    """Line splitting while streaming equals str.splitlines on the whole text (stores stay compatible)."""
    text = "first\r\nsecond\rthird\x0cfourth\u2028fifth\n\n  sixth  \n"
    path = tmp_path / "mixed.txt"
    path.write_bytes(text.encode())
    got = [(r.text, r.metadata["line"]) for r in discover([path])]
    expected = [(line.strip(), n) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    assert got == expected


def test_invalid_utf8_mid_file_keeps_the_lines_before_and_names_the_line(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(("good line\n" * 2000).encode() + b"bad \xff\xfe line\n" + b"after\n")
    found = list(discover([path]))
    assert sum(1 for r in found if hasattr(r, "hash")) >= 1
    problems = [r for r in found if not hasattr(r, "hash")]
    assert len(problems) == 1 and "invalid UTF-8" in problems[0].reason and "#L" in problems[0].source


def test_a_csv_manifest_field_over_the_csv_limit_is_one_bad_row(tmp_path):
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "note"])
        writer.writerow(["short caption", "x"])
        writer.writerow(["long caption", "y" * 200_000])
        writer.writerow(["another caption", "z"])
    found = list(discover([manifest]))
    texts = [r.text for r in found if hasattr(r, "hash")]
    problems = [r for r in found if not hasattr(r, "hash")]
    assert texts == ["short caption", "another caption"]
    assert len(problems) == 1 and "malformed CSV row" in problems[0].reason and problems[0].source.endswith("#2")


@pytest.mark.parametrize("bad", ["abc'; DROP", "ABCDEF0123456789", "1234", "g" * 64, None, 5])
def test_add_vectors_refuses_a_hash_that_is_not_a_hex_digest(model, tmp_path, bad):
    store = Store.open(tmp_path / "db", model)
    vec = np.ones(model.embedding_dim, dtype=np.float32) / np.sqrt(model.embedding_dim)
    report = store.add_vectors([{"vector": vec, "kind": "text", "hash": bad},
                                {"vector": vec, "kind": "text", "hash": "ab" * 32}])
    assert report.added == 1 and len(report.failed) == 1 and "hex content hash" in report.failed[0][1]
    assert len(store.search(vec, k=5)) == 1 and len(store.search(vec, k=5)) == 1  # exact search still works
