"""encode() must reproduce the reference recipe (one item at a time, fp32, hidden_states[-1][:, -1])."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from reference import LLAMA3

TEXTS = [
    "a dog runs in the grass",
    "hi",
    "two people ride bicycles down a busy street near the red house at sunset, while a man plays a guitar",
    "Ünïcödé — emoji 🐕 and CJK 狗",
]
SIZES = [(336, 336), (1008, 336), (336, 1008), (640, 480), (479, 641), (64, 48), (1, 1), (3, 500)]


def _image(size, seed=0):
    rng = np.random.default_rng(seed + size[0] * 7 + size[1])
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_texts_match_reference(model, reference):
    vectors = model.encode(TEXTS, batch_size=3)
    for text, vec in zip(TEXTS, vectors):
        assert _cos(vec, reference.embed(text=text)) >= 0.9999, text


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_images_match_reference(model, reference, size):
    image = _image(size)
    vec = model.encode([image])[0]
    assert _cos(vec, reference.embed(image=image)) >= 0.9999


def test_composed_matches_reference(model, reference, images):
    items = [{"image": images["red square"], "text": "make it blue"},
             {"image": images["green wide"], "text": "add a cat on the left"}]
    vectors = model.encode(items, batch_size=2)
    for item, vec in zip(items, vectors):
        assert _cos(vec, reference.embed(text=item["text"], image=item["image"])) >= 0.9999


def test_custom_instruction_matches_reference(model, reference, images):
    instruction = "Describe the colour of the above image in one word:"
    vec = model.encode([images["blue tall"]], instruction=instruction)[0]
    template = LLAMA3.format(f"<image>\n{instruction} ")
    assert _cos(vec, reference.embed(image=images["blue tall"], template=template)) >= 0.9999
    assert _cos(vec, model.encode([images["blue tall"]])[0]) < 0.9999  # the instruction really changed the prompt


def test_custom_prompt_set_matches_reference(model, reference):
    from e5v import PromptSet

    prompts = PromptSet(text="Query: <sent>\nIn one word: ")
    vec = model.encode(["a red car"], prompt=prompts)[0]
    ref = reference.embed(text="a red car", template=LLAMA3.format("Query: <sent>\nIn one word: "))
    assert _cos(vec, ref) >= 0.9999


def test_base_image_mode_is_the_base_view_only(model, reference, images):
    """image_mode='base': 576 features of the 336 px base view, computed independently through HF modules."""
    import torch

    image = images["green wide"]
    vec = model.encode([image], image_mode="base")[0]
    hf = reference.model.model
    processor = reference.processor
    pixels = processor.image_processor([image], return_tensors="pt")["pixel_values"][:, 0]
    with torch.no_grad():
        states = hf.vision_tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        feats = hf.multi_modal_projector(states)[0]  # (576, D)
        prompt = LLAMA3.format("<image>\nSummary above image in one word: ")
        ids = processor.tokenizer(prompt, return_tensors="pt").input_ids[0]
        at = int((ids == hf.config.image_token_id).nonzero()[0, 0])
        embeds = hf.get_input_embeddings()(ids.clamp(max=hf.config.text_config.vocab_size - 1))
        embeds = torch.cat([embeds[:at], feats, embeds[at + 1:]])[None]
        out = hf.language_model(inputs_embeds=embeds).last_hidden_state[0, -1]
    ref = torch.nn.functional.normalize(out, dim=-1).numpy()
    assert feats.shape[0] == 576
    assert _cos(vec, ref) >= 0.9999
    assert _cos(vec, model.encode([image])[0]) < 0.9999  # differs from anyres


def test_unnormalized_vectors_are_raw_hidden_states(model, reference):
    raw = model.encode(["a dog runs in the grass"], normalize=False)[0]
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3
    assert _cos(raw, reference.embed(text="a dog runs in the grass")) >= 0.9999
