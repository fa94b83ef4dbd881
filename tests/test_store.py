"""End-to-end tests of e5v.store on the generated tiny model and a real LanceDB directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lancedb")

from e5v.errors import ConfigMismatchError, StoreError  # noqa: E402
from e5v.store import Store  # noqa: E402

CAPTIONS = [("a red square with dots", "train"), ("a green panorama", "test"), ("a tall blue picture", "test")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, images) -> Path:
    """A folder of generated images with misleading or no extensions, a text file and a CSV manifest."""
    root = tmp_path_factory.mktemp("corpus")
    names = ["red.dat", "green", "blue.txt", "yellow.png"]  # content sniffing must find all four
    for name, image in zip(names, images.values()):
        fmt = "JPEG" if name == "yellow.png" else "PNG"
        image.save(root / name, format=fmt)
    (root / "notes.md").write_text("first passage about cats\n\nsecond passage about dogs\n")
    rows = ["image,text,split,source"] + [f",{t},{s},caption{i}" for i, (t, s) in enumerate(CAPTIONS)]
    rows.append("red.dat,make it blue,test,edit0")
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    (root / ".hidden").write_text("must be skipped\n")
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory, model, corpus) -> Store:
    s = Store.open(tmp_path_factory.mktemp("db") / "store", model)
    report = s.add([corpus], batch_size=4, show_progress=False, commit_every=3)
    assert report.failed == [] and report.unsupported == []
    assert report.added == 4 + 2 + 3 + 1  # images, text lines, captions, composed row
    return s


def test_search_each_way_scores_are_exact_cosines(store, model, corpus, images):
    image_paths = {p.name: p for p in corpus.iterdir() if not p.name.startswith((".", "notes", "captions"))}
    queries = ["a green panorama", image_paths["blue.txt"], {"image": image_paths["red.dat"], "text": "make it blue"}]
    expect = [("text", str((corpus / "captions.csv").resolve()) + "#2"), ("image", str(image_paths["blue.txt"].resolve())),
              ("composed", str(image_paths["red.dat"].resolve()))]
    for query, (kind, path) in zip(queries, expect):
        hits = store.search(query, k=len(store))
        assert (hits[0]["kind"], hits[0]["path"]) == (kind, path)
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True) and len(hits) == len(store)
        # every score equals the cosine computed independently with the model
        q = model.encode([query])[0]
        top = hits[1]
        item = top["text"] if top["kind"] == "text" else Path(top["path"])
        if top["kind"] == "composed":
            item = {"image": Path(top["path"]), "text": top["text"]}
        assert top["score"] == pytest.approx(float(model.encode([item])[0] @ q), abs=1e-4)


def test_every_item_ranks_itself_first(store, model, corpus):
    for hit in store.search(np.ones(store.dim, np.float32), k=len(store)):
        item = hit["text"] if hit["kind"] == "text" else Path(hit["path"])
        if hit["kind"] == "composed":
            item = {"image": Path(hit["path"]), "text": hit["text"]}
        own = store.search(model.encode([item])[0], k=1)[0]
        assert own["id"] == hit["id"] and own["score"] == pytest.approx(1.0, abs=1e-4)


def test_metadata_and_kind_filters(store):
    hits = store.search("anything", k=20, where="json_get_string(metadata, 'split') = 'test'")
    assert sorted(h["metadata"]["source"] for h in hits) == ["caption1", "caption2", "edit0"]
    assert {h["kind"] for h in store.search("x", k=20, kind="image")} == {"image"}
    assert len(store.search("x", k=20, kind="image")) == 4
    only = store.search("x", k=20, kind="text", where="json_get_string(metadata, 'split') = 'train'")
    assert [h["text"] for h in only] == ["a red square with dots"]
    lines = store.search("x", k=20, where="json_get_int(metadata, 'line') = 3")
    assert [h["text"] for h in lines] == ["second passage about dogs"]
    with pytest.raises(StoreError, match="no_such_column"):
        store.search("x", where="no_such_column = 1")
    with pytest.raises(ValueError, match="kind"):
        store.search("x", kind="video")


def test_readd_is_idempotent_and_dedupes_content(store, corpus, tmp_path):
    before = len(store)
    copy = tmp_path / "copy"
    shutil.copytree(corpus, copy)
    (copy / "renamed-duplicate").write_bytes((corpus / "green").read_bytes())
    report = store.add([corpus, copy, {"text": "a green panorama"}], show_progress=False)
    assert report.added == 0 and report.skipped_existing == 2 * before + 2
    assert len(store) == before


def test_bad_files_are_reported_and_skipped(model, tmp_path, images):
    data = tmp_path / "data"
    data.mkdir()
    images["red square"].save(data / "good.png")
    good = (data / "good.png").read_bytes()
    (data / "truncated.png").write_bytes(good[: len(good) // 3])  # sniffed as an image, fails to decode
    (data / "dangling").symlink_to(tmp_path / "gone.png")  # unreadable
    (data / "blob.bin").write_bytes(bytes(range(256)) * 4)  # neither image nor text
    (data / "m.jsonl").write_text('{"image": "nope.png"}\nnot json\n{"text": "fine", "tag": 1}\n')
    store = Store.open(tmp_path / "db", model)
    report = store.add([data, tmp_path / "missing-dir"], show_progress=False)
    assert report.added == 2  # good.png and the "fine" row
    reasons = dict(report.failed)
    assert any("truncated.png" in s for s in reasons) and any("dangling" in s for s in reasons)
    assert any(s.endswith("m.jsonl#1") for s in reasons) and any("invalid JSON" in r for r in reasons.values())
    assert any("missing-dir" in s for s in reasons)
    assert [s for s, _ in report.unsupported] == [str(data / "blob.bin")]
    assert "failed 5" in str(report)
    assert store.search("fine", k=1)[0]["metadata"] == {"tag": 1}


def test_config_mismatch_is_refused(store, tiny_model_path):
    from e5v import E5V

    other = E5V.from_pretrained(tiny_model_path, image_mode="base")
    with pytest.raises(ConfigMismatchError, match="image_mode: store has 'anyres', model has 'base'"):
        Store.open(store.root, other)
    vector_only = Store.open(store.root)  # no model: vector search without a config check
    assert vector_only.search(np.ones(store.dim, np.float32), k=1)
    with pytest.raises(StoreError, match="without a model"):
        vector_only.search("text")
    with pytest.raises(ValueError, match="dims"):
        vector_only.search(np.ones(store.dim + 1, np.float32))


def test_foreign_corrupt_readonly_and_locked(model, store, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.pdf").write_bytes(b"%PDF")
    with pytest.raises(StoreError, match="not an e5v store"):
        Store.open(foreign, model)
    with pytest.raises(StoreError, match="no store"):
        Store.open(tmp_path / "absent")
    with pytest.raises(StoreError, match="cannot create"):
        Store.open("/proc/e5v-store", model)  # a read-only location even for root
    corrupt = tmp_path / "corrupt"
    shutil.copytree(store.root, corrupt)
    for manifest in (corrupt / "items.lance" / "_versions").iterdir():
        manifest.write_bytes(b"garbage")
    with pytest.raises(StoreError, match="corrupted or unreadable"):
        Store.open(corrupt, model).search("x")
    holder = subprocess.Popen(  # another process holds the write lock until we close its stdin
        [sys.executable, "-c", "import sys; from e5v.store.lock import WriterLock\n"
         f"with WriterLock({str(store.root)!r}):\n    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match=rf"being written by another process \(pid {holder.pid}\)"):
            store.add([{"text": "blocked"}], show_progress=False)
        assert store.search("x", k=1)  # reading while locked is fine
    finally:
        holder.communicate("")
    assert store.add([{"text": "unblocked"}], show_progress=False).added == 1  # released on exit


def test_store_killed_during_creation_is_recreated_not_corrupt(model, tmp_path):
    root = tmp_path / "db"
    (root / "items.lance" / "data").mkdir(parents=True)  # what a kill before the first manifest leaves
    (root / "items.lance" / "data" / "orphan.lance").write_bytes(b"partial")
    store = Store.open(root, model)
    assert len(store) == 0
    assert store.add([{"text": "hello", "metadata": {"n": 1}}], show_progress=False).added == 1
    assert store.search("hello", k=1)[0]["metadata"] == {"n": 1}


def test_walk_sniffs_content_and_hashes_consistently(tmp_path, images):
    from e5v.store.walk import Problem, Record, discover

    images["red square"].save(tmp_path / "photo.txt", format="PNG")  # an image named like text
    (tmp_path / "words.jpg").write_text("one\ntwo\n")  # text named like an image
    (tmp_path / "m.csv").write_text("image,text,k\nphoto.txt,,v\n")
    found = list(discover([tmp_path, {"image": tmp_path / "photo.txt"}], text_unit="line"))
    assert not [f for f in found if isinstance(f, Problem)]
    kinds = sorted((r.kind, Path(r.path).name if r.path else None) for r in found if isinstance(r, Record))
    assert kinds == [("image", "photo.txt"), ("image", "photo.txt"), ("image", "photo.txt"),
                     ("text", "words.jpg#L1"), ("text", "words.jpg#L2")]
    image_hashes = {r.hash for r in found if r.kind == "image"}
    assert len(image_hashes) == 1  # folder file, manifest row and in-memory path: the same content
    whole = [r for r in discover([tmp_path / "words.jpg"], text_unit="file")]
    assert [r.text for r in whole] == ["one\ntwo"]
