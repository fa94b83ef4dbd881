"""pyspark ML integration: ``E5VEmbeddings`` (a Transformer) and helpers to write its results.

Needs the ``spark`` extra (``pip install "e5v[spark]"``). See docs/spark.md.
"""

from ..errors import require

require("pyspark", "spark")

from .io import embeddings_table, write_parquet  # noqa: E402
from .store_writer import write_store  # noqa: E402
from .stage import E5VEmbeddings  # noqa: E402

__all__ = ["E5VEmbeddings", "embeddings_table", "write_parquet", "write_store"]
