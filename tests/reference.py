"""The E5-V reference recipe, made runnable on current transformers the way vLLM's test does.

One item at a time, fp32, the full LlavaNextForConditionalGeneration with ``output_hidden_states=True``,
``hidden_states[-1][0, -1]`` normalised. To run at all it needs the two patches vLLM applies: the
processor's ``patch_size`` (and CLIP's extra CLS token), and embeddings resized past the ``<image>`` id.
This module is deliberately independent of e5v's data path; it only shares the prompt strings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoProcessor, LlavaNextForConditionalGeneration

LLAMA3 = "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"
TEXT = LLAMA3.format("<sent>\nSummary above sentence in one word: ")
IMAGE = LLAMA3.format("<image>\nSummary above image in one word: ")
COMPOSED = LLAMA3.format('<image>Modify this image with "<sent>", describe modified image in one word: ')


class Reference:
    def __init__(self, path, dtype=torch.float32):
        self.processor = AutoProcessor.from_pretrained(path)
        self.processor.patch_size = 14
        self.processor.num_additional_image_tokens = 1
        self.processor.vision_feature_select_strategy = "default"
        self.model = LlavaNextForConditionalGeneration.from_pretrained(path, dtype=dtype).eval()
        self.model.resize_token_embeddings(self.model.config.text_config.vocab_size + 1)

    @torch.no_grad()
    def embed(self, text=None, image=None, template=None):
        if template is None:
            template = COMPOSED if (text is not None and image is not None) else IMAGE if image is not None else TEXT
        prompt = template.replace("<sent>", text) if text is not None else template
        if image is not None:
            inputs = self.processor(text=[prompt], images=[image], return_tensors="pt")
        else:
            inputs = self.processor(text=[prompt], return_tensors="pt")
        out = self.model(**inputs, output_hidden_states=True, return_dict=True)
        return F.normalize(out.hidden_states[-1][0, -1].float(), dim=-1).numpy()

    @torch.no_grad()
    def hidden(self, text=None, image=None, template=None):
        """All final hidden states (T, D) of one item and its input ids, for pooling references."""
        if template is None:
            template = COMPOSED if (text is not None and image is not None) else IMAGE if image is not None else TEXT
        prompt = template.replace("<sent>", text) if text is not None else template
        kwargs = {"images": [image]} if image is not None else {}
        inputs = self.processor(text=[prompt], return_tensors="pt", **kwargs)
        out = self.model(**inputs, output_hidden_states=True, return_dict=True)
        return out.hidden_states[-1][0].float(), inputs["input_ids"][0]
