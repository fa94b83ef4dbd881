"""Persistent multimodal vector store: ``Store.open(dir, model)``, ``.add(paths)``, ``.search(query)``.

Needs the ``store`` extra (``pip install "e5v[store]"``). See docs/store.md.
"""

from ..errors import ConfigMismatchError, StoreError
from .store import AddReport, Store
from .walk import Record

__all__ = ["Store", "AddReport", "Record", "ConfigMismatchError", "StoreError"]
