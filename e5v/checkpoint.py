"""Checkpoint files and key layouts, and the one completeness check, shared by every loader.

The torch backend, the OpenVINO export (memory-mapped or copied), training and merge all read
LLaVA-NeXT safetensors checkpoints. Two layouts exist (DESIGN.md §2.9): the hub's e5-v (transformers 4:
``language_model.model.*``, ``vision_tower.vision_model.*``, ``language_model.lm_head``) and what
transformers 5 saves (``model.language_model.*``, ``model.vision_tower.*``, ``lm_head``). A tensor the
checkpoint lacks or holds in another shape must stop the load: transformers only logs it and initialises
the weight randomly, and every vector would be silently wrong.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import ModelLoadError

_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def checkpoint_files(source: Path) -> list[Path]:
    """The safetensors files of a checkpoint dir (sharded via its index, or a single file); [] if none."""
    index = source / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as exc:
            raise ModelLoadError(f"{index} is corrupt ({exc}); re-download the checkpoint") from exc
        return [source / name for name in names]
    single = source / "model.safetensors"
    return [single] if single.is_file() else []


def read_header(path: Path) -> tuple[dict, int]:
    """A safetensors file's header ``{name: {dtype, shape, data_offsets}}`` and where its data starts.

    Refuses a missing or truncated file up front, naming it, rather than failing on first access to a page
    past the end (SIGBUS).
    """
    if not path.is_file():
        raise ModelLoadError(f"checkpoint shard {path.name} is missing from {path.parent}; re-download it")
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"checkpoint shard {path} is truncated ({size} bytes); re-download it")
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            raise ModelLoadError(f"checkpoint shard {path} is truncated (header past the end); re-download it")
        try:
            header = json.loads(handle.read(length))
        except ValueError as exc:
            raise ModelLoadError(f"checkpoint shard {path} has a corrupt header ({exc}); re-download it") from exc
    header.pop("__metadata__", None)
    start = 8 + length
    end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    if start + end > size:
        raise ModelLoadError(f"checkpoint shard {path} is truncated: {size} bytes, its header needs "
                             f"{start + end}; re-download it")
    return header, start


def stored_dtypes(source: Path) -> set[torch.dtype]:
    """Dtypes of the floating-point tensors on disk (headers only, nothing read)."""
    found = set()
    for path in checkpoint_files(source):
        header, _ = read_header(path)
        found |= {_DTYPES.get(entry["dtype"]) for entry in header.values()}
    return {dtype for dtype in found if dtype is not None and dtype.is_floating_point}


def base_key(name: str) -> str | None:
    """Checkpoint key (royokong/e5-v's transformers-4 layout or transformers-5's) -> LlavaNextModel key.

    None for the lm_head, which an embedding never uses.
    """
    if name.startswith("model."):  # transformers 5 layout: model.language_model.*, model.vision_tower.*
        name = name[len("model."):]
    if name.startswith(("lm_head.", "language_model.lm_head.")):
        return None
    if name.startswith("language_model.model."):
        return "language_model." + name[len("language_model.model."):]
    return name


def vision_key(key: str, expected: dict) -> str:
    """Align the vision tower's nesting (``vision_tower.vision_model.*`` or not) with the model's."""
    if key in expected or not key.startswith("vision_tower."):
        return key
    nested = "vision_tower.vision_model." + key[len("vision_tower."):]
    flat = "vision_tower." + key[len("vision_tower.vision_model."):] if key.startswith("vision_tower.vision_model.") \
        else key
    return nested if nested in expected else flat


#: Key prefixes of the language model (without lm_head) in LLaVA-NeXT checkpoints, newest first.
LM_PREFIXES = ("model.language_model.", "language_model.model.")


def lm_key(name: str) -> str | None:
    """Checkpoint key -> key inside the bare language model (``layers.0...``), None outside it."""
    for prefix in LM_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return None


def check_complete(expected: Mapping[str, tuple], found: Mapping[str, tuple], source: Any, what: str = "checkpoint"
                   ) -> None:
    """Refuse unless ``found`` (key -> shape) has every ``expected`` key with its shape (extra keys are fine)."""
    missing = sorted(set(expected) - set(found))
    mismatched = sorted(k for k in set(expected) & set(found) if tuple(found[k]) != tuple(expected[k]))
    if missing or mismatched:
        listing = ", ".join(missing[:3] + [f"{k} {tuple(found[k])} != {tuple(expected[k])}" for k in mismatched[:3]])
        raise ModelLoadError(f"the {what} in {source} does not match its config: {len(missing)} missing and "
                             f"{len(mismatched)} mis-shaped tensors (e.g. {listing}); it is incomplete or corrupt "
                             "(re-download it)")


def load_checked(model_cls: Any, path: Any, dtype: torch.dtype) -> Any:
    """``from_pretrained`` that refuses checkpoints with missing or mis-shaped tensors.

    transformers only logs them and initialises those weights randomly: every vector would be silently
    wrong. The lm_head is exempt (e5v drops it). transformers maps its own key layouts (old Qwen2-VL
    checkpoints included), so its loading report is what is checked here.
    """
    try:
        model, info = model_cls.from_pretrained(path, dtype=dtype, output_loading_info=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the model weights from {path}: {exc}") from exc
    check_loading_info(info, path)
    return model


def check_loading_info(info: Mapping[str, Any], source: Any, what: str = "checkpoint") -> None:
    """Refuse what transformers' ``output_loading_info`` reports as missing or mis-shaped (lm_head exempt)."""
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith("lm_head"))
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", ()))
    if missing or mismatched:
        listing = ", ".join((missing + mismatched)[:5])
        raise ModelLoadError(
            f"the {what} in {source} does not match its config: {len(missing)} missing and {len(mismatched)} "
            f"mis-shaped tensors (e.g. {listing}); it is incomplete or corrupt (re-download it)"
        )
