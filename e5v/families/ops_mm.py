"""Ops-MM-embedding-v1 (``OpenSearch-AI/Ops-MM-embedding-v1-7B``): a Qwen2-VL embedder in GME's format.

Its model card's recipe (``OpsMMEmbeddingV1`` in the card's ``ops_mm_embedding_v1.py``), reproduced here:

* prompt: GME's, ``<|im_start|>system\\n{instruction}<|im_end|>\\n<|im_start|>user\\n{image}{text}<|im_end|>\\n
  <|im_start|>assistant\\n<|endoftext|>``, default instruction "You are a helpful assistant.";
* images: ``convert("RGB")`` (transparency dropped), resized to multiples of 28 within 256..1280 patches of
  28x28 (the card's ``fetch_image``; GME's allows 4..16384), then the processor with 4..1280 patches;
* the final-norm state of the last token (left padding), L2-normalised; no sequence limit of its own.

The config is a plain Qwen2-VL one, so the family is chosen by name (``family="ops_mm"``).
"""

from __future__ import annotations

from typing import Any

from .gme import GME
from .qwen2_vl import fetch_resize

FACTOR, FETCH_MIN_PIXELS, FETCH_MAX_PIXELS = 28, 256 * 28 * 28, 1280 * 28 * 28
MIN_IMAGE_TOKENS, MAX_IMAGE_TOKENS = 4, 1280  # the processor's bounds, in 28x28 patches


class OpsMM(GME):
    name = "ops_mm"
    architectures = ("Qwen2VLForConditionalGeneration (Ops-MM-embedding-v1)",)
    max_tokens = None
    marker_files = ()

    def load_processors(self, path, config, tokenizer, options):
        options = {"min_pixels": options.get("min_pixels") or MIN_IMAGE_TOKENS * 28 * 28,
                   "max_pixels": options.get("max_pixels") or MAX_IMAGE_TOKENS * 28 * 28}
        return super(GME, self).load_processors(path, config, tokenizer, options)

    def prepare_image(self, image: Any) -> Any:
        width, height = image.size
        new_h, new_w = fetch_resize(height, width, FACTOR, FETCH_MIN_PIXELS, FETCH_MAX_PIXELS)
        return image if (new_w, new_h) == (width, height) else image.resize((new_w, new_h))

    def count_image_tokens(self, size: tuple[int, int], mode: str, components: Any) -> int:
        width, height = size
        new_h, new_w = fetch_resize(height, width, FACTOR, FETCH_MIN_PIXELS, FETCH_MAX_PIXELS)
        return super(GME, self).count_image_tokens((new_w, new_h), mode, components)
