"""Training on a generated model and generated triplets with a learnable rule.

Rule: a sentence is "<topic> <five filler words>"; the positive shares the anchor's topic with other
fillers, the hard negative shares the anchor's fillers with another topic. An untrained model ranks
by shared tokens (negative margin); training must teach it that the topic matters.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from e5v import E5V
from e5v.cli import cli

TOPICS = ["dog", "cat", "car", "sky", "man", "woman", "food", "snow", "guitar", "beach"]
FILLERS = ["a", "the", "runs", "in", "grass", "sleeps", "on", "sofa", "red", "blue", "near", "house", "is",
           "bright", "street", "plays", "with", "two", "people", "busy", "down", "quick", "brown", "lazy"]
STEPS = 30


def triplets(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topic, other = rng.sample(TOPICS, 2)
        mine, theirs = rng.sample(FILLERS, 5), rng.sample(FILLERS, 5)
        rows.append({"sent0": " ".join([topic] + mine), "sent1": " ".join([topic] + theirs),
                     "hard_neg": " ".join([other] + mine)})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def margin(model: E5V, rows: list[dict]) -> float:
    """Mean cos(anchor, positive) - cos(anchor, hard negative)."""
    a, p, n = (model.encode([r[k] for r in rows]) for k in ("sent0", "sent1", "hard_neg"))
    return float(np.mean((a * p).sum(1) - (a * n).sum(1)))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two-thread GEMMs on tiny tensors crawl on a loaded shared machine; one thread is steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tiny_model_path, tmp_path_factory):
    """One training run through the CLI (module-scoped: several tests inspect it)."""
    root = tmp_path_factory.mktemp("train")
    data = write_jsonl(root / "train.jsonl", triplets(480, seed=0))
    out = root / "adapter"
    result = CliRunner().invoke(cli, [
        "train", "--model", str(tiny_model_path), "--data", str(data), "--output", str(out),
        "--max-steps", str(STEPS), "--batch-size", "16", "--lr", "2e-3", "--warmup-steps", "3",
        "--lora-r", "8", "--lora-alpha", "16", "--save-every", "10", "--seed", "1", "--quiet",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_loss_falls_and_log_is_complete(trained):
    log = [json.loads(line) for line in (trained / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    losses = [r["loss"] for r in log]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    assert log[2]["lr"] == pytest.approx(2e-3) and log[-1]["lr"] < log[5]["lr"]  # warm-up then decay


def test_outputs_adapter_manifest_and_checkpoints(trained, tiny_model_path):
    config = json.loads((trained / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16
    assert sorted(config["target_modules"]) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                       "up_proj", "down_proj"])
    manifest = json.loads((trained / "e5v_train_manifest.json").read_text())
    assert manifest["base_model"] == str(tiny_model_path)
    assert manifest["steps"] == STEPS and manifest["data"]["rows"] == 480 and manifest["data"]["triplets"]
    assert manifest["hyperparameters"]["temperature"] == 0.05 and manifest["hyperparameters"]["lr"] == 2e-3
    last_loss = json.loads((trained / "train_log.jsonl").read_text().splitlines()[-1])["loss"]
    assert manifest["final_loss"] == last_loss
    assert "<|start_header_id|>user<|end_header_id|>" in manifest["text_prompt"]
    names = sorted(p.name for p in (trained / "checkpoints").iterdir())
    assert names == ["step-00000020", "step-00000030"]  # keep-checkpoints 2


def test_held_out_margin_rises(trained, tiny_model_path, model):
    held_out = triplets(48, seed=12345)
    before = margin(model, held_out)
    after = margin(E5V.from_pretrained(tiny_model_path, lora=trained), held_out)
    assert after > before + 0.2, (before, after)


def test_merged_checkpoint_matches_adapter_and_embeds_images(trained, tiny_model_path, tmp_path, images):
    from safetensors.torch import load_file
    from transformers import LlavaNextForConditionalGeneration

    out = tmp_path / "merged"
    result = CliRunner().invoke(cli, ["merge", "--model", str(tiny_model_path), "--lora", str(trained),
                                      "--output", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    texts = [r["sent0"] for r in triplets(8, seed=7)]
    with_adapter = E5V.from_pretrained(tiny_model_path, lora=trained)
    merged = E5V.from_pretrained(out)
    cos = (with_adapter.encode(texts) * merged.encode(texts)).sum(1)
    assert cos.min() >= 0.9999, cos
    pictures = list(images.values())[:2]
    vectors = merged.encode(pictures)
    assert vectors.shape == (2, merged.embedding_dim) and np.isfinite(vectors).all()
    assert (with_adapter.encode(pictures) * vectors).sum(1).min() >= 0.9999
    # Vision tower and projector are byte-identical; the language model changed.
    base, new = load_file(tiny_model_path / "model.safetensors"), load_file(out / "model.safetensors")
    assert base.keys() == new.keys()
    for key in base:
        same = torch.equal(base[key], new[key])
        assert same if not key.startswith("language_model.model.layers.") or "layernorm" in key else not same, key
    full, info = LlavaNextForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_resume_continues_and_matches_uninterrupted(tiny_model_path, tmp_path):
    from e5v.train import TrainConfig, train

    data = write_jsonl(tmp_path / "d.jsonl", triplets(64, seed=3))

    def config(out, **kw):
        return TrainConfig(model=str(tiny_model_path), data=str(data), output=str(out), max_steps=6, batch_size=8,
                           lr=2e-3, warmup_steps=2, lora_r=4, save_every=3, seed=5, show_progress=False, **kw)

    full = train(config(tmp_path / "full"))

    class Interrupt(Exception):
        pass

    def stop_at_five(step, loss):
        if step == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(config(tmp_path / "cut"), on_step=stop_at_five)
    resumed = train(config(tmp_path / "cut", resume=True))
    log = [json.loads(line) for line in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]  # step 4-5 re-run from the step-3 checkpoint, once
    assert resumed["steps"] == 6
    assert resumed["final_loss"] == pytest.approx(full["final_loss"], abs=1e-4)
    reference = [json.loads(line)["loss"] for line in (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log] == pytest.approx(reference, abs=1e-4)

    with pytest.raises(Exception, match="already holds a training run"):
        train(config(tmp_path / "full"))
    with pytest.raises(Exception, match=r"hyperparameters differ.*'lr'"):
        train(TrainConfig(**{**config(tmp_path / "full", resume=True).to_dict(), "lr": 1e-3}))


def test_training_prompt_ids_equal_inference_ids(model):
    from e5v.inputs import Item
    from e5v.preprocess import prepare
    from e5v.train.model import PromptTokenizer

    c = model.components
    tokenize = PromptTokenizer(c.tokenizer, model.prompts, c.family, max_length=32, image_token_id=c.image_token_id)
    sentences = ["a dog runs in the grass", "under_score words_stay as_they_are", "x"]
    ids = tokenize(sentences)
    items = [Item(kind="text", text=s) for s in sentences]
    inference = prepare(items, model.prompts, c.family, c.tokenizer, c.image_token_id, c.max_length, "anyres",
                        c.count_image_tokens)
    assert ids == [p.ids for p in inference]
    header = c.tokenizer.convert_tokens_to_ids("<|start_header_id|>")
    assert all(row.count(header) == 2 for row in ids)  # special tokens intact (the upstream bug mangled them)


def test_training_truncates_inside_the_text_slot(model):
    from e5v.prompts import render
    from e5v.train.model import PromptTokenizer

    c = model.components
    tokenize = PromptTokenizer(c.tokenizer, model.prompts, c.family, max_length=4, image_token_id=c.image_token_id)
    long = "the quick brown fox jumps over the lazy dog near the red house"
    short = tokenize([long])[0]
    first_four = c.tokenizer.decode(c.tokenizer(long, add_special_tokens=False)["input_ids"][:4])
    assert first_four.strip() and first_four != long
    # The sentence keeps its first 4 tokens; the template around it (and the last token) is intact.
    assert c.tokenizer.decode(short) == c.tokenizer.bos_token + render("text", model.prompts, c.family, first_four)
    assert tokenize(["a dog"])[0] == PromptTokenizer(c.tokenizer, model.prompts, c.family, 10_000,
                                                     c.image_token_id)(["a dog"])[0]  # short text untouched
    with pytest.raises(ValueError, match="line 7: text must not contain the image token"):
        tokenize(["see <image> here"], lines=[7])


def test_training_forward_equals_inference_vectors(model, tiny_model_path):
    """The untrained training model embeds like E5V.encode (same prompt, padding, positions, pooling)."""
    from e5v.train.model import PromptTokenizer, collate, embed, load_language_model

    c = model.components
    sentences = ["a dog", "two people ride bicycles down a busy street at sunset", "cat"]
    ids = PromptTokenizer(c.tokenizer, model.prompts, c.family, 32, c.image_token_id)(sentences)
    lm = load_language_model(tiny_model_path, c.config).eval()
    with torch.no_grad():
        vectors = torch.nn.functional.normalize(embed(lm, *collate(ids, c.tokenizer.pad_token_id)), dim=-1)
    cos = (vectors.numpy() * model.encode(sentences)).sum(1)
    assert cos.min() > 0.99999, cos


def test_both_checkpoint_key_layouts_load_the_same_weights(tiny_model_path, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from e5v.errors import ModelLoadError
    from e5v.loading import read_config
    from e5v.train.model import load_language_model

    tensors = load_file(tiny_model_path / "model.safetensors")
    renamed = {("model.language_model." + k[len("language_model.model."):]) if k.startswith("language_model.model.")
               else k: v for k, v in tensors.items()}
    new = tmp_path / "new-layout"
    shutil.copytree(tiny_model_path, new)
    save_file(renamed, str(new / "model.safetensors"))
    config = read_config(tiny_model_path)
    old_lm, new_lm = load_language_model(tiny_model_path, config), load_language_model(new, config)
    old_state, new_state = old_lm.state_dict(), new_lm.state_dict()
    assert old_state.keys() == new_state.keys()
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)
    assert torch.equal(old_state["embed_tokens.weight"], tensors["language_model.model.embed_tokens.weight"])
    assert not any("vision" in k or "projector" in k for k in old_state)  # the vision side is never loaded
    save_file({k: v for k, v in renamed.items() if "layers.1." not in k}, str(new / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="incomplete"):
        load_language_model(new, config)


@pytest.mark.slow
def test_two_processes_match_one_process(tiny_model_path, tmp_path):
    """Data parallel (torchrun, 2 CPU processes, gloo) sees the same global batches and gets the same losses.

    torchrun sets the same WORLD_SIZE/RANK/LOCAL_RANK variables as `accelerate launch --multi_gpu`, which
    cannot start several CPU processes without MPI.
    """
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    data = write_jsonl(tmp_path / "d.jsonl", triplets(64, seed=3))
    args = ["train", "--model", str(tiny_model_path), "--data", str(data), "--max-steps", "3", "--batch-size", "8",
            "--lr", "2e-3", "--warmup-steps", "1", "--lora-r", "4", "--lora-dropout", "0", "--seed", "5", "--quiet"]
    launcher = Path(sys.executable).parent / "torchrun"
    with socket.socket() as probe:  # a free loopback port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([str(launcher), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
                    "-m", "e5v.cli", *args, "--output", str(tmp_path / "two")],
                   check=True, env=env, timeout=600, capture_output=True)
    result = CliRunner().invoke(cli, [*args, "--output", str(tmp_path / "one")], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    def losses(name):
        return [json.loads(line)["loss"] for line in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]

    assert len(losses("two")) == 3
    assert losses("two") == pytest.approx(losses("one"), abs=1e-4)
    manifest = json.loads((tmp_path / "two" / "e5v_train_manifest.json").read_text())
    assert manifest["processes"] == 2


def test_pairs_bf16_and_gradient_accumulation(tiny_model_path, tmp_path):
    """Pair data (in-batch negatives only), bf16 autocast and accumulation run and are recorded."""
    rows = [{"query": r["sent0"], "doc": r["sent1"], "hard_neg": r["hard_neg"]} for r in triplets(32, seed=4)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "train", "--model", str(tiny_model_path), "--data", str(data), "--output", str(out), "--max-steps", "2",
        "--batch-size", "4", "--grad-accum", "2", "--anchor-column", "query", "--positive-column", "doc",
        "--no-negatives", "--precision", "bf16", "--lora-r", "4", "--quiet",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "e5v_train_manifest.json").read_text())
    assert manifest["data"]["triplets"] is False and manifest["global_batch"] == 8
    assert manifest["hyperparameters"]["precision"] == "bf16"
    assert all(np.isfinite(r["loss"]) for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()))
    vectors = E5V.from_pretrained(tiny_model_path, lora=out).encode(["a dog", "a cat"])
    assert np.isfinite(vectors).all()
