"""Load a checkpoint in a narrower dtype than it is stored in without ever holding the wide copy.

transformers' ``from_pretrained(dtype=bf16)`` of an fp32 checkpoint materialises the fp32 tensors before
converting them: measured 3.5 GB peak RSS for the 2.1 GB fp32 bench model in bf16 (1 GB of weights), where
the fp32 load itself stays at 0.4 GB because its tensors are views of the memory-mapped file. So: load in the
stored dtype (memory-mapped, nothing copied), then convert parameter by parameter, in row slices of at most
``CHUNK_BYTES`` of the stored data, telling the kernel after each slice that the file pages it read are no
longer needed (``mapped_pages.release_range``, limited to the checkpoint's own mappings: safetensors maps the
file copy-on-write, and a converted slice is never read again, so dropping its pages loses nothing). The peak is about the
narrow weights plus one slice, whatever the size of the largest tensor (the 8B's 2 GB fp32 embedding table).

What is converted is what transformers converts: parameters. Buffers keep the dtype the model gave them
(rotary ``inv_freq`` stays fp32 in a bf16 model either way), so vectors are identical to transformers' own
narrow load (tests/test_narrow_load.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoint import checkpoint_files, load_checked, stored_dtypes
from .mapped_pages import file_ranges, release_range

#: stored bytes converted between two releases of the mapped pages
CHUNK_BYTES = 64 * 2**20


def wider_stored_dtype(path: Path, dtype: torch.dtype) -> torch.dtype | None:
    """The checkpoint's floating dtype when it is one dtype, wider than ``dtype``; else None (load directly)."""
    stored = stored_dtypes(Path(path))
    if len(stored) != 1:
        return None
    (wide,) = stored
    return wide if wide.itemsize > dtype.itemsize else None


def load_narrowed(model_cls: Any, path: Path, dtype: torch.dtype, adapt=None) -> Any:
    """``load_checked`` in ``dtype``, converting from a wider stored dtype in bounded slices (see module doc).

    ``adapt(model)`` runs on the model in the stored dtype before conversion (e.g. a task adapter merged at full
    precision)."""
    wide = wider_stored_dtype(path, dtype)
    if wide is None:
        model = load_checked(model_cls, path, dtype)
        if adapt is not None:
            adapt(model)
        return model
    model = load_checked(model_cls, path, wide)  # views of the memory-mapped files: nothing copied yet
    if adapt is not None:
        adapt(model)
    within = file_ranges(checkpoint_files(Path(path)))  # what may be released: the checkpoint's mappings only
    converted = {}  # id(wide parameter) -> narrow one, so tied weights stay tied
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None or not param.is_floating_point() or param.dtype == dtype:
                continue
            if id(param) not in converted:
                converted[id(param)] = torch.nn.Parameter(_narrowed(param.detach(), dtype, within),
                                                          requires_grad=param.requires_grad)
            module._parameters[name] = converted[id(param)]
    return model


def _narrowed(source: torch.Tensor, dtype: torch.dtype, within: list[tuple[int, int]]) -> torch.Tensor:
    """``source`` in ``dtype``, copied in row slices of at most CHUNK_BYTES; each slice's mapped file pages are
    dropped once converted (nothing reads them again: the wide parameter is replaced)."""
    target = torch.empty(source.shape, dtype=dtype, device=source.device)
    if source.dim() == 0 or not source.is_contiguous():
        target.copy_(source)
        return target
    row_bytes = max(1, source[0].numel() * source.element_size())
    rows = max(1, CHUNK_BYTES // row_bytes)
    for start in range(0, source.shape[0], rows):
        part = source[start:start + rows]
        target[start:start + rows].copy_(part)
        if within:
            release_range(part.data_ptr(), part.data_ptr() + part.numel() * part.element_size(), within)
    return target
