"""The model cards' recipes for the families built on Qwen-VL (VLM2Vec, jina-embeddings-v4, Qwen3-VL-Embedding),
written from the cards' own code, run one item at a time in fp32 with transformers' full forward: what the
e5v families are held to (cos >= 0.9999 in any batch)."""

from __future__ import annotations

import math
import unicodedata

import numpy as np
import torch
from PIL import Image

VISION = "<|vision_start|><|image_pad|><|vision_end|>"


def qwen_smart_resize(image: Image.Image, factor: int, low: int, high: int) -> Image.Image:
    """qwen_vl_utils.fetch_image's resize (round to multiples of ``factor`` within [low, high] pixels)."""
    width, height = image.size
    h_bar, w_bar = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h_bar * w_bar > high:
        beta = math.sqrt(height * width / high)
        h_bar, w_bar = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < low:
        beta = math.sqrt(low / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return image.resize((w_bar, h_bar))


def white_rgb(image: Image.Image) -> Image.Image:
    """qwen_vl_utils.to_rgb: RGBA pasted on white through its alpha; other modes convert("RGB")."""
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.split()[3])
        return background
    return image.convert("RGB")


class QwenCard:
    """Shared mechanics: tokenize a prompt, expand the image pad to its feature count, run the full model."""

    model_cls = "Qwen2VLForConditionalGeneration"

    def __init__(self, path, **processor_kwargs):
        import transformers
        from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

        self.model = getattr(transformers, self.model_cls).from_pretrained(path, dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, **processor_kwargs)

    @torch.no_grad()
    def states(self, prompt: str, image: Image.Image | None, **processor_call) -> tuple[torch.Tensor, torch.Tensor]:
        """(final-norm states (L, D), input ids (L,)) of one item."""
        kwargs = {}
        if image is not None:
            processed = self.image_processor([image], return_tensors="pt", **processor_call)
            n = int(processed["image_grid_thw"][0].prod()) // 4
            prompt = prompt.replace("<|image_pad|>", "<|image_pad|>" * n)
            kwargs = dict(pixel_values=processed["pixel_values"], image_grid_thw=processed["image_grid_thw"])
        ids = self.tokenizer(prompt, return_tensors="pt").input_ids
        kwargs["mm_token_type_ids"] = (ids == self.model.config.image_token_id).to(torch.int)
        out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True, **kwargs)
        return out.hidden_states[-1][0].float(), ids[0]


def normalized(vector: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(vector, dim=-1).numpy()


class VLM2VecCard(QwenCard):
    """TIGER-AI-Lab/VLM2Vec's Qwen2_VL_process_fn + MMEBModel: raw text, last token."""

    def embed(self, text=None, image=None, instruction=None) -> np.ndarray:
        if image is None:
            prompt = f"{instruction} {text}" if instruction else text
        else:
            if image.size[0] < 28 or image.size[1] < 28:
                image = image.resize((56, 56))
            if text is None:
                prompt = "<|image_pad|> " + (instruction or "Represent the given image.")
            else:
                prompt = "<|image_pad|> " + (instruction or "Represent the given image with the following question:") + " " + text
        states, _ = self.states(prompt, image)  # the processor's convert_rgb composites transparency on white
        return normalized(states[-1])


class JinaV4Card(QwenCard):
    """jina-embeddings-v4's process_texts / process_images + get_single_vector_embeddings."""

    model_cls = "Qwen2_5_VLForConditionalGeneration"

    def embed(self, text=None, image=None, prompt_name="query", task=None) -> np.ndarray:
        if image is None:
            prefix = "Query" if prompt_name == "query" or task == "text-matching" else "Passage"
            states, _ = self.states(f"{prefix}: {text}", None)
            return normalized(states.mean(dim=0))
        states, ids = self.states(f"<|im_start|>user\n{VISION}Describe the image.<|im_end|>\n", image.convert("RGB"))
        start = int((ids == self.model.config.vision_start_token_id).nonzero()[0, 0])
        end = int((ids == self.model.config.vision_end_token_id).nonzero()[0, 0])
        return normalized(states[start:end + 1].mean(dim=0))


class Qwen3VLEmbeddingCard(QwenCard):
    """Qwen3VLEmbedder.process: the chat template, fetch_image (factor 32), do_resize=False, last token."""

    model_cls = "Qwen3VLForConditionalGeneration"

    def embed(self, text=None, image=None, instruction=None) -> np.ndarray:
        if instruction:
            instruction = instruction.strip()
            if not unicodedata.category(instruction[-1]).startswith("P"):
                instruction += "."
        user = (VISION if image is not None else "") + (text or "")
        prompt = (f"<|im_start|>system\n{instruction or 'Represent the user' + chr(39) + 's input.'}<|im_end|>\n"
                  f"<|im_start|>user\n{user or 'NULL'}<|im_end|>\n<|im_start|>assistant\n")
        if image is not None:
            image = qwen_smart_resize(white_rgb(image), 32, 4 * 32 * 32, 1800 * 32 * 32)
        states, _ = self.states(prompt, image, do_resize=False)
        return normalized(states[-1])


class OpsMMCard(QwenCard):
    """OpsMMEmbeddingV1.embed: GME's prompt, fetch_image (256..1280 patches), processor 4..1280, last token."""

    def __init__(self, path):
        super().__init__(path, min_pixels=4 * 28 * 28, max_pixels=1280 * 28 * 28)

    def embed(self, text=None, image=None, instruction=None) -> np.ndarray:
        user = (VISION if image is not None else "") + (text or "")
        prompt = (f"<|im_start|>system\n{instruction or 'You are a helpful assistant.'}<|im_end|>\n<|im_start|>user\n"
                  f"{user}<|im_end|>\n<|im_start|>assistant\n<|endoftext|>")
        if image is not None:
            image = qwen_smart_resize(image.convert("RGB"), 28, 256 * 28 * 28, 1280 * 28 * 28)
        states, _ = self.states(prompt, image)
        return normalized(states[-1])
