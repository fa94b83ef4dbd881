"""Persistent multimodal vector store: ``Store.open(dir, model)``, ``.add(paths)``, ``.search(query)``.

Needs the ``store`` extra (``pip install "e5v[store]"``); a ``postgresql://`` address opens the PostgreSQL +
pgvector store (the ``pgvector`` extra). See docs/store.md.
"""

from ..errors import ConfigMismatchError, StoreError
from .postgres import PgStore
from .store import AddReport, Store, store_exists
from .walk import Record

__all__ = ["Store", "PgStore", "store_exists", "AddReport", "Record", "ConfigMismatchError", "StoreError"]
