"""What runs inside Spark's Python workers: the per-process model cache and the batch embedding function.

Why a module-level cache: a Python worker serves many Arrow batches and (with ``spark.python.worker.reuse``,
on by default) many tasks; loading E5-V per batch or per task would cost far more than embedding. The cache
is keyed by (model, backend) only -- instruction and image mode are per-call options of ``encode`` -- so
several stages over the same model share one copy in memory.

Threads: each concurrently running task has its own Python worker with its own model, so torch (and
OpenVINO) get ``spark.task.cpus`` threads per worker by default (1 unless configured); N workers x M
threads never oversubscribes the executor's cores.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Iterator

import numpy as np
import pandas as pd

from ..errors import InputError
from .decode import SKIP, image_value, row_input, text_value

_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()
_LOADS = {"count": 0}


def cached_model(config: dict[str, Any]) -> Any:
    """The E5V model for ``config`` in this process, loaded on first use."""
    key = (config["model"], config["backend"], config.get("family"), config.get("task"))
    with _LOCK:
        if key not in _CACHE:
            from .. import E5V

            threads = _threads(config)
            if config["backend"] == "openvino" or _looks_exported(config["model"]):
                _openvino_threads(threads)
            _CACHE[key] = E5V.from_pretrained(config["model"], backend=config["backend"], family=config.get("family"),
                                              task=config.get("task"))
            _LOADS["count"] += 1
        return _CACHE[key]


def load_count() -> int:
    """How many models this process has loaded (diagnostics; the tests check it stays at one per worker)."""
    return _LOADS["count"]


#: Rows per ``encode_iter`` chunk inside one Arrow batch: batches are length-sorted within a chunk, so this is
#: much larger than ``batchSize`` (chunks of batchSize rows, as before, could not sort at all).
CHUNK_SIZE = 256


def embed_rows(model: Any, values: list[Any], config: dict[str, Any]) -> pd.DataFrame:
    """Embed one Arrow batch of row inputs (already converted, SKIP for nulls, InputError for bad rows).

    Returns a DataFrame with ``embedding`` (float32 array or None) and ``error`` (str or None), row for row.
    """
    n = len(values)
    embeddings: list[Any] = [None] * n
    errors: list[Any] = [None] * n
    todo = []
    for i, value in enumerate(values):
        if isinstance(value, InputError):
            errors[i] = value.reason
        elif value is not SKIP:
            todo.append(i)
    results = model.encode_iter((values[i] for i in todo), chunk_size=CHUNK_SIZE, batch_size=config["batch_size"],
                                normalize=config["normalize"], instruction=config["instruction"],
                                prompt=config.get("prompt"),
                                image_mode=config["image_mode"], show_progress_bar=False)
    for result in results:
        for j, vector in enumerate(result.vectors):
            i = todo[result.offset + j]
            if j in result.errors:
                errors[i] = result.errors[j]
            elif not np.isfinite(vector).all():
                errors[i] = "the model produced a non-finite vector"
            else:
                embeddings[i] = vector
    return pd.DataFrame({"embedding": embeddings, "error": errors})


def convert_batch(columns: tuple, roles: tuple[str, ...]) -> list[Any]:
    """Arrow batch columns -> one input per row (SKIP for null rows, InputError for undecodable rows)."""
    per_role = []
    for column, role in zip(columns, roles):
        # a struct column arrives as a DataFrame; a null struct as a record of nulls (image_value skips it)
        values = column.to_dict("records") if isinstance(column, pd.DataFrame) else column.tolist()
        per_role.append([_convert_one(v, role) for v in values])
    rows = []
    for parts in zip(*per_role):
        bad = next((p for p in parts if isinstance(p, InputError)), None)
        if bad is not None:
            rows.append(bad)
            continue
        named = dict(zip(roles, parts))
        rows.append(row_input(named.get("image", SKIP), named.get("text", SKIP)))
    return rows


def run_batches(batches: Iterator[Any], config: dict[str, Any], roles: tuple[str, ...]) -> Iterator[pd.DataFrame]:
    """The body of the iterator pandas UDF: model loaded once, each Arrow batch streamed through encode_iter."""
    model = cached_model(config)
    _set_torch_threads(_threads(config))
    for batch in batches:
        columns = batch if isinstance(batch, tuple) else (batch,)
        yield embed_rows(model, convert_batch(columns, roles), config)


def make_udf(config: dict[str, Any], roles: tuple[str, ...]):
    """An iterator pandas UDF (one or two input columns) returning struct<embedding: array<float>, error>."""
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

    schema = StructType([StructField("embedding", ArrayType(FloatType(), containsNull=False)),
                         StructField("error", StringType())])
    if len(roles) == 1:
        def one(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
            return run_batches(batches, config, roles)
        fn = one
    else:
        def two(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
            return run_batches(batches, config, roles)
        fn = two
    return pandas_udf(fn, schema).asNondeterministic()


def _convert_one(value: Any, role: str) -> Any:
    try:
        return image_value(value) if role == "image" else text_value(value)
    except InputError as exc:
        return exc


def _threads(config: dict[str, Any]) -> int:
    if config.get("threads"):
        return int(config["threads"])
    try:
        from pyspark import TaskContext

        context = TaskContext.get()
        return max(1, int(context.cpus())) if context is not None else 1
    except Exception:  # noqa: BLE001 - outside a task (tests, local use): one thread like a default task
        return 1


def _set_torch_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _openvino_threads(threads: int) -> None:
    """OpenVINO reads its thread count at compile time, through the backend's documented env override."""
    current = json.loads(os.environ.get("E5V_OPENVINO_CONFIG", "{}"))
    current.setdefault("INFERENCE_NUM_THREADS", threads)
    os.environ["E5V_OPENVINO_CONFIG"] = json.dumps(current)


def _looks_exported(model: str) -> bool:
    return os.path.isfile(os.path.join(model, "e5v_manifest.json"))
