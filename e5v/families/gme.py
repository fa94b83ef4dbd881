"""GME (``Alibaba-NLP/gme-Qwen2-VL-2B-Instruct`` / ``-7B-Instruct``): a Qwen2-VL trained as a universal embedder.

Its model card's recipe (``gme_inference.py``), reproduced here:

* prompt: ``<|im_start|>system\\n{instruction}<|im_end|>\\n<|im_start|>user\\n{image}{text}<|im_end|>\\n
  <|im_start|>assistant\\n<|endoftext|>`` -- the image placeholder first, then the text, nothing else in the
  user turn; the instruction is the *system* turn ("You are a helpful assistant." unless one is given; the card
  gives instructions to queries only, corpus items keep the default);
* images: ``convert("RGB")`` (transparency dropped, not composited), then resized to multiples of 28 within
  4..16384 patches of 28x28 (``qwen_vl_utils.smart_resize``, PIL's default bicubic), then the processor with
  ``min_pixels = 256 * 28 * 28`` and ``max_pixels = 1280 * 28 * 28``;
* the final-norm state of the last token, L2-normalised; sequences truncated at 1800 tokens (e5v truncates
  inside the text, keeping the template, where the card cuts the end of the sequence).

Its config is a plain Qwen2-VL one, so the family is chosen by name (``family="gme"``) or by the card's
``gme_inference.py`` in the checkpoint directory.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..prompts import IMAGE, SENT, ChatFormat, PromptSet
from .qwen2_vl import Qwen2VL
from .qwen2_vl import fetch_resize as qwen_fetch_resize

GME_CHAT = ChatFormat(
    "gme",
    "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n<|endoftext|>",
    "<|vision_start|><|image_pad|><|vision_end|>",
    default_system="You are a helpful assistant.",
)
#: The card's image bounds: the processor's, and the pre-resize of ``fetch_image`` (in 28x28 patches).
MIN_IMAGE_TOKENS, MAX_IMAGE_TOKENS = 256, 1280
FETCH_MIN_PIXELS, FETCH_MAX_PIXELS, FACTOR = 4 * 28 * 28, 16384 * 28 * 28, 28


class GME(Qwen2VL):
    name = "gme"
    model_types = ("qwen2_vl",)
    default_for_config = False  # chosen by name or marker: its config is a plain Qwen-VL one
    architectures = ("Qwen2VLForConditionalGeneration (GME)",)
    poolers = ("last",)
    alpha = "drop"
    max_tokens = 1800
    marker_files = ("gme_inference.py",)
    #: the card's bounds: ``fetch_image``'s pre-resize (pixels) and the processor's (28x28 patches); recipes in
    #: GME's format with other bounds (Ops-MM) change only these
    fetch_pixels = (FETCH_MIN_PIXELS, FETCH_MAX_PIXELS)
    processor_tokens = (MIN_IMAGE_TOKENS, MAX_IMAGE_TOKENS)

    def chat_format(self, config: Any) -> ChatFormat:
        return GME_CHAT

    def default_prompts(self) -> PromptSet:
        return PromptSet(text=SENT, image=IMAGE, composed=IMAGE + SENT)

    def apply_instruction(self, prompts: PromptSet, instruction: str | None) -> PromptSet:
        if instruction is None:
            return prompts
        if not instruction.strip():
            raise ValueError("instruction must not be empty")
        return replace(prompts, system=instruction)

    def load_processors(self, path, config, tokenizer, options):
        low, high = self.processor_tokens
        options = {"min_pixels": options.get("min_pixels") or low * 28 * 28,
                   "max_pixels": options.get("max_pixels") or high * 28 * 28}
        return super().load_processors(path, config, tokenizer, options)

    def prepare_image(self, image: Any) -> Any:
        """``fetch_image``'s resize: both sides to multiples of 28 within the card's pixel bounds."""
        width, height = image.size
        new_h, new_w = self._fetch(height, width)
        return image if (new_w, new_h) == (width, height) else image.resize((new_w, new_h))

    def count_image_tokens(self, size: tuple[int, int], mode: str, components: Any) -> int:
        width, height = size
        new_h, new_w = self._fetch(height, width)
        return super().count_image_tokens((new_w, new_h), mode, components)

    def _fetch(self, height: int, width: int) -> tuple[int, int]:
        return qwen_fetch_resize(height, width, FACTOR, *self.fetch_pixels)
