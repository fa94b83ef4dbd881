"""OpenVINO exports built once per checkpoint and kept in a cache, for ``backend="auto"``.

An export is keyed by a fingerprint of the checkpoint as it is on disk (its config and the name, size and
modification time of each weights file) and the export's weights, so a changed checkpoint gets a new export
and an unchanged one is never rebuilt. Builds go to a temporary sibling directory renamed into place when
complete (an interrupted build leaves no half export to be loaded; two processes building at once both
finish, one rename wins). ``E5V_CACHE_DIR`` moves the cache (default ``~/.cache/e5v``).

``auto_backend`` (``backend="auto"``, the default) lives here, beside the cache it fills, rather than in ``routes.py``:
the torch backend reads the dtype table there, and the export it builds runs the encode pipeline, so the route
table must not import the exporter (an import circle otherwise).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

from ..checkpoint import checkpoint_files, stored_dtypes
from .cpu_features import cpu_flags
from .routes import route_for


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
    """The cached export of ``checkpoint``, built first if missing (``e5v export`` with the same options).

    One build at a time per export (an flock beside it): processes loading the same checkpoint at once (Spark
    workers, server replicas) wait for the first build instead of each holding a model's worth of memory.
    """
    found = cached(checkpoint, weights)
    if found is not None:
        return found
    import fcntl

    target = export_dir(checkpoint, weights)
    target.parent.mkdir(parents=True, exist_ok=True)
    locks = cache_root().with_name("export-locks")  # beside the exports, not among them
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        found = cached(checkpoint, weights)
        return found if found is not None else _build(checkpoint, weights, target, log)


def export_budget() -> int | None:
    """Bytes an export build may use (``memory.memory_budget``: MemAvailable, cgroup, ``E5V_MAX_MEMORY``)."""
    from .memory import memory_budget

    return memory_budget()


def _load_dtype(checkpoint: Path) -> str:
    """The dtype the export loads in: as stored when that is bf16 or fp32 (memory-mapped: no copy). Anything
    else (fp16, mixed) is converted in memory, the whole model at once, in bf16: refused (ModelLoadError, so
    the auto route falls back to torch and its own memory guard) when that would not fit the budget."""
    import torch

    from ..errors import ModelLoadError
    from ..checkpoint import read_header
    from .memory import gb

    stored = stored_dtypes(checkpoint)
    if stored in ({torch.bfloat16}, {torch.float32}):
        return "bf16" if stored == {torch.bfloat16} else "fp32"
    elements = 0
    for file in checkpoint_files(checkpoint):
        header, _ = read_header(file)
        for entry in header.values():
            count = 1
            for size in entry["shape"]:
                count *= int(size)
            elements += count
    need, budget = elements * 2 + (1 << 30), export_budget()
    if budget is not None and need > budget:
        raise ModelLoadError(f"the int8 export of {checkpoint} would convert its {sorted(map(str, stored))} weights "
                             f"in memory (~{gb(need)}), but {gb(budget)} is available")
    return "bf16"


def _build(checkpoint: Path, weights: str, target: Path, log: Callable[[str], None]) -> Path:
    from ..export.openvino import export_openvino

    building = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    load_dtype = _load_dtype(Path(checkpoint))
    log(f"building a cached OpenVINO {weights} export of {checkpoint} in {target} (once; reused on the next "
        "load)")
    try:
        with _quiet_libraries():  # the converters' tracer warnings and NNCF's tables are not the user's business
            export_openvino(str(checkpoint), building, weights=weights, load_dtype=load_dtype,
                            log=lambda line: None if line.startswith("wrote ") else log(line))
        try:
            os.replace(building, target)
        except OSError:  # another process finished first: use its export
            if cached(checkpoint, weights) is None:
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    log(f"cached export ready: {target}")
    return target


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Warnings and library INFO logs off while an export is built on a user's behalf (``e5v export`` shows them)."""
    import logging
    import warnings

    try:
        import nncf  # noqa: F401 - imported first: it sets its logger's level when imported
    except ImportError:
        pass
    loggers = [logging.getLogger(name) for name in ("nncf", "transformers")]
    levels = [logger.level for logger in loggers]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for logger in loggers:
                logger.setLevel(logging.ERROR)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def auto_backend(components, flags: set[str] | None = None, log=print) -> tuple[str, object, str]:
    """``backend="auto"``: ("openvino", the cached int8 export's directory, reason) on CPUs with int8
    dot-product units (AVX-512 VNNI, AMX) for families OpenVINO runs, building the export once if it is missing
    (``export_cache``); else ("torch", None, reason), where the dtype table (``routes.py``) applies. An export directory
    is used as it is.

    Measured on Zen 4 (VNNI): int8 exports run the issue's 16 texts 1.43-1.51x and anyres images 1.26-1.58x
    faster than vLLM bf16, at min cosine 0.9996 vs fp32 (bench/results/openvino.md); on AVX2-only CPUs OpenVINO
    decompresses int8 weights to f32 (fp32 speed), and on AMX into bf16 kernels slower than torch's own bf16,
    so torch is the route there (``routes.ROUTES``, one row per CPU kind)."""
    if (components.path / "e5v_manifest.json").is_file():
        return "openvino", None, "auto: an e5v export directory"
    if "openvino" not in components.spec.backends:
        return "torch", None, f"auto: {components.spec.name} models run on torch only"
    kind, route = route_for(cpu_flags() if flags is None else flags)
    if route.backend == "torch":
        return "torch", None, f"auto on {kind}: {route.why}"
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "torch", None, 'auto: OpenVINO is not installed (pip install "e5v[openvino]")'
    try:
        export = ensure(components.path, "int8", log=log)
    except Exception as exc:  # noqa: BLE001 - any failed build leaves torch, which always runs
        import warnings

        warnings.warn(f"could not build the cached OpenVINO int8 export of {components.path} ({exc}); "
                      "running on torch", stacklevel=3)
        return "torch", None, f"auto: the OpenVINO export failed ({str(exc)[:200]}), torch instead"
    return "openvino", export, f"auto on {kind}: {route.why}, cached int8 export {export}"
