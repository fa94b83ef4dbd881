"""Load the model only when something must really be embedded, so a fully cached re-run is instant.

Loading E5-V takes far longer than reading cached vectors. The first run with a given model directory
and options records what the loaded model reported (``embedding_config()``, its prompts and
instruction) under ``<cache>/models/<key>.json``; the key hashes the resolved directory, a fingerprint
of its weight files, the LoRA fingerprint and every loading option. Later runs with the same key
answer those questions from the record and load the weights on the first ``encode_iter``
call, which never comes when everything is cached.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from ..prompts import PromptSet
from .cache import atomic_write, digest, files_fingerprint, lora_fingerprint


class LazyModel:
    """Stands in for ``E5V`` in an ``Embedder``: recorded facts now, real weights on first encode."""

    def __init__(self, facts: dict, load: Callable[[], Any]):
        self._facts = facts
        self._load = load
        self._model: Any = None
        self.components = SimpleNamespace(path=Path(facts["path"]))

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def embedding_config(self) -> dict:
        return dict(self._facts["config"])

    @property
    def prompts(self) -> PromptSet:
        return PromptSet(**self._facts["prompts"])

    @property
    def instruction(self) -> str | None:
        return self._facts["instruction"]

    @property
    def lora(self) -> str | None:
        return self._facts.get("lora")

    @property
    def embedding_dim(self) -> int:
        return int(self._facts["config"]["dim"])

    def encode_iter(self, *args: Any, **kwargs: Any):
        """The real model's ``encode_iter``, loading it on first use (only items missing from the cache get here)."""
        if self._model is None:
            self._model = self._load()
        return self._model.encode_iter(*args, **kwargs)


def model_key(model: str, options: dict, lora: str | None) -> str | None:
    """Key of (model files, adapter files, loading options); None when the model is not a local directory."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return None  # a hub id would need a hub lookup to fingerprint: load it as usual
    from .. import __version__

    parts = {"path": str(path.resolve()), "files": files_fingerprint(path), "options": options,
             "lora": lora_fingerprint(lora), "e5v_version": __version__}
    return digest(json.dumps(parts, sort_keys=True, default=str))[:24]


def cached_or_loaded(cache_root: Path | None, model: str, options: dict, lora: str | None,
                     load: Callable[[], Any]) -> Any:
    """A ``LazyModel`` when this model + options were recorded before, else the loaded model (recorded now)."""
    key = model_key(model, options, lora) if cache_root is not None else None
    record = Path(cache_root) / "models" / f"{key}.json" if key else None
    if record is not None and record.is_file():
        try:
            return LazyModel(json.loads(record.read_text()), load)
        except (ValueError, KeyError, TypeError):
            pass  # unreadable record: load and rewrite it
    loaded = load()
    if record is not None:
        facts = {"path": os.fspath(loaded.components.path), "config": loaded.embedding_config(),
                 "prompts": asdict(loaded.prompts), "instruction": loaded.instruction,
                 "lora": getattr(loaded, "lora", None)}
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(record, json.dumps(facts, indent=2, default=str).encode())
    return loaded
