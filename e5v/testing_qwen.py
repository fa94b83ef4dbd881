"""Tiny random Qwen-VL checkpoints (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) with each architecture's real config class,
patch geometry and tokens, for the families built on them (e5v.families.qwen2_vl, gme, vlm2vec, jina_v4,
qwen3_vl_embedding). Widths are tiny so tests stay fast; see ``e5v.testing`` for LLaVA-NeXT."""

from __future__ import annotations

import json
from pathlib import Path

from .testing import _CORPUS

QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]


def make_tiny_qwen2vl(path: str | Path, seed: int = 0, *, variant: str = "qwen2_vl",
                      min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 64,
                      architectures: list[str] | None = None) -> Path:
    """Write a tiny random Qwen2-VL (``variant="qwen2_vl"``), Qwen2.5-VL (``"qwen2_5_vl"``) or Qwen3-VL
    (``"qwen3_vl"``: 16 px patches, DeepStack from two vision layers) checkpoint.

    Real patch geometry (14 px patches, or 16 for Qwen3-VL, 2x2 merge, temporal patch 2) with tiny widths;
    ``max_pixels`` is kept small by default so tests stay fast. ``architectures`` overrides the config's
    (e.g. a model card's own class name, as jina-embeddings-v4's config has).
    """
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=[], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    tok.add_special_tokens(QWEN_SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        model_max_length=32768)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    vocab_size = len(tokenizer)
    text = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
                bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                tie_word_embeddings=False)
    if variant == "qwen2_vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
        config_cls, model_cls = transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
    elif variant == "qwen2_5_vl":
        vision = dict(depth=2, hidden_size=32, out_hidden_size=64, intermediate_size=64, num_heads=4,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[1])
        config_cls, model_cls = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration
    elif variant == "qwen3_vl":
        vision = dict(depth=3, hidden_size=32, out_hidden_size=64, intermediate_size=64, num_heads=4,
                      patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                      deepstack_visual_indexes=[0, 1])
        text.update(head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                                  "mrope_section": [2, 3, 3], "mrope_interleaved": True})
        config_cls, model_cls = transformers.Qwen3VLConfig, transformers.Qwen3VLForConditionalGeneration
    else:
        raise ValueError("variant must be 'qwen2_vl', 'qwen2_5_vl' or 'qwen3_vl'")
    config = config_cls(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.2 if "embed_tokens" in name else (1.0 / param.shape[-1]) ** 0.5)
    model.save_pretrained(path, safe_serialization=True)
    if architectures is not None:  # save_pretrained writes the class it was given; a card's config names its own
        config_json = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config_json, "architectures": architectures}, indent=2))
    tokenizer.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5] if variant == "qwen3_vl" else [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.5, 0.5, 0.5] if variant == "qwen3_vl" else [0.26862954, 0.26130258, 0.27577711],
        "merge_size": 2, "patch_size": 16 if variant == "qwen3_vl" else 14, "temporal_patch_size": 2, "resample": 3,
        "rescale_factor": 0.00392156862745098, "min_pixels": min_pixels, "max_pixels": max_pixels,
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
    }, indent=2))
    return path
