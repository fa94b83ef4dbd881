"""Generated tiny models with E5-V's real quirks, for tests, benchmarks and the offline demo.

``make_tiny_model`` writes a random LLaVA-NeXT checkpoint (CLIP vision tower + Llama language model,
LLaVA-NeXT anyres pinpoints, a byte-level BPE tokenizer trained locally with the Llama-3 special
tokens) that reproduces what makes ``royokong/e5-v`` awkward to run:

* the ``<image>`` token id equals the text vocabulary size (an embedding lookup would index past the table);
* the processor files carry no ``patch_size`` and no ``num_additional_image_tokens``;
* the tokenizer has no pad token.

The vision tower keeps CLIP-L/336's geometry (336 px views, 14 px patches, 576 tokens per view) so that
anyres token counts are the real ones; widths and depths are tiny. ``shape="e5v"`` scales every width
to E5-V's real layer shapes for benchmarks (see bench/).
"""

from __future__ import annotations

import json
from pathlib import Path

GRID_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
_CORPUS = """\
a dog runs in the grass. a cat sleeps on the sofa. two people ride bicycles down a busy street.
a red car is parked near the house. the sky is blue and the sun is bright. summary above sentence in one word.
summary above image in one word. modify this image with, describe modified image in one word.
a man is playing a guitar. a woman is slicing an onion. children play football on the beach at sunset.
the quick brown fox jumps over the lazy dog. a plate of food with rice and vegetables. snow on the mountain.
user assistant describe this image in one word based on its style dress shirt toptee change the style.
"""

# Shapes: "tiny" for tests; "e5v" has E5-V's real widths (Llama-3-8B and CLIP-L) at a reduced depth.
SHAPES = {
    "tiny": dict(
        text=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2),
        vision=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4),
        vocab_size=512,
    ),
    "e5v": dict(
        text=dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8),
        vision=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16),
        vocab_size=None,  # chosen by the caller
    ),
}


def make_tokenizer(vocab_size: int, filler: str = "special"):
    """Byte-level BPE trained on a tiny corpus; ``<image>`` is added last so its id == ``vocab_size``.

    Like Llama-3 it prepends ``<|begin_of_text|>`` and has no pad token. The ids between the trained
    vocabulary and ``vocab_size`` are unused filler: added special tokens (``filler="special"``, the
    historical default), or ordinary vocabulary entries (``"vocab"``, like Llama-3's 128k BPE tokens). At
    128k ids the former costs ~380 MB of RAM in transformers (one AddedToken object per id), which would
    inflate every memory figure of a full-size run; the latter costs a few MB.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    # Pad the vocabulary to exactly vocab_size with unused tokens, so ids are stable across versions.
    names = [f"<|reserved_{i}|>" for i in range(vocab_size - tok.get_vocab_size())]
    if names and filler == "vocab":
        raw = json.loads(tok.to_str())["model"]
        vocab = dict(raw["vocab"])
        vocab.update({name: len(vocab) + i for i, name in enumerate(names)})
        tok.model = models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                                                    for m in raw["merges"]])
    elif names:
        tok.add_special_tokens(names)
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"tokenizer has {tok.get_vocab_size()} tokens, wanted {vocab_size}")
    bos_id = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B", special_tokens=[("<|begin_of_text|>", bos_id)]
    )
    tok.add_special_tokens(["<image>"])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        model_max_length=4096,
    )
    return fast


def make_tiny_model(
    path: str | Path,
    seed: int = 0,
    *,
    shape: str = "tiny",
    text_layers: int = 2,
    vision_layers: int = 2,
    vocab_size: int | None = None,
    init_std: float = 0.2,
) -> Path:
    """Write a random LLaVA-NeXT checkpoint with e5-v's quirks to ``path`` and return the path.

    Args:
        path: output directory (created).
        seed: torch seed for the random weights; same seed, same weights.
        shape: "tiny" (tests) or "e5v" (real E5-V widths, for benchmarks).
        text_layers / vision_layers: decoder and vision-encoder depth.
        vocab_size: text vocabulary size (defaults to the shape's).
        init_std: weight init std; larger than HF's 0.02 so random inputs give distinguishable vectors.
    """
    import torch
    from transformers import LlavaNextForConditionalGeneration

    spec = SHAPES[shape]
    vocab_size = vocab_size or spec["vocab_size"] or 512
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(vocab_size)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    assert image_token_id == vocab_size, "quirk: <image> id must equal the text vocabulary size"

    config = llava_next_config(spec, tokenizer, text_layers=text_layers, vision_layers=vision_layers,
                               init_std=init_std)
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config).eval()
    with torch.no_grad():  # HF init leaves some tensors near-degenerate at tiny widths; spread them
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0.0, init_std if "embed" in name else (1.0 / param.shape[-1]) ** 0.5)
        model.model.image_newline.normal_(0.0, 1.0)
    model.save_pretrained(path, safe_serialization=True)
    del model
    tokenizer.save_pretrained(path)
    _write_preprocessor_config(path)
    _strip_processor_fields(path)
    return path


def llava_next_config(spec: dict, tokenizer, *, text_layers: int, vision_layers: int, init_std: float = 0.02):
    """E5-V's LLaVA-NeXT config (Llama-3 text model, CLIP-336 tower, anyres pinpoints) for ``spec``'s widths.

    The text vocabulary is the tokenizer's minus ``<image>``, whose id equals it (e5-v's quirk).
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig

    text_config = LlamaConfig(
        vocab_size=len(tokenizer) - 1,
        num_hidden_layers=text_layers,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=init_std,
        tie_word_embeddings=False,
        **spec["text"],
    )
    vision_config = CLIPVisionConfig(
        image_size=336,
        patch_size=14,
        num_hidden_layers=vision_layers,
        projection_dim=spec["vision"]["hidden_size"],
        initializer_range=init_std,
        **spec["vision"],
    )
    config = LlavaNextConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=GRID_PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        image_seq_length=576,
        tie_word_embeddings=False,
    )
    return config


def _write_preprocessor_config(path: Path) -> None:
    """The image processor file as e5-v ships it (CLIP-336 normalisation, anyres pinpoints)."""
    config = {
        "image_processor_type": "LlavaNextImageProcessor",
        "processor_class": "LlavaNextProcessor",
        "crop_size": {"height": 336, "width": 336},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "image_grid_pinpoints": GRID_PINPOINTS,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 336},
    }
    (path / "preprocessor_config.json").write_text(json.dumps(config, indent=2))


def _strip_processor_fields(path: Path) -> None:
    """Quirks: no processor_config.json (so no patch_size / num_additional_image_tokens), no pad token."""
    (path / "processor_config.json").unlink(missing_ok=True)
    tok_cfg_path = path / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg.pop("pad_token", None)
    tok_cfg.pop("padding_side", None)
    tok_cfg["processor_class"] = "LlavaNextProcessor"
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2))
    special = path / "special_tokens_map.json"
    if special.exists():
        data = json.loads(special.read_text())
        data.pop("pad_token", None)
        special.write_text(json.dumps(data, indent=2))


def sample_images(seed: int = 0):
    """A few generated RGB images of different sizes and aspect ratios (no files needed)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    specs = [("red square", (336, 336), (220, 40, 40)), ("green wide", (1008, 336), (40, 200, 60)),
             ("blue tall", (300, 700), (40, 60, 220)), ("yellow small", (64, 48), (230, 220, 40))]
    images = {}
    for name, size, colour in specs:
        image = Image.new("RGB", size, colour)
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
            draw.ellipse([x0, y0, x0 + size[0] // 4, y0 + size[1] // 4], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        images[name] = image
    return images


#: Vocabulary of the benchmark model: scaled with depth so the lm_head keeps its ~7% share of compute
#: (8B: 128256 x 4096 head vs 32 layers of ~218M MACs/token; 2 layers -> ~8k tokens).
BENCH_VOCAB = 8192


def make_bench_model(path: str | Path, seed: int = 0) -> Path:
    """E5-V's real layer shapes (Llama-3-8B widths, CLIP-L tower) with every depth scaled by the same
    factor: 2 of 32 decoder layers, 2 of 24 vision layers, vocabulary scaled to keep the lm_head share.
    Each part's share of the compute matches the 8B model's. Used by bench/ scripts (~2 GB fp32)."""
    import os
    import shutil

    path = Path(path)
    if (path / "config.json").is_file():
        return path
    # Build beside the target and rename: concurrent benchmark runs never see a half-written model.
    staging = path.with_name(f"{path.name}.tmp{os.getpid()}")
    make_tiny_model(staging, seed=seed, shape="e5v", text_layers=2, vision_layers=2, vocab_size=BENCH_VOCAB)
    try:
        os.rename(staging, path)
    except OSError:  # another process won the race; use its copy
        shutil.rmtree(staging, ignore_errors=True)
    return path
