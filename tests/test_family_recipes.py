"""VLM2Vec, jina-embeddings-v4 and Qwen3-VL-Embedding against their model cards' recipes (tests/family_cards.py),
each on a generated model with its architecture's real config class, in mixed batches of every size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from e5v import E5V, InputError, ModelLoadError
from family_cards import JinaV4Card, OpsMMCard, Qwen3VLEmbeddingCard, VLM2VecCard

TASKS = ("retrieval", "text-matching", "code")


def _cos(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _rgba(images):
    rgba = images["red square"].convert("RGBA")
    rgba.putalpha(128)
    return rgba


def _kwargs(item):
    return {"text": item} if isinstance(item, str) else item if isinstance(item, dict) else {"image": item}


# ------------------------------------------------------------------------------------------------ VLM2Vec
@pytest.fixture(scope="module")
def vlm2vec_path(tmp_path_factory):
    from e5v.testing_qwen import make_tiny_qwen2vl

    return make_tiny_qwen2vl(tmp_path_factory.mktemp("vlm2vec"), variant="qwen2_vl", seed=5)


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_vlm2vec_equals_its_card_in_any_batch(vlm2vec_path, images, batch_size):
    from PIL import Image

    model = E5V.from_pretrained(vlm2vec_path, family="vlm2vec")
    card = VLM2VecCard(vlm2vec_path)
    tiny = Image.new("RGB", (20, 90), (10, 200, 30))  # under 28 px: the card resizes it to 56x56
    items = ["A cat and a dog", images["green wide"], tiny, _rgba(images),
             {"image": images["blue tall"], "text": "What is in the image"}, "a", images["yellow small"]]
    for item, vector in zip(items, model.encode(items, batch_size=batch_size)):
        assert _cos(vector, card.embed(**_kwargs(item))) >= 0.9999, item
    query = "Find me an everyday image that matches the given caption:"
    got = model.encode(["a red car", images["green wide"]], instruction=query)
    assert _cos(got[0], card.embed(text="a red car", instruction=query)) >= 0.9999
    assert _cos(got[1], card.embed(image=images["green wide"], instruction=query)) >= 0.9999


def test_vlm2vec_cuts_texts_at_the_cards_2048_tokens(vlm2vec_path):
    model = E5V.from_pretrained(vlm2vec_path, family="vlm2vec")
    card = VLM2VecCard(vlm2vec_path)
    long = " ".join(["dog"] * 2300)
    ids = card.tokenizer(long).input_ids
    assert len(ids) > 2048
    with pytest.warns(UserWarning, match="truncated"):
        got = model.encode([long])[0]
    assert _cos(got, card.embed(text=card.tokenizer.decode(ids[:2048]))) >= 0.9999


# ------------------------------------------------------------------------------------- jina-embeddings-v4
def _write_adapters(path, seed=11, rank=4, alpha=8):
    """adapters/ as the card ships them: one LoRA per task in each adapted linear layer (transformers-4 module
    paths, the projector's too), keys ``...lora_A.<task>.weight``."""
    from safetensors.torch import save_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path)
    generator = torch.Generator().manual_seed(seed)
    old = {"model.language_model.": "model.", "model.visual.": "visual."}
    weights = {}
    for name, module in model.named_modules():
        if not name.endswith(("q_proj", "v_proj", "down_proj")):
            continue
        card_name = next((name.replace(new, o, 1) for new, o in old.items() if name.startswith(new)), name)
        for task in TASKS:
            a = torch.randn(rank, module.in_features, generator=generator) * 0.2
            b = torch.randn(module.out_features, rank, generator=generator) * 0.2
            weights[f"base_model.model.{card_name}.lora_A.{task}.weight"] = a
            weights[f"base_model.model.{card_name}.lora_B.{task}.weight"] = b
    for task in TASKS:
        weights[f"base_model.model.multi_vector_projector.lora_A.{task}.weight"] = torch.zeros(rank, 64)
        weights[f"base_model.model.multi_vector_projector.lora_B.{task}.weight"] = torch.zeros(128, rank)
    (path / "adapters").mkdir()
    save_file(weights, str(path / "adapters" / "adapter_model.safetensors"))
    (path / "adapters" / "adapter_config.json").write_text(json.dumps(
        {"r": rank, "lora_alpha": alpha, "use_rslora": False, "peft_type": "LORA",
         "target_modules": ["q_proj", "v_proj", "down_proj", "multi_vector_projector"]}))
    return weights, alpha / rank


class _CardAdapters:
    """The card's MultiAdapterLinear at inference: base(x) + scale * B(A(x)) for the chosen task (hooks)."""

    def __init__(self, model, weights, scale, task):
        modules = dict(model.named_modules())
        self.handles = []
        for key, a in weights.items():
            if f".lora_A.{task}." not in key or "multi_vector" in key:
                continue
            name = key[len("base_model.model."):].split(".lora_A.")[0]
            name = ("model.visual." + name[len("visual."):] if name.startswith("visual.")
                    else "model.language_model." + name[len("model."):])
            b = weights[key.replace(".lora_A.", ".lora_B.")]
            self.handles.append(modules[name].register_forward_hook(
                lambda m, inp, out, a=a, b=b: out + scale * torch.nn.functional.linear(
                    torch.nn.functional.linear(inp[0], a), b)))


@pytest.fixture(scope="module")
def jina_path(tmp_path_factory):
    from e5v.testing_qwen import make_tiny_qwen2vl

    return make_tiny_qwen2vl(tmp_path_factory.mktemp("jina"), variant="qwen2_5_vl", seed=6,
                             architectures=["JinaEmbeddingsV4Model"])


@pytest.mark.parametrize("batch_size", [1, 4])
def test_jina_v4_merged_checkpoint_equals_its_card(jina_path, images, batch_size):
    model = E5V.from_pretrained(jina_path)  # chosen by the config's JinaEmbeddingsV4Model
    assert model.components.spec.name == "jina_v4" and model.components.task is None
    card = JinaV4Card(jina_path)
    items = ["Which planet is the red one?", images["green wide"], _rgba(images), "a", images["blue tall"]]
    for item, vector in zip(items, model.encode(items, batch_size=batch_size)):
        assert _cos(vector, card.embed(**_kwargs(item))) >= 0.9999, item
    passages = model.encode(["Mars is red."], prompt="passage")[0]
    assert _cos(passages, card.embed(text="Mars is red.", prompt_name="passage")) >= 0.9999
    assert _cos(passages, model.encode(["Mars is red."])[0]) < 0.9999  # the prefix changes the vector
    as_passages = E5V(model.components, model.backend, prompt="passage")
    assert as_passages.embedding_config()["prompts"]["text"] == "Passage: <sent>"


def test_jina_v4_refuses_what_its_card_does_not_embed(jina_path, images):
    model = E5V.from_pretrained(jina_path)
    with pytest.raises(InputError, match="text or image items, not composed"):
        model.encode([{"image": images["green wide"], "text": "a car"}])
    result = model.encode_with_details(["fine", {"image": images["green wide"], "text": "a car"}],
                                       raise_on_error=False)
    assert 1 in result.errors and np.isfinite(result.vectors[0]).all()
    with pytest.raises(ValueError, match="no instruction"):
        model.encode(["x"], instruction="Represent this")
    with pytest.raises(ValueError, match="single-task checkpoint"):
        E5V.from_pretrained(jina_path, task="code")


@pytest.mark.parametrize("task", TASKS)
def test_jina_v4_task_adapters_equal_the_cards_multi_adapter_layers(jina_path, images, tmp_path, task):
    import shutil

    path = shutil.copytree(jina_path, tmp_path / "jina")
    weights, scale = _write_adapters(path)
    model = E5V.from_pretrained(path, task=task if task != "retrieval" else None)
    assert model.components.task == task and model.embedding_config()["task"] == task
    card = JinaV4Card(path)
    _CardAdapters(card.model, weights, scale, task)
    items = ["Which planet is the red one?", images["green wide"]]
    for item, vector in zip(items, model.encode(items, batch_size=2)):
        assert _cos(vector, card.embed(**_kwargs(item), task=task)) >= 0.9999, (task, item)
    passage = model.encode(["Mars is red."], prompt="passage")[0]
    assert _cos(passage, card.embed(text="Mars is red.", prompt_name="passage", task=task)) >= 0.9999
    plain = JinaV4Card(jina_path)  # the base weights alone differ: the adapter was merged
    assert _cos(model.encode(items[:1])[0], plain.embed(text=items[0])) < 0.999


def test_jina_v4_refuses_adapters_that_do_not_fit(jina_path, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    path = shutil.copytree(jina_path, tmp_path / "jina")
    weights, _ = _write_adapters(path)
    with pytest.raises(ValueError, match="unknown task"):
        E5V.from_pretrained(path, task="summarise")
    renamed = {k.replace("layers.0.", "layers.9."): v for k, v in weights.items()}
    save_file(renamed, str(path / "adapters" / "adapter_model.safetensors"))
    with pytest.raises(ModelLoadError, match="does not fit the model"):
        E5V.from_pretrained(path)
    only = {k: v for k, v in load_file(str(path / "adapters" / "adapter_model.safetensors")).items() if ".code." in k}
    save_file(only, str(path / "adapters" / "adapter_model.safetensors"))
    with pytest.raises(ModelLoadError, match="no weights for task 'retrieval'"):
        E5V.from_pretrained(path)


# ------------------------------------------------------------------------------------ Qwen3-VL-Embedding
@pytest.fixture(scope="module")
def qwen3_path(tmp_path_factory):
    from e5v.testing_qwen import make_tiny_qwen2vl

    return make_tiny_qwen2vl(tmp_path_factory.mktemp("qwen3"), variant="qwen3_vl", seed=7)


@pytest.mark.parametrize("batch_size", [1, 3, 6])
def test_qwen3_vl_embedding_equals_its_card_in_any_batch(qwen3_path, images, batch_size):
    from PIL import Image

    model = E5V.from_pretrained(qwen3_path)
    assert model.components.spec.name == "qwen3_vl_embedding"
    card = Qwen3VLEmbeddingCard(qwen3_path)
    items = ["A woman playing with her dog on a beach at sunset.", images["green wide"], _rgba(images),
             {"image": images["blue tall"], "text": "the same car in red"}, "a",
             Image.new("RGB", (20, 30), (0, 0, 250))]  # below the card's 4 patches: upscaled
    for item, vector in zip(items, model.encode(items, batch_size=batch_size)):
        assert _cos(vector, card.embed(**_kwargs(item))) >= 0.9999, item


def test_qwen3_vl_embedding_instruction_is_the_system_turn_ended_with_a_full_stop(qwen3_path, images):
    model = E5V.from_pretrained(qwen3_path)
    card = Qwen3VLEmbeddingCard(qwen3_path)
    query = "  Retrieve images that match the user's query "
    got = model.encode(["a red car"], instruction=query)[0]
    assert _cos(got, card.embed(text="a red car", instruction=query)) >= 0.9999
    assert model.embedding_config(instruction=query)["prompts"]["system"] == "Retrieve images that match the user's query."
    assert _cos(got, model.encode(["a red car"])[0]) < 0.9999
    with pytest.raises(ValueError, match="cannot be changed"):
        E5V.from_pretrained(qwen3_path, max_image_pixels=100_000)


def test_jina_v4_adapter_merged_before_a_narrow_load_survives_it(jina_path, tmp_path):
    """bf16 from the fp32 checkpoint: the adapter is merged into the mapped fp32 weights, then each slice is
    converted and its pages dropped; the merged values must be what gets converted."""
    import shutil

    path = shutil.copytree(jina_path, tmp_path / "jina")
    _write_adapters(path)
    texts = ["Which planet is the red one?", "a green field", "Mars is red."]
    merged = E5V.from_pretrained(path, task="code").encode(texts)
    narrow = E5V.from_pretrained(path, task="code", dtype="bf16").encode(texts)
    plain = E5V.from_pretrained(jina_path, dtype="bf16").encode(texts)
    assert min(_cos(a, b) for a, b in zip(narrow, merged)) >= 0.999
    assert max(_cos(a, b) for a, b in zip(plain, merged)) < 0.999


# ----------------------------------------------------------------------------------- Ops-MM-embedding-v1
@pytest.mark.parametrize("batch_size", [1, 4])
def test_ops_mm_equals_its_card_in_any_batch(vlm2vec_path, images, batch_size):
    from PIL import Image

    model = E5V.from_pretrained(vlm2vec_path, family="ops_mm")  # a plain Qwen2-VL config: chosen by name
    card = OpsMMCard(vlm2vec_path)
    items = ["A cat and a dog", images["green wide"], _rgba(images), Image.new("RGB", (30, 20), (9, 9, 200)),
             {"image": images["blue tall"], "text": "the same car in red"}]
    for item, vector in zip(items, model.encode(items, batch_size=batch_size)):
        assert _cos(vector, card.embed(**_kwargs(item))) >= 0.9999, item
    query = "Find an image that matches the given text."
    assert _cos(model.encode(["a red car"], instruction=query)[0], card.embed(text="a red car", instruction=query)) >= 0.9999
