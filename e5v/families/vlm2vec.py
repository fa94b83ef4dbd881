"""VLM2Vec (``TIGER-Lab/VLM2Vec-Qwen2VL-2B`` / ``-7B``, ``VLM2Vec/VLM2Vec-V2.0``): Qwen2-VL trained on MMEB.

Its model card's recipe (``Qwen2_VL_process_fn`` and ``MMEBModel`` in TIGER-AI-Lab/VLM2Vec), reproduced here:

* no chat template: the raw text, with ``<|image_pad|>`` (no vision start/end markers) where the image goes;
  the card's examples: ``"<|image_pad|> Represent the given image with the following question: What is in
  the image"`` for an image query, the bare text (``"A cat and a dog"``) for a text target;
* instructions are part of the text (MMEB's task instructions): ``instruction=`` goes before the text of
  text items and after the image token of image and composed items;
* images: the checkpoint's own processor bounds; an image narrower or shorter than 28 px is resized to
  56x56 first (the card's fix for MMEB's tiny images);
* the final-norm state of the last token (left padding), L2-normalised; text-only items are cut at 2048
  tokens (``TEXT_ONLY_MAX_LEN``).

The released VLM2Vec checkpoints are LoRA adapters on Qwen2-VL: merge the adapter into the base model
(``peft``'s ``merge_and_unload``) and point e5v at the merged directory. The config is a plain Qwen2-VL
one, so the family is chosen by name (``family="vlm2vec"``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..prompts import IMAGE, SENT, ChatFormat, PromptSet, clean_instruction
from .qwen2_vl import Qwen2VL

VLM2VEC_RAW = ChatFormat("vlm2vec", "{}", "<|image_pad|>")
MIN_SIDE, SMALL_IMAGE_SIZE = 28, (56, 56)


class VLM2Vec(Qwen2VL):
    name = "vlm2vec"
    model_types = ("qwen2_vl",)
    default_for_config = False  # chosen by name or marker: its config is a plain Qwen-VL one
    architectures = ("Qwen2VLForConditionalGeneration (VLM2Vec)",)
    poolers = ("last",)
    max_text_tokens = 2048

    def chat_format(self, config: Any) -> ChatFormat:
        return VLM2VEC_RAW

    def default_prompts(self) -> PromptSet:
        return PromptSet(text=SENT, image=f"{IMAGE} Represent the given image.",
                         composed=f"{IMAGE} Represent the given image with the following question: {SENT}")

    def apply_instruction(self, prompts: PromptSet, instruction: str | None) -> PromptSet:
        if instruction is None:
            return prompts
        instruction = clean_instruction(instruction)
        return replace(prompts, text=f"{instruction} {SENT}", image=f"{IMAGE} {instruction}",
                       composed=f"{IMAGE} {instruction} {SENT}")

    def prepare_image(self, image: Any) -> Any:
        width, height = image.size
        return image.resize(SMALL_IMAGE_SIZE) if width < MIN_SIDE or height < MIN_SIDE else image

    def count_image_tokens(self, size: tuple[int, int], mode: str, components: Any) -> int:
        width, height = size
        if width < MIN_SIDE or height < MIN_SIDE:
            size = SMALL_IMAGE_SIZE
        return super().count_image_tokens(size, mode, components)
