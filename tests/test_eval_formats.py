"""Dataset readers on small fixtures written in the real distributed layouts (and the real STS-B test file)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

import pytest
from PIL import Image

from e5v.errors import InputError
from e5v.eval.datasets import fashioniq_texts, read_cirr, read_fashioniq, read_retrieval
from e5v.eval.sts_formats import detect_format, read_sts

REPO = Path(__file__).resolve().parent.parent
STSB_TEST = REPO / "../shared/data/stsbenchmark/sts-test.csv"


def _image(path: Path) -> Path:
    """A small random image, different for each file name (identical images would all tie)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)
    return path


def _sentences(*raws):
    return [{"tokens": r.lower().split(), "raw": r, "imgid": 0, "sentid": i} for i, r in enumerate(raws)]


# ------------------------------------------------------------------------------- retrieval
def test_karpathy_coco_test_split_first_five_captions(tmp_path):
    for name in ("COCO_val2014_000000000042.jpg", "COCO_val2014_000000000073.jpg"):
        _image(tmp_path / "val2014" / name)
    data = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "COCO_val2014_000000000042.jpg", "split": "test", "cocoid": 42,
         "sentences": _sentences("A dog runs. ", "A  dog\nplays.", "c3", "c4", "c5", "c6 (sixth, dropped)")},
        {"filepath": "train2014", "filename": "COCO_train2014_000000000009.jpg", "split": "train", "cocoid": 9,
         "sentences": _sentences("train caption")},
        {"filepath": "val2014", "filename": "COCO_val2014_000000000073.jpg", "split": "restval", "cocoid": 73,
         "sentences": _sentences("restval caption")},
    ]}
    (tmp_path / "dataset_coco.json").write_text(json.dumps(data))
    ds = read_retrieval(tmp_path / "dataset_coco.json", tmp_path)
    assert ds.images == [tmp_path / "val2014" / "COCO_val2014_000000000042.jpg"]
    assert ds.captions == ["A dog runs.", "A dog plays.", "c3", "c4", "c5"]
    assert ds.caption_image == [0] * 5
    restval = read_retrieval(tmp_path / "dataset_coco.json", tmp_path, split="restval", captions_per_image=1)
    assert restval.captions == ["restval caption"]


def test_karpathy_flickr_and_flat_coco_layout(tmp_path):
    _image(tmp_path / "1000092795.jpg")
    _image(tmp_path / "COCO_val2014_000000000042.jpg")  # COCO images stored flat, without val2014/
    flickr = {"dataset": "flickr30k", "images": [
        {"filename": "1000092795.jpg", "split": "test", "sentences": _sentences(*[f"f{i}" for i in range(5)])}]}
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(flickr))
    ds = read_retrieval(tmp_path / "dataset_flickr30k.json", tmp_path)
    assert ds.images == [tmp_path / "1000092795.jpg"] and len(ds.captions) == 5
    coco = {"images": [{"filepath": "val2014", "filename": "COCO_val2014_000000000042.jpg", "split": "test",
                        "sentences": _sentences("x")}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    assert read_retrieval(tmp_path / "coco.json", tmp_path).images == [tmp_path / "COCO_val2014_000000000042.jpg"]


def test_jsonl_captions_limit_and_errors(tmp_path):
    for i in range(3):
        _image(tmp_path / "imgs" / f"{i}.png")
    rows = [{"image": f"{i}.png", "captions": [f"cap {i} {j}" for j in range(i + 1)]} for i in range(3)]
    path = tmp_path / "caps.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = read_retrieval(path, tmp_path / "imgs")
    assert ds.caption_image == [0, 1, 1, 2, 2, 2]
    assert read_retrieval(path, tmp_path / "imgs", limit=2).caption_image == [0, 1, 1]
    path.write_text(json.dumps(rows[0]) + "\n{not json\n")
    with pytest.raises(InputError, match=r"caps.jsonl:2"):
        read_retrieval(path, tmp_path / "imgs")
    path.write_text(json.dumps({"image": "0.png", "captions": "one string"}) + "\n")
    with pytest.raises(InputError, match="list of strings"):
        read_retrieval(path, tmp_path / "imgs")
    path.write_text(json.dumps({"image": "missing.png", "captions": ["a"]}) + "\n")
    with pytest.raises(InputError, match="missing.png"):
        read_retrieval(path, tmp_path / "imgs")


# ------------------------------------------------------------------------------- CIRR / FashionIQ
def write_cirr(root: Path, images_base: Path, n_images: int = 6) -> list[str]:
    """CIRR's real layout: captions/cap.rc2.val.json, image_splits/split.rc2.val.json -> ./dev/<name>.png."""
    names = [f"dev-{i}-0-img{i % 2}" for i in range(n_images)]
    for name in names:
        _image(images_base / "dev" / f"{name}.png")
    caps = [{"pairid": k, "reference": names[k], "target_hard": names[k + 1],
             "target_soft": {names[k + 1]: 1.0}, "caption": f"make it  number {k + 1}",
             "img_set": {"id": k, "members": names[max(0, k - 1):k + 3]}} for k in range(n_images - 1)]
    (root / "captions").mkdir(parents=True, exist_ok=True)
    (root / "image_splits").mkdir(parents=True, exist_ok=True)
    (root / "captions" / "cap.rc2.val.json").write_text(json.dumps(caps))
    (root / "image_splits" / "split.rc2.val.json").write_text(json.dumps({n: f"./dev/{n}.png" for n in names}))
    return names


def test_cirr_layouts_and_limit(tmp_path):
    names = write_cirr(tmp_path / "a", tmp_path / "a")
    ds = read_cirr(tmp_path / "a")
    assert list(ds.gallery) == names and len(ds.queries) == 5
    assert ds.queries[0].text == "make it number 1" and ds.queries[0].target == names[1]
    assert ds.gallery[names[2]].resolve() == (tmp_path / "a" / "dev" / f"{names[2]}.png").resolve()
    # CIRR repo layout: annotations in <root>/cirr/, images relative to <root>
    write_cirr(tmp_path / "b" / "cirr", tmp_path / "b")
    assert read_cirr(tmp_path / "b").gallery[names[0]].is_file()
    limited = read_cirr(tmp_path / "a", limit=1)
    assert len(limited.queries) == 1 and set(limited.gallery) == set(names[0:3])
    (tmp_path / "a" / "dev" / f"{names[3]}.png").unlink()
    with pytest.raises(InputError, match=names[3]):
        read_cirr(tmp_path / "a")


def write_fashioniq(root: Path, category: str = "dress", n: int = 4) -> list[str]:
    names = [f"B00{category}{i}" for i in range(n)]
    for name in names + ["B00notinsplit"]:
        _image(root / "images" / f"{name}.png")
    caps = [{"target": names[(i + 1) % n], "candidate": names[i], "captions": [f"is longer {i}.", "has red dots?"]}
            for i in range(n)]
    caps.append({"target": names[0], "candidate": "B00notinsplit", "captions": ["is blue", "shorter"]})
    (root / "captions").mkdir(parents=True, exist_ok=True)
    (root / "image_splits").mkdir(parents=True, exist_ok=True)
    (root / "captions" / f"cap.{category}.val.json").write_text(json.dumps(caps))
    (root / "image_splits" / f"split.{category}.val.json").write_text(json.dumps(names))
    return names


def test_fashioniq_layout_and_caption_orders(tmp_path):
    names = write_fashioniq(tmp_path)
    ds = read_fashioniq(tmp_path, "dress")
    assert list(ds.gallery) == names and len(ds.queries) == 5
    assert ds.queries[0].texts == ("is longer 0, has red dots", "has red dots, is longer 0")
    assert "B00notinsplit" in ds.references and "B00notinsplit" not in ds.gallery
    assert fashioniq_texts([" is red. ", "?shorter?"]) == ("is red, shorter", "shorter, is red")
    with pytest.raises(InputError, match="cap.shirt.val.json"):
        read_fashioniq(tmp_path, "shirt")
    with pytest.raises(InputError, match="category"):
        read_fashioniq(tmp_path, "shoes")


# ------------------------------------------------------------------------------- STS
def test_real_stsb_test_split():
    if not STSB_TEST.is_file():
        pytest.skip(f"STS-B test split not found at {STSB_TEST} (shared/data beside the repo)")
    (subset,) = read_sts(STSB_TEST)
    assert len(subset.pairs) == 1379 and len(subset.gold) == 1379
    assert subset.pairs[0] == ("A girl is styling her hair.", "A girl is brushing her hair.")
    assert subset.gold[0] == 2.5 and min(subset.gold) == 0.0 and max(subset.gold) == 5.0
    lines = STSB_TEST.read_text(encoding="utf-8").splitlines()
    extra = [i for i, line in enumerate(lines) if len(line.split("\t")) == 9]
    assert len(extra) == 284
    cols = lines[extra[0]].split("\t")  # an extra-column line still yields its own sentences
    assert subset.pairs[extra[0]] == (" ".join(cols[5].split()), " ".join(cols[6].split()))


def test_stsb_fixture_quotes_extra_columns_and_errors(tmp_path):
    path = tmp_path / "sts-dev.csv"
    path.write_text('main-news\theadlines\t2013\t0001\t4.200\tHe said "yes.\tHe said yes.\n'
                    "main-forums\tanswer-answer\t2016\t0008\t3\tA b \tC d \tsource one\tsource two\n")
    (s,) = read_sts(path)
    assert s.pairs == [('He said "yes.', "He said yes."), ("A b", "C d")] and s.gold == [4.2, 3.0]
    path.write_text("main-news\theadlines\t2013\t0001\tfour\ta\tb\n")
    with pytest.raises(InputError, match="sts-dev.csv:1"):
        read_sts(path)


def test_sick_annotated_and_full_file(tmp_path):
    annotated = tmp_path / "SICK_test_annotated.txt"
    annotated.write_text("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
                         "6\tThere is no boy playing outdoors\tA boy is playing\t3.3\tCONTRADICTION\n"
                         "7\tA man sings\tA man is singing\t4.9\tENTAILMENT\n")
    (s,) = read_sts(annotated)
    assert s.gold == [3.3, 4.9] and s.pairs[1] == ("A man sings", "A man is singing")
    full = tmp_path / "SICK.txt"
    header = ("pair_ID\tsentence_A\tsentence_B\tentailment_label\trelatedness_score\tentailment_AB\tentailment_BA\t"
              "sentence_A_original\tsentence_B_original\tsentence_A_dataset\tsentence_B_dataset\tSemEval_set\n")
    row = "{id}\tA {id}\tB {id}\tNEUTRAL\t{score}\tA_neutral_B\tB_neutral_A\to\to\tFLICKR\tFLICKR\t{split}\n"
    full.write_text(header + row.format(id=1, score=2.0, split="TRAIN") + row.format(id=2, score=3.5, split="TEST")
                    + row.format(id=3, score=1.5, split="TRIAL") + row.format(id=4, score=4.5, split="TEST"))
    (s,) = read_sts(full)
    assert s.pairs == [("A 2", "B 2"), ("A 4", "B 4")] and s.gold == [3.5, 4.5]
    assert detect_format(full) == "sick"


def test_sts12_16_pairs_missing_gold_and_directory(tmp_path):
    (tmp_path / "STS.input.MSRpar.txt").write_text("a b\tc d\ne f\tg h\ni j\tk l\n")
    (tmp_path / "STS.gs.MSRpar.txt").write_text("4.000\n2.600\n0.5\n")
    # STS16 style: two extra source columns; STS14/15 style: empty gold lines = unscored pairs
    (tmp_path / "STS.input.answer-answer.txt").write_text("s1\ts2\tsrc1\tsrc2\nt1\tt2\tsrc\tsrc\nu1\tu2\tx\ty\n")
    (tmp_path / "STS.gs.answer-answer.txt").write_text("3\n\n1\n")
    (tmp_path / "STS.input.nogold.txt").write_text("x\ty\n")  # no gold file: skipped in a directory
    (tmp_path / "00-readme.txt").write_text("readme")
    subsets = read_sts(tmp_path)
    assert [s.name for s in subsets] == ["MSRpar", "answer-answer"]
    assert subsets[1].pairs == [("s1", "s2"), ("u1", "u2")] and subsets[1].gold == [3.0, 1.0]
    (one,) = read_sts(tmp_path / "STS.gs.MSRpar.txt")
    assert one.gold == [4.0, 2.6, 0.5] and one.pairs[2] == ("i j", "k l")
    assert [len(s.pairs) for s in read_sts(tmp_path, limit=1)] == [1, 1]
    with pytest.raises(InputError, match="STS.gs.nogold.txt"):
        read_sts(tmp_path / "STS.input.nogold.txt")
    (tmp_path / "STS.gs.MSRpar.txt").write_text("4.000\n2.600\n")
    with pytest.raises(InputError, match="3 lines"):
        read_sts(tmp_path / "STS.input.MSRpar.txt")
