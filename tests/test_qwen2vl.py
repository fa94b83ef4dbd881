"""Qwen2-VL / Qwen2.5-VL family: parity with transformers' own forward, every pooler, pixel bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e5v import E5V, ModelLoadError
from family_cards import QwenCard

WRAP = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
PH = "<|vision_start|><|image_pad|><|vision_end|>"
TEXT = WRAP.format("<sent>\nSummary above sentence in one word: ")
IMAGE = WRAP.format(f"{PH}\nSummary above image in one word: ")
COMPOSED = WRAP.format(f'{PH}Modify this image with "<sent>", describe modified image in one word: ')


class QwenReference(QwenCard):
    """transformers' full Qwen2-VL forward, one item at a time, placeholder expanded as its processor does."""

    def __init__(self, path):
        from transformers import AutoConfig

        self.model_cls = AutoConfig.from_pretrained(path).architectures[0]
        super().__init__(path)

    def hidden(self, text=None, image=None):
        template = COMPOSED if (text is not None and image is not None) else IMAGE if image is not None else TEXT
        prompt = template.replace("<sent>", text) if text is not None else template
        return self.states(prompt, image)


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def qwen(request, tmp_path_factory):
    from e5v.testing_qwen import make_tiny_qwen2vl

    path = make_tiny_qwen2vl(tmp_path_factory.mktemp(request.param), variant=request.param)
    return path, E5V.from_pretrained(path), QwenReference(path)


def _items(images):
    return ["a dog runs in the grass", images["green wide"], images["yellow small"],
            {"image": images["blue tall"], "text": "make it red"}, "hi"]


def _kwargs(item):
    return {"text": item} if isinstance(item, str) else item if isinstance(item, dict) else {"image": item}


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("pooling", ["last", "mean", "vision_mean"])
def test_poolers_match_reference_with_left_padded_batches(qwen, images, pooling):
    _, model, ref = qwen
    items = _items(images)
    vectors = model.encode(items, batch_size=5, pooling=pooling)  # mixed kinds -> left padding
    for item, vec in zip(items, vectors):
        hidden, ids = ref.hidden(**_kwargs(item))
        image_pos = ids == model.components.image_token_id
        if pooling == "last":
            expected = hidden[-1]
        elif pooling == "vision_mean" and image_pos.any():
            expected = hidden[image_pos].mean(0)
        else:
            expected = hidden.mean(0)
        assert _cos(vec, expected.numpy()) >= 0.9999, (pooling, type(item).__name__)


def test_tokens_pooler_matches_reference(qwen, images):
    _, model, ref = qwen
    items = _items(images)
    got = model.encode(items, batch_size=5, pooling="tokens")
    for item, tokens in zip(items, got):
        hidden, _ = ref.hidden(**_kwargs(item))
        expected = torch.nn.functional.normalize(hidden, dim=-1).numpy()
        assert tokens.shape == expected.shape and (tokens * expected).sum(1).min() >= 0.9999


def test_vision_positions_are_exactly_between_the_markers(qwen, images):
    """vision_mean pools the <|image_pad|> run between <|vision_start|> and <|vision_end|>."""
    _, model, ref = qwen
    hidden, ids = ref.hidden(image=images["green wide"])
    config = model.components.config
    start = int((ids == config.vision_start_token_id).nonzero()[0, 0])
    end = int((ids == config.vision_end_token_id).nonzero()[0, 0])
    between = hidden[start + 1:end].mean(0).numpy()
    assert bool((ids[start + 1:end] == config.image_token_id).all())
    assert _cos(model.encode([images["green wide"]], pooling="vision_mean")[0], between) >= 0.9999


def test_min_and_max_pixels_are_respected(qwen, images):
    path, _, _ = qwen
    small = E5V.from_pretrained(path, max_image_pixels=28 * 28 * 4)
    large = E5V.from_pretrained(path, min_image_pixels=28 * 28 * 32, max_image_pixels=28 * 28 * 64)
    image = images["yellow small"]  # 64 x 48 px: upscaled to min_pixels or capped at max_pixels
    grids = [m.components.image_processor([image], return_tensors="pt")["image_grid_thw"][0] for m in (small, large)]
    pixels = [int(g[1] * g[2]) * 14 * 14 for g in grids]
    assert pixels[0] <= 28 * 28 * 4
    assert 28 * 28 * 32 <= pixels[1] <= 28 * 28 * 64
    features = [int(g.prod()) // 4 for g in grids]
    counts = [m.encode_with_details([image]).token_counts[0] for m in (small, large)]
    assert counts[1] - counts[0] == features[1] - features[0] > 0  # the sequence grew by exactly the features
    with pytest.raises(ValueError, match="min_pixels"):
        E5V.from_pretrained(path, min_image_pixels=10_000, max_image_pixels=100)


def test_family_specific_options_are_refused_clearly(qwen, tiny_model_path):
    path, model, _ = qwen
    with pytest.raises(ValueError, match="not available for qwen2_vl"):
        E5V.from_pretrained(path, image_mode="base")
    with pytest.raises(ValueError, match="openvino backend does not support qwen2_vl"):
        E5V.from_pretrained(path, backend="openvino")
    with pytest.raises(ValueError, match="Qwen2-VL"):
        E5V.from_pretrained(tiny_model_path, max_image_pixels=1000)
    assert model.embedding_config()["prompt_family"] == "qwen2vl"


def test_unsupported_architecture_lists_the_supported_ones(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=1).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        E5V.from_pretrained(tmp_path)
    for arch in ("LlavaNextForConditionalGeneration", "Qwen2VLForConditionalGeneration",
                 "Qwen2_5_VLForConditionalGeneration"):
        assert arch in str(info.value)
