"""The paper's evaluation protocols (``e5v eval``): retrieval, composed retrieval, image-image, STS.

Each protocol is ``run_*(embedder, data) -> (table, counts)`` over data read by ``datasets`` /
``sts_formats``; ``Embedder`` (``cache.py``) is the one path to ``E5V.encode`` (cached on disk,
chunked, with progress bars) and ``EvalReport`` (``report.py``) writes JSON + markdown.
"""

from __future__ import annotations

from .cache import Embedder, EmbeddingCache, default_cache_dir
from .report import EvalReport

__all__ = ["Embedder", "EmbeddingCache", "EvalReport", "default_cache_dir"]
