"""Calibration inputs for data-aware int4 compression (GPTQ): what the language model really sees.

Plain int4 rounds each weight group to its nearest 4-bit grid independently. GPTQ instead quantizes a
matmul's columns one at a time and corrects the remaining columns for the error so far, using the
second moments of that matmul's *inputs*; it needs example inputs of the language model. Those must be
E5-V's real ones: the chat-template prompts, the image features scattered in at the ``<image>`` tokens,
left padding. So they are produced by the encode pipeline itself (what ``E5V.encode`` runs), on the model being exported,
with a backend that records what reaches the language model instead of running it. The data path is
therefore the one users run: no second implementation of prompts or the image merge.

Measured on the E5-V-shaped benchmark model (random weights; min cos to torch fp32 over texts and anyres
images, bench/results/openvino.md run 6): 0.960 plain, 0.990 with GPTQ on the built-in set. AWQ and scale
estimation did not help there in an earlier trial (they exploit activation outliers of trained models,
which random weights lack). See docs/openvino.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ..backends.torch_backend import TorchBackend

#: Sentences of varied length and topic: the text half of the built-in calibration set.
CALIBRATION_TEXTS = (
    "a dog",
    "two children build a sandcastle on a crowded beach while gulls circle overhead",
    "A red double-decker bus waits at a stop in the rain.",
    "close-up of a bowl of ramen with a soft-boiled egg, scallions and sliced pork",
    "The committee postponed the vote until the budget report is published next month.",
    "snow-covered mountains reflected in a still alpine lake at dawn",
    "how do I reset the password of my router",
    "A man in a grey suit reads a newspaper on a train platform; behind him a clock shows ten past eight.",
    "vintage bicycle leaning against a brick wall",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "a crowded night market with lanterns, food stalls and people queuing for dumplings",
    "The quarterly revenue rose 12 percent, driven by subscriptions in Europe and Asia, while hardware sales "
    "fell for the third consecutive quarter as supply constraints persisted.",
    "kitten",
    "An aerial view of a winding river through a green valley with small farms and a wooden bridge.",
    "two cups of coffee and a croissant on a marble table",
    "Instructions: remove the back cover, disconnect the battery, and unscrew the four screws that hold the "
    "display assembly in place before lifting it gently from the bottom edge.",
)


def calibration_image(width: int = 336, height: int = 336, seed: int = 0):
    """A generated RGB image (gradients plus random shapes, so every anyres tile carries structure).
    Deterministic: the export is reproducible."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)),
                     np.full_like(x, int(rng.integers(0, 255)))], -1).astype(np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x0, y0, x0 + max(width // 5, 2), y0 + max(height // 5, 2)]
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image


def default_calibration_items() -> list:
    """The built-in set: all the texts and one image, balanced by *tokens*.

    GPTQ's statistics weigh every token alike, and one anyres image is ~1-3k tokens: as many as all the
    texts together. Measured on the tiny test model (min cos to fp32, texts / images): plain int4
    0.949 / 0.965; texts plus six images 0.944 / 0.992 (texts got *worse*: the images swamped them);
    texts only 0.977 / 0.977; texts plus one image 0.977 / 0.986, which is this set.
    """
    return list(CALIBRATION_TEXTS) + [calibration_image()]


def read_calibration_file(path: str | Path) -> list:
    """Items from a JSON Lines file: one ``{"text": ...}``, ``{"image": path}`` or both per line.

    Relative image paths are resolved against the file's directory. Bad lines are refused with their
    numbers (a calibration set that silently lost rows would change the export without saying so).
    """
    from ..jsonl import numbered_objects

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read the calibration file {path}: {exc}") from exc
    items, problems = [], []
    for number, row in numbered_objects(lines):
        if isinstance(row, str):
            problems.append(f"line {number}: {row}")
            continue
        unknown = set(row) - {"text", "image"}
        if unknown or not (row.get("text") or row.get("image")):
            problems.append(f"line {number}: expected 'text' and/or 'image', got keys {sorted(row)}")
            continue
        item = dict(row)
        if item.get("image") is not None:
            image = Path(item["image"])
            item["image"] = image if image.is_absolute() else path.parent / image
        items.append(item if "image" in item else item["text"])
    if problems:
        raise ValueError(f"bad calibration file {path}: " + "; ".join(problems[:10]))
    if not items:
        raise ValueError(f"the calibration file {path} holds no items")
    return items


class RecordingBackend(TorchBackend):
    """The torch backend with the language model replaced by a recorder of its inputs.

    Token embeddings and image features are computed for real (they are the language model's input);
    ``hidden_states`` stores (inputs_embeds f32, attention_mask, position_ids) as numpy and returns zeros,
    so recording costs no decoder compute.
    """

    def __init__(self, model: Any, dtype: torch.dtype):
        super().__init__(model, torch.device("cpu"), dtype)
        self.recorded: list[dict[str, np.ndarray]] = []

    @torch.inference_mode()
    def hidden_states(self, embeds: torch.Tensor, attention_mask: torch.Tensor,
                      position_ids: torch.Tensor) -> torch.Tensor:
        self.recorded.append({"inputs_embeds": embeds.float().numpy(),
                              "attention_mask": attention_mask.long().numpy(),
                              "position_ids": position_ids.long().numpy()})
        return torch.zeros(embeds.shape, dtype=embeds.dtype)


def record_language_inputs(base: Any, source: Path, items: Iterable[Any], batch_size: int = 1
                           ) -> list[dict[str, np.ndarray]]:
    """The language model's inputs for ``items``, made by the encode pipeline on ``base`` (LlavaNextModel).

    The same ``Pipeline`` ``E5V.encode`` runs (the family's default prompts, anyres, its pooling), driven
    directly so that the export package does not import the encoder that loads exports. One item per batch
    by default: no padding rows in the statistics GPTQ collects.
    """
    from ..preprocess import MAX_BATCH_TOKENS
    from ..head import Head
    from ..inputs import ImageLimits
    from ..loading import load_components
    from ..pipeline import Pipeline, Request

    dtype = next(base.parameters()).dtype
    recorder = RecordingBackend(base, dtype)
    components = load_components(str(source))
    spec = components.spec
    request = Request(prompts=spec.prompt_set(None, None, components.task), mode="anyres",
                      pooler=spec.checked_pooler(spec.default_pooling), head=Head(normalize=False),
                      batch_size=batch_size, raise_on_error=True, max_batch_tokens=MAX_BATCH_TOKENS,
                      image_limits=ImageLimits())
    items = list(items)
    Pipeline(components, recorder).run(items, request, int(base.config.text_config.hidden_size))
    return recorder.recorded
