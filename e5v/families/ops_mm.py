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

from .gme import GME


class OpsMM(GME):
    name = "ops_mm"
    architectures = ("Qwen2VLForConditionalGeneration (Ops-MM-embedding-v1)",)
    max_tokens = None
    marker_files = ()
    fetch_pixels = (256 * 28 * 28, 1280 * 28 * 28)  # the card's fetch_image (GME's: 4..16384 patches)
    processor_tokens = (4, 1280)  # the card's processor bounds, in 28x28 patches
