"""OpenVINO exports built once per checkpoint and kept in a cache, for ``backend="auto"``.

An export is keyed by a fingerprint of the checkpoint as it is on disk (its config and the name, size and
modification time of each weights file) and the export's weights, so a changed checkpoint gets a new export
and an unchanged one is never rebuilt. Builds go to a temporary sibling directory renamed into place when
complete (an interrupted build leaves no half export to be loaded; two processes building at once both
finish, one rename wins). ``E5V_CACHE_DIR`` moves the cache (default ``~/.cache/e5v``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from ..checkpoint import checkpoint_files, stored_dtypes


def cache_root() -> Path:
    return Path(os.environ.get("E5V_CACHE_DIR") or Path.home() / ".cache" / "e5v") / "exports"


def fingerprint(checkpoint: Path) -> str:
    """Changes whenever the checkpoint's config or weights files change (headers are not re-read)."""
    checkpoint = Path(checkpoint).resolve()
    parts = [(checkpoint / "config.json").read_text()]
    for file in checkpoint_files(checkpoint):
        stat = file.stat()
        parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    parts.append(str(checkpoint))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def export_dir(checkpoint: Path, weights: str) -> Path:
    return cache_root() / f"{fingerprint(checkpoint)}-{weights}"


def cached(checkpoint: Path, weights: str) -> Path | None:
    """The complete cached export of ``checkpoint``, or None."""
    target = export_dir(checkpoint, weights)
    return target if (target / "e5v_manifest.json").is_file() else None


def ensure(checkpoint: Path, weights: str, log: Callable[[str], None] = print) -> Path:
    """The cached export of ``checkpoint``, built first if missing (``e5v export`` with the same options)."""
    found = cached(checkpoint, weights)
    if found is not None:
        return found
    from ..export.openvino import export_openvino

    target = export_dir(checkpoint, weights)
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    import torch

    load_dtype = "bf16" if stored_dtypes(Path(checkpoint)) == {torch.bfloat16} else "fp32"  # as stored: no copy
    log(f"building a cached OpenVINO {weights} export of {checkpoint} in {target} (once; reused on the next "
        "load)")
    try:
        export_openvino(str(checkpoint), building, weights=weights, load_dtype=load_dtype, log=log)
        try:
            os.replace(building, target)
        except OSError:  # another process finished first: use its export
            if cached(checkpoint, weights) is None:
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target

