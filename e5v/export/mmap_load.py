"""Load a LLaVA-NeXT checkpoint with its weights memory-mapped from the safetensors files, not copied.

Why: ``from_pretrained`` copies every weight into anonymous memory (16 GB for E5-V 8B in bf16), and the
OpenVINO export then needs that plus the compressed weights. Here each shard is ``mmap``-ed and every tensor
is a ``torch.frombuffer`` view of its bytes; the model is built on the meta device (nothing allocated or
initialised) and the views are assigned as its parameters. ``openvino.convert_model`` shares constant
memory with torch tensors, so NNCF reads the weights straight from the page cache: file-backed pages the
kernel can drop and re-read, not RAM the export owns. Only what the export computes (compressed weights)
lives in anonymous memory.

The mapping is private copy-on-write (``ACCESS_COPY``): tensors are writable as torch expects, the file is
never modified. The mapping stays alive as long as any tensor viewing it does, so dropping the modules
frees it part by part.

Only used when every floating tensor on disk already has the dtype the export wants (no conversion, so a
view is enough); ``export_openvino`` falls back to ``from_pretrained`` otherwise.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import torch

from ..checkpoint import _DTYPES, base_key, check_complete, checkpoint_files, read_header, vision_key
from ..errors import ModelLoadError



def mapped_tensors(files: list[Path]) -> dict[str, torch.Tensor]:
    """Every tensor of ``files`` as a zero-copy view of its memory-mapped bytes."""
    tensors = {}
    for path in files:
        header, start = read_header(path)
        with path.open("rb") as handle:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)  # stays open while viewed
        for name, entry in header.items():
            dtype = _DTYPES.get(entry["dtype"])
            if dtype is None:
                raise ModelLoadError(f"{path.name}: tensor {name} has unsupported dtype {entry['dtype']}")
            begin, end = entry["data_offsets"]
            count = (end - begin) // torch.empty((), dtype=dtype).element_size()
            flat = torch.frombuffer(mapped, dtype=dtype, count=count, offset=start + begin) if count else \
                torch.empty(0, dtype=dtype)
            tensors[name] = flat.view(entry["shape"])
    return tensors


def load_base_mmap(source: Path, config) -> torch.nn.Module:
    """The LlavaNextModel (no lm_head) of ``source`` with memory-mapped weights, ready for export.

    Raises ModelLoadError for missing, mis-shaped or truncated tensors, like the torch backend's
    ``load_checked`` (a silently random weight would give wrong vectors).
    """
    from transformers import LlavaNextForConditionalGeneration

    files = checkpoint_files(source)
    if not files:
        raise ModelLoadError(f"no safetensors weights in {source}")
    with torch.device("meta"):  # parameters without storage: nothing allocated, nothing initialised
        base = LlavaNextForConditionalGeneration(config).model
    expected = {name: tuple(t.shape) for name, t in base.state_dict().items()}
    weights = {}
    for name, tensor in mapped_tensors(files).items():
        key = base_key(name)
        if key is not None:
            weights[vision_key(key, expected)] = tensor
    check_complete(expected, {k: tuple(t.shape) for k, t in weights.items()}, source)
    base.load_state_dict({k: weights[k] for k in expected}, strict=True, assign=True)
    _rebuild_buffers(base)
    return base.eval().requires_grad_(False)


def _rebuild_buffers(base: torch.nn.Module) -> None:
    """Recompute the non-persistent buffers the meta device left empty (rotary inv_freq, CLIP position ids)."""
    for parent in list(base.modules()):
        for child_name, child in list(parent.named_children()):
            if any(b.is_meta for b in child.buffers(recurse=False)) and hasattr(child, "inv_freq"):
                setattr(parent, child_name, type(child)(config=child.config))  # rotary embedding, on CPU
    for module in base.modules():
        ids = getattr(module, "position_ids", None)
        if isinstance(ids, torch.Tensor) and ids.is_meta:
            module.register_buffer("position_ids", torch.arange(ids.shape[-1]).expand(ids.shape), persistent=False)
    left = [name for name, t in [*base.named_parameters(), *base.named_buffers()] if t.is_meta]
    if left:
        raise ModelLoadError(f"internal: tensors left without data after the memory-mapped load: {left[:5]}")
