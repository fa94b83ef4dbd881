"""Writing ``E5VEmbeddings`` results: Parquet, written by the executors in parallel.

Why drop pixel data by default: an image-source struct or a ``binaryFile`` ``content`` column is the whole
image, usually 10-100x larger than its embedding; keeping it would turn an embeddings table into a copy of
the photo library. An image-source struct is replaced by its ``origin`` (the file path).
"""

from __future__ import annotations

from typing import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StructType

from .decode import IMAGE_FIELDS


def embeddings_table(df: DataFrame, columns: Sequence[str] | None = None) -> DataFrame:
    """``df`` without pixel data: binary columns dropped, image-source structs replaced by ``<name>_origin``.

    ``columns`` (if given) selects exactly those columns instead.
    """
    if columns is not None:
        return df.select(*columns)
    keep = []
    for field in df.schema.fields:
        if isinstance(field.dataType, BinaryType):
            continue
        if isinstance(field.dataType, StructType) and set(IMAGE_FIELDS) <= set(field.dataType.fieldNames()):
            keep.append(F.col(f"`{field.name}`.origin").alias(f"{field.name}_origin"))
            continue
        keep.append(F.col(f"`{field.name}`"))
    return df.select(*keep)


def write_parquet(df: DataFrame, path: str, *, columns: Sequence[str] | None = None, mode: str = "errorifexists",
                  partition_by: Sequence[str] | None = None) -> None:
    """Write the embeddings (and the other non-pixel columns) to Parquet; each executor writes its part.

    Args:
        df: the output of ``E5VEmbeddings.transform`` (nothing is collected to the driver).
        path: a directory on storage every executor can write (HDFS, S3, a shared mount; local in tests).
        columns: the columns to write; default: every column except pixel data (see ``embeddings_table``).
        mode: Spark's save mode ("errorifexists", "overwrite", "append", "ignore").
        partition_by: optional partition columns.
    """
    writer = embeddings_table(df, columns).write.mode(mode)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.parquet(path)
