"""Write ``E5VEmbeddings`` results into e5v's vector store (``e5v.store.Store``).

A LanceDB store is a local directory with a single writer, so rows stream to the driver partition by partition
(``toLocalIterator``: never the whole result at once) and are committed in batches by ``Store.add_vectors``.
A PostgreSQL store (``postgresql://...``) takes many writers: each partition is written by its executor
over one connection of its own (batched binary ``COPY``), and only a small report per partition comes back.
Rows are keyed by content hash there, so a killed job, a retried task or a rerun stores every row once.
The embedding config recorded in the store comes from a Python worker (``model.embedding_config()`` of the
stage's model, which that worker has cached anyway), so the driver never loads the weights. Content hashes
match ``e5v index``'s for the same bytes/text, so re-running, or indexing the same files with the CLI, adds
no duplicates (image-source structs are hashed over their decoded pixels, so they dedupe among themselves).
"""

from __future__ import annotations

from typing import Any, Sequence

from pyspark.sql import DataFrame


def write_store(df: DataFrame, db: str, stage: Any, *, metadata_cols: Sequence[str] = (),
                commit_every: int = 1024) -> Any:
    """Add the embedded rows of ``df`` (``stage.transform(...)`` output) to the store at ``db``.

    Args:
        df: the transformed DataFrame (input columns, ``outputCol``, ``errorCol``).
        db: store directory, or ``postgresql://...[#table]`` (executors write directly); created if missing,
            refused if made with another embedding config.
        stage: the ``E5VEmbeddings`` that produced ``df`` (its params define the embedding config).
        metadata_cols: columns stored as the items' metadata (JSON-able values).
    Returns:
        ``e5v.store.AddReport`` (added, skipped_existing, failed with reasons).
    """
    from ..store import Store

    if not stage.getOrDefault(stage.normalize):
        raise ValueError("the store holds L2-normalised vectors; run the stage with normalize=True")
    out, err = stage.getOutputCol(), stage.getErrorCol()
    missing = [c for c in (out, err, *metadata_cols) if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not found; pass the output of E5VEmbeddings.transform")
    roles = stage._input_roles(df)
    # binaryFile DataFrames carry the file's location in ``path``: record it for image items
    path_col = "path" if "path" in df.columns and any(role == "image" for role, _ in roles) else None
    config = embedding_config_from_worker(df, stage)
    store = Store.open(db, config=config)  # created (or checked) once, before any executor writes
    columns = list(dict.fromkeys([name for _, name in roles] + [out, err, *metadata_cols] + ([path_col] if path_col else [])))
    selected = df.select(*columns)
    if store.backend == "postgresql":
        store.close()
        return _write_from_executors(selected, db, config, roles, out, err, path_col, metadata_cols, commit_every)
    rows = (_to_store_row(row.asDict(), roles, out, err, path_col, metadata_cols) for row in selected.toLocalIterator())
    return store.add_vectors((r for r in rows if r is not None), commit_every=commit_every)


def _write_from_executors(selected: DataFrame, db: str, config: dict, roles: list, out: str, err: str,
                          path_col: str | None, metadata_cols: Sequence[str], commit_every: int) -> Any:
    """Each partition adds its rows to the PostgreSQL store itself; returns the merged ``AddReport``."""
    from ..store import AddReport

    def write_partition(rows: Any) -> Any:
        from ..store import Store

        with Store.open(db, config=config, create=False) as store:
            converted = (_to_store_row(row.asDict(), roles, out, err, path_col, metadata_cols) for row in rows)
            report = store.add_vectors((r for r in converted if r is not None), commit_every=commit_every)
        yield {"added": report.added, "skipped": report.skipped_existing, "failed": report.failed,
               "seconds": report.seconds}

    merged = AddReport()
    for part in selected.rdd.mapPartitions(write_partition).collect():
        merged.added += part["added"]
        merged.skipped_existing += part["skipped"]
        merged.failed += [tuple(f) for f in part["failed"]]  # (source, reason): as the driver path keeps them
        merged.seconds = max(merged.seconds, part["seconds"])
    from ..store import Store

    with Store.open(db, config=config, create=False) as store:
        merged.total_rows = len(store)
    return merged


def embedding_config_from_worker(df: DataFrame, stage: Any) -> dict:
    """``E5V.embedding_config()`` of the stage's model, computed on a Python worker (driver loads nothing)."""
    cfg = stage._worker_config()

    def config_of(_: Any) -> dict:
        from .worker import cached_model

        return cached_model(cfg).embedding_config(instruction=cfg["instruction"], image_mode=cfg["image_mode"])

    return df.sparkSession.sparkContext.parallelize([0], 1).map(config_of).collect()[0]


def _to_store_row(row: dict, roles: list, out: str, err: str, path_col: str | None,
                  metadata_cols: Sequence[str]) -> dict | None:
    """One Spark row -> a ``Store.add_vectors`` row; None for all-null inputs (nothing to store)."""
    from ..items import content_key, kind_of

    values = {role: row[name] for role, name in roles}
    image, text = values.get("image"), values.get("text")
    if image is None and text is None:
        return None
    path = row.get(path_col) if path_col else None
    if image is not None and not isinstance(image, (bytes, bytearray)):  # Spark image-source struct
        struct = image.asDict() if hasattr(image, "asDict") else dict(image)
        path = path or struct.get("origin")
        image = b"".join([repr((struct.get("height"), struct.get("width"), struct.get("nChannels"))).encode(),
                          bytes(struct.get("data") or b"")])
    if isinstance(path, str) and path.startswith("file:"):  # Spark's local URIs -> the filesystem path
        from urllib.parse import unquote, urlparse

        path = unquote(urlparse(path).path)
    kind = kind_of(image is not None, text is not None)
    return {"vector": row[out], "error": row[err], "kind": kind, "text": text, "path": path,
            "hash": content_key(kind, image=bytes(image) if image is not None else None, text=text),
            "metadata": {c: row[c] for c in metadata_cols}}

