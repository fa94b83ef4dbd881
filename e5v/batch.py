"""Assemble one batch into language-model inputs and run it through a backend.

The merge of image features into the token embeddings happens here, once, for every backend:
image-marker ids are swapped for a valid id before the embedding lookup (the ``<image>`` id of e5-v
lies outside the embedding table; those rows are overwritten by image features anyway), so user
weights are never resized or mutated.

Sequences are left-padded: the embedding is the state of the last real token, which then sits at
position -1 for every row. Position ids restart at 0 on each row's first real token, so a row's
positions (and therefore RoPE phases) are the same alone or in any batch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import torch

from .backends.base import Backend, VisualFeatures
from .errors import InputError
from .preprocess import Prepared


def decode_batch(batch: list[Prepared], errors: dict[int, str], raise_on_error: bool,
                 family: Any = None) -> list[Prepared]:
    """The batch with its images decoded (RGB, then the family's own image preparation, if any); an image
    that fails to decode is recorded and left out.

    Decoding per batch keeps one batch of decoded images in memory however many images a call holds
    (docs/inputs.md)."""
    ready = []
    for p in batch:
        if p.image is None:
            ready.append(p)
            continue
        try:
            image = p.image.decode(p.index, alpha=family.alpha if family is not None else "white")
            if family is not None:
                image = family.prepare_image(image)
            ready.append(replace(p, image=image))
        except InputError as exc:
            if raise_on_error:
                raise
            errors[p.index] = exc.reason
    return ready


def run_isolated(batch: list[Prepared], forward: Callable[[list[Prepared]], Any], errors: dict[int, str],
                 raise_on_error: bool) -> list[tuple[list[Prepared], Any]]:
    """``[(items, forward(items))]`` for a decoded batch. If the batch fails, its items are retried one at a
    time, so one item the processor or model cannot take (or a batch too big for memory) does not sink the
    rest; the items that fail alone get an error each. If every item fails alone too, the failure is not the
    items' (a broken backend): it is raised, never turned into NaN rows."""
    if not batch:
        return []
    try:
        return [(batch, forward(batch))]
    except Exception as exc:
        if len(batch) == 1:
            raise
        first = exc
    done, failed = [], {}
    for p in batch:
        try:
            done.append(([p], forward([p])))
        except Exception as exc:  # noqa: BLE001 - recorded per item below, or re-raised if all fail
            failed[p.index] = f"the model failed on this item: {type(exc).__name__}: {exc}"
    if not done:
        raise first
    for index, message in failed.items():
        if raise_on_error:
            raise InputError(message, index)
        errors[index] = message
    return done


@torch.inference_mode()
def run_batch(backend: Backend, batch: list[Prepared], components: Any,
              image_mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (hidden (B, L, D), attention_mask (B, L), image_mask (B, L)) for the batch, left-padded."""
    image_token_id, pad_id = components.image_token_id, components.tokenizer.pad_token_id
    family = components.spec
    mrope = family.mrope
    features, geometry = _image_features(backend, batch, components.image_processor, family.geometry_key,
                                         image_mode)
    id_tensors = [torch.tensor(item.ids, dtype=torch.long) for item in batch]  # B x (T_b,)
    flat = torch.cat(id_tensors)  # (sum T,)
    safe = torch.where(flat == image_token_id, torch.full_like(flat, pad_id), flat)
    token_embeds = backend.embed_tokens(safe[None])[0].split([len(t) for t in id_tensors])  # one lookup per batch
    rows, id_rows, image_rows, deepstack = [], [], [], []
    feature_iter = iter(features)
    for item, ids, embeds in zip(batch, id_tensors, token_embeds):
        is_marker = ids == image_token_id  # embeds: (T, D)
        if item.image is None:
            rows.append(embeds)
            id_rows.append(ids)
            image_rows.append(torch.zeros(len(ids), dtype=torch.bool))
            continue
        feats = next(feature_iter)
        if isinstance(feats, VisualFeatures):  # per-layer features for the image positions (DeepStack)
            deepstack.append(feats.layers)
            feats = feats.tokens
        feats = feats.to(embeds.dtype)  # (n, D)
        at = int(is_marker.nonzero()[0, 0])
        n = len(feats)
        rows.append(torch.cat([embeds[:at], feats, embeds[at + 1:]]))  # (T - 1 + n, D)
        id_rows.append(torch.cat([ids[:at], ids.new_full((n,), image_token_id), ids[at + 1:]]))
        image_rows.append(torch.cat([torch.zeros(at, dtype=torch.bool), torch.ones(n, dtype=torch.bool),
                                     torch.zeros(len(ids) - at - 1, dtype=torch.bool)]))
    embeds, mask, positions, image_mask = left_pad(rows, image_rows)
    if mrope:  # e.g. Qwen2-VL's 3-D M-RoPE positions depend on the image grid; the backend computes them
        input_ids = torch.full(mask.shape, pad_id, dtype=torch.long)  # (B, L)
        for b, row in enumerate(id_rows):
            input_ids[b, mask.shape[1] - len(row):] = row
        positions = backend.position_ids(input_ids, mask, image_mask, geometry)
    if deepstack:  # image positions in row-major order are the images' features in batch order
        layers = [torch.cat([image[k] for image in deepstack]) for k in range(len(deepstack[0]))]
        hidden = backend.hidden_states(embeds, mask, positions, deepstack=(image_mask, layers))
    else:
        hidden = backend.hidden_states(embeds, mask, positions)  # (B, L, D)
    return hidden, mask, image_mask


def _image_features(backend: Backend, batch: list[Prepared], image_processor, geometry_key: str, image_mode: str):
    """Features per image (batch order) and the processor's per-image geometry (the family's ``geometry_key``:
    LLaVA-NeXT's original sizes, Qwen2-VL's patch grids)."""
    images = [p.image for p in batch if p.image is not None]
    if not images:
        return [], None
    processed = image_processor(images, return_tensors="pt")
    geometry = processed[geometry_key]
    return backend.image_features(processed["pixel_values"], geometry, image_mode), geometry


def left_pad(rows: list[torch.Tensor], flags: list[torch.Tensor]):
    """Stack (T_i, D) rows into (B, L, D) with left padding; masks and position ids to match."""
    length = max(r.shape[0] for r in rows)
    dim = rows[0].shape[1]
    embeds = rows[0].new_zeros((len(rows), length, dim))  # (B, L, D)
    mask = torch.zeros((len(rows), length), dtype=torch.long)  # (B, L)
    image_mask = torch.zeros((len(rows), length), dtype=torch.bool)  # (B, L)
    for b, (row, flag) in enumerate(zip(rows, flags)):
        t = row.shape[0]
        embeds[b, length - t:] = row
        mask[b, length - t:] = 1
        image_mask[b, length - t:] = flag
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, L): 0 at each row's first real token
    return embeds, mask, positions, image_mask
