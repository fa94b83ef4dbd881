"""Each e5-v quirk of DESIGN.md §2 is handled without the user patching anything; bad models fail clearly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from e5v import E5V, ModelLoadError


def test_tiny_model_reproduces_the_quirks(tiny_model_path):
    config = json.loads((tiny_model_path / "config.json").read_text())
    vocab = config["text_config"]["vocab_size"]
    assert config["image_token_index"] == vocab  # image id outside the embedding table
    assert not (tiny_model_path / "processor_config.json").exists()  # no patch_size anywhere
    tok_cfg = json.loads((tiny_model_path / "tokenizer_config.json").read_text())
    assert "pad_token" not in tok_cfg
    from transformers import AutoProcessor

    raw = AutoProcessor.from_pretrained(tiny_model_path)
    assert raw.patch_size is None and raw.tokenizer.pad_token is None


def test_plain_transformers_fails_on_the_quirks(tiny_model_path, images):
    """The failure e5v repairs: without patches the processor cannot expand <image> at all."""
    from transformers import AutoProcessor

    raw = AutoProcessor.from_pretrained(tiny_model_path)
    with pytest.raises(Exception):
        raw(text=["<image>\nhello"], images=[images["red square"]], return_tensors="pt")


def test_image_token_outside_vocab_needs_no_resize(model):
    table = model.backend.model.get_input_embeddings().weight
    assert model.components.image_token_id == table.shape[0]  # still not resized after use
    from PIL import Image

    model.encode([Image.new("RGB", (8, 8)), "text"])
    assert table.shape[0] == model.components.image_token_id


def test_processor_is_repaired_and_counts_match_the_model(model, images):
    proc = model.processor
    assert proc.patch_size == 14 and proc.num_additional_image_tokens == 1
    image = images["green wide"]
    inputs = proc(text=["<image>\nx"], images=[image], return_tensors="pt")
    n_tokens = int((inputs["input_ids"] == model.components.image_token_id).sum())
    feats = model.backend.image_features(inputs["pixel_values"], inputs["image_sizes"], "anyres")
    assert n_tokens == feats[0].shape[0]


def test_pad_token_and_left_padding(model):
    tok = model.tokenizer
    assert tok.pad_token is not None and tok.padding_side == "left"


def test_any_padding_side_in_tokenizer_config(tiny_model_path, tmp_path, model):
    copy = tmp_path / "right-padded"
    shutil.copytree(tiny_model_path, copy)
    cfg = json.loads((copy / "tokenizer_config.json").read_text())
    cfg.update(padding_side="right", pad_token="<|end_of_text|>")
    (copy / "tokenizer_config.json").write_text(json.dumps(cfg))
    other = E5V.from_pretrained(copy)
    texts = ["hi", "a considerably longer sentence to force padding"]
    assert np.allclose(other.encode(texts, batch_size=2), model.encode(texts, batch_size=1), atol=1e-4)


def test_no_lm_head_is_kept(model):
    assert not hasattr(model.backend.model, "lm_head")


def test_missing_local_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        E5V.from_pretrained(tmp_path / "nope")


def test_unreachable_hub_id_says_how_to_use_a_local_copy():
    with pytest.raises(ModelLoadError) as info:
        E5V.from_pretrained("someone/definitely-not-a-model-e5v-test")
    assert "local" in str(info.value) and "directory" in str(info.value)


def test_not_a_llava_next_model(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=1).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="supports: LlavaNextForConditionalGeneration"):
        E5V.from_pretrained(tmp_path)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        E5V.from_pretrained(tmp_path)


def test_inconsistent_image_token_is_refused(tiny_model_path, tmp_path):
    copy = tmp_path / "bad"
    shutil.copytree(tiny_model_path, copy)
    config = json.loads((copy / "config.json").read_text())
    config["image_token_index"] = 5
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="image_token_index"):
        E5V.from_pretrained(copy)


def test_inconsistent_pinpoints_are_refused(tiny_model_path, tmp_path):
    copy = tmp_path / "bad-pinpoints"
    shutil.copytree(tiny_model_path, copy)
    pre = json.loads((copy / "preprocessor_config.json").read_text())
    pre["image_grid_pinpoints"] = [[336, 672]]
    (copy / "preprocessor_config.json").write_text(json.dumps(pre))
    with pytest.raises(ModelLoadError, match="pinpoints"):
        E5V.from_pretrained(copy)


def test_bad_options(tiny_model_path):
    with pytest.raises(ValueError, match="image_mode"):
        E5V.from_pretrained(tiny_model_path, image_mode="tiles")
    with pytest.raises(ValueError, match="backend"):
        E5V.from_pretrained(tiny_model_path, backend="tensorflow")
    with pytest.raises(ValueError, match="dtype"):
        E5V.from_pretrained(tiny_model_path, dtype="int3")


def test_legacy_checkpoint_layout_loads_identically(tiny_model_path, tmp_path, model, images):
    """royokong/e5-v was saved by transformers 4.x: vision_tower.vision_model.*, language_model.model.* keys."""
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "legacy"
    shutil.copytree(tiny_model_path, copy)
    tensors = load_file(copy / "model.safetensors")
    renamed = {("vision_tower.vision_model." + k[len("vision_tower."):] if k.startswith("vision_tower.") else k): v
               for k, v in tensors.items()}
    assert any(k.startswith("language_model.model.") for k in renamed)
    save_file(renamed, copy / "model.safetensors", metadata={"format": "pt"})
    items = ["a dog", images["green wide"]]
    assert np.allclose(E5V.from_pretrained(copy).encode(items), model.encode(items), atol=1e-6)


def test_checkpoint_with_missing_tensors_is_refused(tiny_model_path, tmp_path):
    """transformers would initialise missing weights randomly: a silent wrong vector. e5v refuses."""
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "partial"
    shutil.copytree(tiny_model_path, copy)
    tensors = load_file(copy / "model.safetensors")
    dropped = next(k for k in tensors if "layers.1.mlp.down_proj" in k)
    del tensors[dropped]
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="missing"):
        E5V.from_pretrained(copy)
