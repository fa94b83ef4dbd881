"""Qwen3-VL-Embedding (``Qwen/Qwen3-VL-Embedding-2B`` / ``-8B``): Qwen3-VL trained as a universal embedder.

Its model card's recipe (``Qwen3VLEmbedder`` in the card's ``qwen3_vl_embedding.py``), reproduced here:

* prompt: Qwen3-VL's chat template with the generation prompt, ``<|im_start|>system\\n{instruction}<|im_end|>\\n
  <|im_start|>user\\n{image}{text}<|im_end|>\\n<|im_start|>assistant\\n``; the instruction is the system turn,
  "Represent the user's input." unless one is given, stripped and ended with "." when it does not end in
  punctuation;
* images: RGBA composited on white (``qwen_vl_utils.to_rgb``), resized to multiples of 32 within 4..1800
  patches of 32x32 (``smart_resize`` with ``image_patch_size=16``, PIL bicubic), then the processor with
  ``do_resize=False``;
* the final-norm state of the last real token, L2-normalised; sequences up to 8192 tokens.

The architecture is Qwen3-VL, whose vision tower also feeds intermediate features into the first decoder
layers (DeepStack, handled by ``e5v.backends.qwen3vl_backend``). It is the only family for ``qwen3_vl``
configs, so a plain Qwen3-VL checkpoint also gets this recipe.
"""

from __future__ import annotations

import unicodedata
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..prompts import IMAGE, SENT, ChatFormat, PromptSet, clean_instruction
from .qwen2_vl import Qwen2VL, fetch_resize

QWEN3_VL_EMBEDDING_CHAT = ChatFormat(
    "qwen3_vl_embedding",
    "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
    "<|vision_start|><|image_pad|><|vision_end|>",
    default_system="Represent the user's input.",
)
FACTOR, MIN_PIXELS, MAX_PIXELS = 32, 4 * 32 * 32, 1800 * 32 * 32  # the card's fetch bounds


class Qwen3VLEmbedding(Qwen2VL):
    name = "qwen3_vl_embedding"
    model_types = ("qwen3_vl",)
    architectures = ("Qwen3VLForConditionalGeneration (Qwen3-VL-Embedding)",)
    torch_backend = "e5v.backends.qwen3vl_backend:Qwen3VLTorchBackend"
    poolers = ("last",)
    max_tokens = 8192

    def chat_format(self, config: Any) -> ChatFormat:
        return QWEN3_VL_EMBEDDING_CHAT

    def default_prompts(self) -> PromptSet:
        return PromptSet(text=SENT, image=IMAGE, composed=IMAGE + SENT)

    def apply_instruction(self, prompts: PromptSet, instruction: str | None) -> PromptSet:
        if instruction is None:
            return prompts
        instruction = clean_instruction(instruction)
        if not unicodedata.category(instruction[-1]).startswith("P"):
            instruction += "."
        return replace(prompts, system=instruction)

    def load_processors(self, path: Path, config: Any, tokenizer: Any, options: dict) -> tuple[Any, Any]:
        """The processor of the checkpoint with its own resize off: the card resizes before it (``prepare_image``)."""
        if options.get("min_pixels") is not None or options.get("max_pixels") is not None:
            raise ValueError("Qwen3-VL-Embedding resizes images within its model card's bounds (4..1800 patches of "
                             "32x32); min/max image pixels cannot be changed for it yet")
        image_processor, processor = super().load_processors(path, config, tokenizer, {})
        image_processor.do_resize = False
        return image_processor, processor

    def prepare_image(self, image: Any) -> Any:
        width, height = image.size
        new_h, new_w = self._bounds(height, width)
        return image if (new_w, new_h) == (width, height) else image.resize((new_w, new_h))

    def count_image_tokens(self, size: tuple[int, int], mode: str, components: Any) -> int:
        width, height = size
        new_h, new_w = self._bounds(height, width)
        return (new_h // FACTOR) * (new_w // FACTOR)

    @staticmethod
    def _bounds(height: int, width: int) -> tuple[int, int]:
        return fetch_resize(height, width, FACTOR, MIN_PIXELS, MAX_PIXELS)
