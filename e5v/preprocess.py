"""Item -> prompt token ids (with one ``<image>`` marker per image) and an estimated sequence length.

Token ids are produced by tokenizing the full rendered prompt once, exactly as the reference recipe
does; the single ``<image>`` id is expanded to the image's feature count later, at assembly, from the
features the vision tower actually returned. Overlong text is truncated inside the text slot only,
so the template around it (and the last token, whose state is the embedding) stays intact.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

from PIL import Image

from .errors import InputError
from .inputs import Item
from .prompts import PromptSet, render, split_around_text


@dataclass
class Prepared:
    """One item ready for batching."""

    index: int  # position in the caller's list
    ids: list[int]  # prompt token ids; image items hold one image-token marker
    image: Any  # ImageSource (probed) while planning, PIL.Image once its batch is decoded, None for text
    image_tokens: int  # estimated number of image features (0 for text)

    @property
    def length(self) -> int:
        """Estimated sequence length after expanding the image marker."""
        return len(self.ids) + max(self.image_tokens - 1, 0)


def anyres_feature_count(height: int, width: int, pinpoints: list[list[int]], view: int = 336, patch: int = 14) -> int:
    """Number of LLaVA-NeXT anyres image features (base view + unpadded tiles + newlines), CLS excluded.

    Mirrors transformers' packing (select_best_resolution, unpad_image, one newline per feature row);
    tests check it against the features the model really returns.
    """
    from transformers.image_processing_utils import select_best_resolution

    best_h, best_w = select_best_resolution((height, width), pinpoints)
    side = view // patch  # features per view side (24)
    cur_h, cur_w = side * (best_h // view), side * (best_w // view)
    if width / height > cur_w / cur_h:
        new_h = int(round(height * (cur_w / width), 7))
        cur_h -= 2 * ((cur_h - new_h) // 2)
    else:
        new_w = int(round(width * (cur_h / height), 7))
        cur_w -= 2 * ((cur_w - new_w) // 2)
    return side * side + cur_h * cur_w + cur_h


def prepare(items: list[Item], prompts: PromptSet, family: str, tokenizer, image_token_id: int,
            max_length: int, image_mode: str, count_image_tokens: Callable[[Image.Image, str], int],
            indices: list[int] | None = None) -> list[Prepared]:
    """Tokenize every item's prompt; truncate overlong text with a warning naming the item.

    ``count_image_tokens(image, mode)`` estimates an image's feature count (model-family specific).
    """
    indices = indices if indices is not None else list(range(len(items)))
    out = []
    for index, item in zip(indices, items):
        n_image = count_image_tokens(item.image, image_mode) if item.image is not None else 0
        ids = _tokenize(item, index, prompts, family, tokenizer, image_token_id, max_length, n_image)
        out.append(Prepared(index=index, ids=ids, image=item.image, image_tokens=n_image))
    return out


def _tokenize(item: Item, index: int, prompts: PromptSet, family: str, tokenizer, image_token_id: int,
              max_length: int, n_image: int) -> list[int]:
    text = item.text
    prompt = render(item.kind, prompts, family, text=text)
    encoded = tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=text is not None)
    ids = list(encoded["input_ids"])
    markers = sum(1 for t in ids if t == image_token_id)
    expected = 1 if item.image is not None else 0
    if markers != expected:
        token = tokenizer.convert_ids_to_tokens(image_token_id)
        raise InputError(
            f"the prompt has {markers} {token!r} tokens but the item has {expected} image(s); "
            f"text must not contain the literal {token!r}",
            index,
        )
    excess = len(ids) + max(n_image - 1, 0) - max_length
    if excess <= 0:
        return ids
    if text is None:
        raise InputError(f"the image needs {n_image} tokens, more than the model's limit of {max_length}", index)
    # Drop text tokens from the end of the text slot, keeping the template intact.
    before, _ = split_around_text(item.kind, prompts, family)
    start, end = len(before), len(before) + len(text)
    inside = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if a >= start and b <= end and b > a]
    if len(inside) <= excess:
        raise InputError(f"the prompt does not fit in the model's limit of {max_length} tokens even without its text", index)
    drop = set(inside[len(inside) - excess:])
    warnings.warn(
        f"input {index}: text is {len(inside)} tokens; truncated by {excess} to fit the model's limit of {max_length}",
        stacklevel=4,
    )
    return [t for i, t in enumerate(ids) if i not in drop]


#: A batch is cut where the next (shorter) item is below this share of the batch's longest item, so
#: left padding wastes at most ~1/10 of a batch's compute. The reference recipe pads every batch to its
#: longest text; on CPU, where cost is proportional to the padded tokens, mixed-length batches of 8 were
#: ~40% padding. Measured on the bench model's 16 mixed texts (2,905 tokens; 2 cores of AMD Zen 5, best of 3):
#: OpenVINO int8 2.22 s at 0.75 -> 2.09 s at 0.9 (2.15 s one text at a time), torch bf16 3.83 -> 3.29 s (3.11 s
#: one at a time): on 2 cores a forward pass is compute-bound from a few dozen tokens, so padding costs more
#: than a smaller batch does. Vectors do not depend on how items are batched (tests/test_batching.py).
MIN_LENGTH_SHARE = 0.9

#: A batch also stops growing where its padded size (items x longest item) would pass this many tokens.
#: Activation memory grows with the padded tokens of one forward pass, not with ``batch_size``: measured
#: ~0.28 MB per token in the OpenVINO int4/int8 language graph at E5-V's width, so a batch of 8 anyres
#: images (~19k tokens) would add ~5 GB on top of the weights. 8192 keeps text batches of any usual size
#: whole (8 x 1k tokens) and puts about three anyres images in one pass. An item longer than this still
#: runs, alone. ``E5V.max_batch_tokens`` changes it per model.
MAX_BATCH_TOKENS = 8192


def plan_batches(prepared: list[Prepared], batch_size: int, max_tokens: int = MAX_BATCH_TOKENS) -> list[list[Prepared]]:
    """Sort by estimated length, longest first (memory errors surface in the first batch), and chunk into
    batches of at most ``batch_size`` items of similar length (see ``MIN_LENGTH_SHARE``) and at most
    ``max_tokens`` padded tokens (see ``MAX_BATCH_TOKENS``)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    batches: list[list[Prepared]] = []
    for item in sorted(prepared, key=lambda p: -p.length):
        current = batches[-1] if batches else None
        if (current is None or len(current) >= batch_size or item.length < MIN_LENGTH_SHARE * current[0].length
                or (len(current) + 1) * current[0].length > max_tokens):
            batches.append([item])
        else:
            current.append(item)
    return batches
