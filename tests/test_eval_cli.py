"""`e5v eval ...` end to end on the generated tiny model, checked against an independent computation.

Each command reads fixtures written in the real formats, embeds through the CLI (own model load,
on-disk cache), and its JSON must equal Recall@k / Spearman computed here from ``model.encode`` and a
brute-force argsort (random tiny-model vectors have no exact ties). Numbers from a random model say
nothing about E5-V's quality; they only prove the plumbing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from e5v.cli import cli
from e5v.eval.render import render_text
from e5v.prompts import fashioniq_prompts
from test_eval_formats import STSB_TEST, write_cirr, write_fashioniq

BASE = ["--image-mode", "base", "--batch-size", "4", "--no-progress"]


def _run(args: list[str]) -> dict:
    result = CliRunner().invoke(cli, ["eval", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _report(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _brute_recall(queries, gallery, positives, ks, exclude=None) -> dict:
    scores = _unit(queries) @ _unit(gallery).T
    if exclude is not None:
        for i, j in enumerate(exclude):
            scores[i, j] = -np.inf
    order = np.argsort(-scores, axis=1)
    ranks = [min(np.where(np.isin(order[i], pos))[0]) + 1 for i, pos in enumerate(positives)]
    return {f"R@{k}": 100.0 * np.mean(np.array(ranks) <= k) for k in ks}


def _images(directory: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = directory / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + 6 * i, 56, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


CAPTIONS = [["a dog runs in the grass", "a brown dog"], ["a red car near the house"],
            ["snow on the mountain", "a cold peak", "white snow"], ["two people ride bicycles"],
            ["a plate of food with rice"]]


def _jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "caps.jsonl"
    path.write_text("".join(json.dumps({"image": f"img{i}.png", "captions": c}) + "\n" for i, c in enumerate(CAPTIONS)))
    return path


def _owners():
    return [i for i, caps in enumerate(CAPTIONS) for _ in caps]


def test_retrieval_matches_independent_computation_and_reruns_from_cache(tiny_model_path, model, tmp_path):
    images = _images(tmp_path / "imgs", len(CAPTIONS))
    out, cache = tmp_path / "out" / "retrieval", tmp_path / "cache"
    args = ["retrieval", "-m", str(tiny_model_path), "--images", str(tmp_path / "imgs"),
            "--captions", str(_jsonl(tmp_path)), "--cache-dir", str(cache), *BASE]
    _run([*args, "-o", str(out)])
    report = _report(out)
    texts = [c for caps in CAPTIONS for c in caps]
    t = model.encode(texts)
    v = model.encode(images, image_mode="base")
    owners = _owners()
    expected_t2i = _brute_recall(t, v, [[o] for o in owners], (1, 5, 10))
    expected_i2t = _brute_recall(v, t, [[j for j, o in enumerate(owners) if o == i] for i in range(5)], (1, 5, 10))
    assert report["table"]["text->image"] == pytest.approx(expected_t2i)
    assert report["table"]["image->text"] == pytest.approx(expected_i2t)
    assert report["counts"] == {"images": 5, "captions": 8}
    assert report["config"]["image_mode"] == "base" and report["config"]["model"] == str(tiny_model_path)
    assert report["limit"] is None
    markdown = out.with_suffix(".md").read_text()
    assert "| text->image |" in markdown and str(tiny_model_path) in markdown
    shards = sorted(cache.rglob("*.npy"))
    second = _run(args)  # re-run: everything from the cache, nothing new written
    assert sorted(cache.rglob("*.npy")) == shards
    assert f"| text->image | {report['table']['text->image']['R@1']:.2f} |" in second.output


def test_limit_and_errors_are_clean(tiny_model_path, tmp_path):
    _images(tmp_path / "imgs", len(CAPTIONS))
    captions = _jsonl(tmp_path)
    out = tmp_path / "small.json"
    _run(["retrieval", "-m", str(tiny_model_path), "--images", str(tmp_path / "imgs"), "--captions", str(captions),
          "--limit", "2", "--no-cache", "-o", str(out), *BASE])
    report = _report(out)
    assert report["limit"] == 2 and report["counts"] == {"images": 2, "captions": 3}
    assert "not comparable" in out.with_suffix(".md").read_text()
    (tmp_path / "imgs" / "img3.png").unlink()
    result = CliRunner().invoke(cli, ["eval", "retrieval", "-m", str(tiny_model_path), "--images",
                                      str(tmp_path / "imgs"), "--captions", str(captions), *BASE])
    assert result.exit_code == 1 and "img3.png" in result.output and "Traceback" not in result.output


def test_i2i_renders_captions_and_matches(tiny_model_path, model, tmp_path):
    images = _images(tmp_path / "imgs", len(CAPTIONS), seed=1)
    karpathy = {"dataset": "flickr30k", "images": [
        {"filename": f"img{i}.png", "split": "test", "sentences": [{"raw": c, "tokens": c.split()} for c in caps]}
        for i, caps in enumerate(CAPTIONS)]}
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(karpathy))
    out = tmp_path / "i2i"
    _run(["i2i", "-m", str(tiny_model_path), "--images", str(tmp_path / "imgs"), "--captions",
          str(tmp_path / "dataset_flickr30k.json"), "--cache-dir", str(tmp_path / "cache"), "-o", str(out), *BASE])
    report = _report(out)
    rendered = model.encode([render_text(c) for caps in CAPTIONS for c in caps], image_mode="base")
    v = model.encode(images, image_mode="base")
    expected = _brute_recall(rendered, v, [[o] for o in _owners()], (1, 5, 10))
    assert report["table"]["rendered text->image"] == pytest.approx(expected)
    assert report["config"]["render"]["width"] == 800 and report["config"]["render"]["font_size"] == 40


def test_cirr_excludes_the_reference_and_matches(tiny_model_path, model, tmp_path):
    names = write_cirr(tmp_path / "cirr", tmp_path / "cirr", n_images=7)
    out = tmp_path / "cirr.json"
    _run(["composed", "--dataset", "cirr", "--root", str(tmp_path / "cirr"), "-m", str(tiny_model_path),
          "--cache-dir", str(tmp_path / "cache"), "-o", str(out), *BASE])
    report = _report(out)
    caps = json.loads((tmp_path / "cirr" / "captions" / "cap.rc2.val.json").read_text())
    path = {n: tmp_path / "cirr" / "dev" / f"{n}.png" for n in names}
    gallery = model.encode([path[n] for n in names], prompt="cirr-target", image_mode="base")
    queries = model.encode([{"image": path[c["reference"]], "text": " ".join(c["caption"].split())} for c in caps],
                           image_mode="base")
    expected = _brute_recall(queries, gallery, [[names.index(c["target_hard"])] for c in caps], (1, 5, 10),
                             exclude=[names.index(c["reference"]) for c in caps])
    without = _brute_recall(queries, gallery, [[names.index(c["target_hard"])] for c in caps], (1, 5, 10))
    assert expected != without  # the fixture is sensitive to the exclusion (each query resembles its reference)
    row = report["table"]["cirr-val"]
    assert {k: row[k] for k in ("R@1", "R@5", "R@10")} == pytest.approx(expected)
    assert row["R@10"] == 100.0  # 6 candidates once the reference is removed: R@10 cannot miss
    assert 0 <= row["R_subset@1"] <= row["R_subset@2"] <= row["R_subset@3"] == 100.0  # <= 3 candidates
    assert report["config"]["prompts_used"]["target"] == "<image>\n Describe this image in one word:"
    assert "describe modified image" in report["config"]["prompts_used"]["query"]


def test_fashioniq_sums_both_caption_orders(tiny_model_path, model, tmp_path):
    names = write_fashioniq(tmp_path / "fiq", "dress", n=6)
    out = tmp_path / "fiq.json"
    _run(["composed", "--dataset", "fashioniq", "--category", "dress", "--root", str(tmp_path / "fiq"),
          "-m", str(tiny_model_path), "--no-cache", "-o", str(out), *BASE])
    report = _report(out)
    caps = json.loads((tmp_path / "fiq" / "captions" / "cap.dress.val.json").read_text())
    prompts = fashioniq_prompts("dress")
    img = lambda n: tmp_path / "fiq" / "images" / f"{n}.png"  # noqa: E731
    gallery = model.encode([img(n) for n in names], prompt=prompts, image_mode="base")
    orders = [[", ".join(s.strip(".?, ") for s in c["captions"][::d]) for c in caps] for d in (1, -1)]
    summed = sum(model.encode([{"image": img(c["candidate"]), "text": t} for c, t in zip(caps, texts)],
                              prompt=prompts, image_mode="base", normalize=False) for texts in orders)
    expected = _brute_recall(summed, gallery, [[names.index(c["target"])] for c in caps], (10, 50))
    assert report["table"]["dress"] == pytest.approx(expected)
    assert report["counts"] == {"dress_queries": 7, "dress_gallery": 6}
    assert "change the style of this dress" in report["config"]["prompts_used"]["dress"]["query"]


def test_sts_real_stsb_file_with_limit(tiny_model_path, model, tmp_path):
    if not STSB_TEST.is_file():
        pytest.skip(f"STS-B test split not found at {STSB_TEST} (shared/data beside the repo)")
    from scipy.stats import spearmanr

    from e5v.eval.sts_formats import read_sts

    out = tmp_path / "stsb"
    _run(["sts", "--data", str(STSB_TEST), "--limit", "40", "-m", str(tiny_model_path),
          "--cache-dir", str(tmp_path / "cache"), "-o", str(out), "--no-progress"])
    report = _report(out)
    (subset,) = read_sts(STSB_TEST, limit=40)
    a = model.encode([x for x, _ in subset.pairs])
    b = model.encode([y for _, y in subset.pairs])
    expected = 100 * spearmanr(np.sum(a * b, axis=1), subset.gold).statistic
    assert report["table"]["sts-test.csv"]["spearman"] == pytest.approx(expected, abs=1e-3)
    assert report["config"]["format"] == "stsb" and report["counts"]["sts-test.csv_pairs"] == 40


def test_sts12_16_directory_reports_each_subset_and_all(tiny_model_path, tmp_path):
    sents = ["a dog runs", "a cat sleeps", "the sky is blue", "a man plays guitar", "snow on the mountain",
             "a red car", "people ride bicycles", "a plate of rice"]
    (tmp_path / "STS.input.headlines.txt").write_text("".join(f"{sents[i]}\t{sents[(i + 1) % 8]}\n" for i in range(8)))
    (tmp_path / "STS.gs.headlines.txt").write_text("".join(f"{i % 5}.0\n" for i in range(8)))
    (tmp_path / "STS.input.images.txt").write_text("".join(f"{sents[i]}\t{sents[(i + 3) % 8]}\n" for i in range(6)))
    (tmp_path / "STS.gs.images.txt").write_text("1.0\n\n3.5\n2.0\n\n4.0\n")
    out = tmp_path / "sts14"
    result = _run(["sts", "--data", str(tmp_path), "-m", str(tiny_model_path), "--no-cache", "-o", str(out),
                   "--progress"])
    assert "sentences: 100%" in result.stderr  # the progress bar (tqdm on stderr)
    report = _report(out)
    assert list(report["table"]) == ["headlines", "images", "all"]
    assert report["counts"]["images_pairs"] == 4 and report["counts"]["all_pairs"] == 12
    assert all(-100 <= row["spearman"] <= 100 for row in report["table"].values())


@pytest.mark.slow
def test_lora_adapter_changes_the_space_and_is_recorded(tiny_model_path, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaNextForConditionalGeneration

    torch.manual_seed(0)
    full = LlavaNextForConditionalGeneration.from_pretrained(tiny_model_path)
    adapter = get_peft_model(full.model.language_model,
                             LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter.save_pretrained(tmp_path / "adapter")
    data = tmp_path / "sts-dev.csv"
    data.write_text("".join(f"g\tf\t2012\t{i:04d}\t{i % 4}.0\t{a}\t{b}\n" for i, (a, b) in enumerate(
        [("a dog runs", "a dog walks"), ("a cat", "the sky"), ("red car", "a car"), ("snow", "rice"),
         ("a man sings", "a man is singing"), ("bikes", "food")])))
    cache = tmp_path / "cache"
    base = ["sts", "--data", str(data), "-m", str(tiny_model_path), "--cache-dir", str(cache), "--no-progress"]
    _run([*base, "-o", str(tmp_path / "base")])
    _run([*base, "--lora", str(tmp_path / "adapter"), "-o", str(tmp_path / "lora")])
    assert len([d for d in cache.iterdir() if (d / "space.json").is_file()]) == 2  # the adapter's vectors live apart
    assert _report(tmp_path / "lora")["config"]["lora"] == str((tmp_path / "adapter").resolve())
    assert _report(tmp_path / "base")["config"]["lora"] is None


@pytest.mark.slow
def test_openvino_export_gives_the_same_table_in_its_own_cache_space(tiny_model_path, tmp_path):
    pytest.importorskip("openvino")
    from e5v.export import export_openvino

    export_openvino(str(tiny_model_path), tmp_path / "ov", weights="fp32", log=lambda *_: None)
    _images(tmp_path / "imgs", len(CAPTIONS))
    captions, cache = _jsonl(tmp_path), tmp_path / "cache"
    tables = {}
    for name, path in (("torch", tiny_model_path), ("openvino", tmp_path / "ov")):
        _run(["retrieval", "-m", str(path), "--images", str(tmp_path / "imgs"), "--captions", str(captions),
              "--cache-dir", str(cache), "-o", str(tmp_path / name), *BASE])
        report = _report(tmp_path / name)
        assert report["config"]["backend"] == name
        tables[name] = report["table"]
    assert tables["openvino"] == tables["torch"]  # fp32 IR: same vectors to ~1e-6, same ranks
    assert len([d for d in cache.iterdir() if (d / "space.json").is_file()]) == 2


def test_fully_cached_rerun_does_not_load_the_model(tiny_model_path, tmp_path):
    import os
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_path, model_dir)
    _images(tmp_path / "imgs", len(CAPTIONS))
    args = ["retrieval", "-m", str(model_dir), "--images", str(tmp_path / "imgs"), "--captions",
            str(_jsonl(tmp_path)), "--cache-dir", str(tmp_path / "cache"), *BASE]
    first = _run(args).output
    # Break the weights but keep size and mtime: the fingerprint is unchanged, loading would now fail.
    weights = next(model_dir.glob("*.safetensors"))
    stat = weights.stat()
    weights.write_bytes(b"\0" * stat.st_size)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _run(args).output.split("\n| count")[0] == first.split("\n| count")[0]  # served from the cache
    more = CliRunner().invoke(cli, ["eval", *args[:-len(BASE)], "--captions-per-image", "1", *BASE])
    assert more.exit_code == 0  # fewer captions: still all cached
    (tmp_path / "imgs" / "img0.png").write_bytes((tmp_path / "imgs" / "img1.png").read_bytes()[:-1] + b"\1")
    needs_model = CliRunner().invoke(cli, ["eval", *args])
    # the broken weights are noticed when the model is needed (the memory check reads the shard headers first)
    assert needs_model.exit_code == 1 and ("cannot load the model weights" in needs_model.output
                                           or "corrupt header" in needs_model.output), needs_model.output


def test_sts_several_datasets_report_their_average(tiny_model_path, tmp_path):
    sents = ["a dog runs", "a cat sleeps", "the sky is blue", "a man plays guitar", "snow on the mountain",
             "a red car", "people ride bicycles", "a plate of rice"]
    sts14 = tmp_path / "STS14"
    sts14.mkdir()
    for name, shift in (("headlines", 1), ("images", 2)):
        (sts14 / f"STS.input.{name}.txt").write_text("".join(f"{sents[i]}\t{sents[(i + shift) % 8]}\n" for i in range(8)))
        (sts14 / f"STS.gs.{name}.txt").write_text("".join(f"{(i * shift) % 5}.0\n" for i in range(8)))
    stsb = tmp_path / "sts-test.csv"
    stsb.write_text("".join(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{(i * 7) % 6}.000\t{sents[i]}\t{sents[7 - i]}\n"
                            for i in range(8)))
    common = ["-m", str(tiny_model_path), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    _run(["sts", "--data", str(sts14), "--data", str(stsb), *common, "-o", str(tmp_path / "both")])
    _run(["sts", "--data", str(sts14), *common, "-o", str(tmp_path / "one")])
    both, one = _report(tmp_path / "both")["table"], _report(tmp_path / "one")["table"]
    assert list(both) == ["STS14: headlines", "STS14: images", "STS14: all", "sts-test.csv", "average"]
    assert both["STS14: all"] == pytest.approx(one["all"])  # pooled within a dataset only
    expected = (both["STS14: all"]["spearman"] + both["sts-test.csv"]["spearman"]) / 2
    assert both["average"]["spearman"] == pytest.approx(expected)


@pytest.mark.slow
def test_qwen2vl_family_runs_the_same_protocol(tmp_path):
    from e5v import E5V
    from e5v.testing_qwen import make_tiny_qwen2vl

    path = make_tiny_qwen2vl(tmp_path / "qwen")
    images = _images(tmp_path / "imgs", len(CAPTIONS))
    out = tmp_path / "qwen-retrieval"
    _run(["retrieval", "-m", str(path), "--images", str(tmp_path / "imgs"), "--captions", str(_jsonl(tmp_path)),
          "--no-cache", "--no-progress", "-o", str(out)])
    report = _report(out)
    model = E5V.from_pretrained(path)
    t = model.encode([c for caps in CAPTIONS for c in caps])
    v = model.encode(images)
    assert report["table"]["text->image"] == pytest.approx(_brute_recall(t, v, [[o] for o in _owners()], (1, 5, 10)))
    assert report["config"]["prompt_family"] == model.embedding_config()["prompt_family"]
