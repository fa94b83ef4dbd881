"""E5VEmbeddings on pyspark: rows/s in local[1] vs local[2], and the Spark path's per-row overhead vs
calling ``E5V.encode`` directly -- same rows, same model, one run.

Model: ``--model bench`` (default: E5-V's real layer widths, depths scaled 1/16; e5v.testing.make_bench_model)
for the scaling, or ``--model tiny`` (the test model: model cost ~0, so the Spark path's own per-row cost shows),
torch fp32, 1 torch thread per Python worker (the stage's default: spark.task.cpus = 1). Rows: text (equal
length, 16 words) or images (base mode, 336 px). Each configuration runs in its own process (own
SparkSession, own Python workers), so peaks are its own. Spark configurations are warmed up first (workers
started, model loaded in each) and then timed on the full data; "peak RSS" is the driver process plus the
largest Python worker.

    .venv/bin/python bench/spark.py [--model bench|tiny] [--rows 256] [--kind text|image] [--partitions 8]
        [--write bench/results/spark.md]   (appends the table)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402 - at module level: pandas_udf resolves the type hints by name

from common import BENCH_MODEL, emit, machine_note, peak_rss_mb, run_worker  # noqa: E402

BATCH = 8
WORDS = 16
TINY = Path("/tmp/e5v-spark-bench-tiny")


def rows(kind: str, n: int, words: int = WORDS) -> list:
    """Deterministic inputs: equal-length texts, or 336 px PNG bytes (binaryFile-like) for images.

    Equal sizes on purpose: ``E5V.encode`` sorts a whole call by length, the stage only within a partition's
    chunk, so mixed lengths would add padding work to the Spark side and mix it into the "overhead".
    """
    from throughput import WORDS as VOCAB
    from throughput import images

    if kind == "text":
        return [" ".join(VOCAB[(i + j) % len(VOCAB)] for j in range(words)) for i in range(n)]
    import io

    out = []
    for image in images(n):
        buf = io.BytesIO()
        image.resize((336, 336)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def model_path(name: str) -> Path:
    """'bench' (real widths) or 'tiny' (test model: model cost ~0, so the Spark overhead stands out)."""
    if name == "tiny":
        if not (TINY / "config.json").exists():
            from e5v.testing import make_tiny_model

            make_tiny_model(TINY)
        return TINY
    if not (BENCH_MODEL / "model.safetensors").exists():
        from e5v.testing import make_bench_model

        make_bench_model(BENCH_MODEL)
    return BENCH_MODEL


def direct(name: str, kind: str, n: int, threads: int = 1) -> dict:
    """E5V.encode in this process: the baseline (1 thread), and a 2-thread control that shows how much of a
    second core the machine actually had to give during the run."""
    import torch

    from e5v import E5V

    torch.set_num_threads(threads)
    model = E5V.from_pretrained(model_path(name), image_mode="base")
    data = rows(kind, n)
    model.encode(data[:BATCH], batch_size=BATCH)  # warm-up
    start = time.perf_counter()
    model.encode(data, batch_size=BATCH)
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "rows": n, "rss_mb": peak_rss_mb(), "worker_rss_mb": 0.0}
    if threads == 1:  # the stage's own Python path (conversion, chunking, result frame), no Spark around it
        from e5v.spark import worker

        worker._CACHE[(str(model_path(name)), None)] = model
        config = {"model": str(model_path(name)), "backend": None, "batch_size": BATCH, "normalize": True,
                  "instruction": None, "image_mode": "base", "threads": 1}
        start = time.perf_counter()
        list(worker.run_batches(iter([pd.Series(data)]), config, ("text" if kind == "text" else "image",)))
        result["python_path_seconds"] = time.perf_counter() - start
    return result


def spark_run(name: str, cores: int, kind: str, n: int, partitions: int) -> dict:
    """The stage under local[cores] on the same rows: warm-up job, then the timed job (noop sink)."""
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import pandas_udf

    from e5v.spark import E5VEmbeddings

    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (SparkSession.builder.master(f"local[{cores}]").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", str(partitions)).config("spark.driver.memory", "2g")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    data = rows(kind, n)
    schema = "id long, text string" if kind == "text" else "id long, content binary"
    df = spark.createDataFrame(list(enumerate(data)), schema).repartition(partitions).cache()  # round-robin: equal sizes
    df.count()
    column = "text" if kind == "text" else "content"
    stage = E5VEmbeddings(model=str(model_path(name)), inputCol=column, batchSize=BATCH, imageMode="base")
    warm = spark.createDataFrame(list(enumerate(data[:cores * 2])), schema).repartition(cores)
    stage.transform(warm).write.format("noop").mode("overwrite").save()  # start workers, load the model in each
    start = time.perf_counter()
    stage.transform(df).write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - start
    errors = stage.transform(df.limit(4)).where("embedding is null").count()

    @pandas_udf("double")
    def worker_peak(column: pd.Series) -> pd.Series:  # self-contained: bench/ is not importable in workers
        kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        return pd.Series([kb / 1024] * len(column))

    worker_rss = df.select(worker_peak("id").alias("mb")).agg({"mb": "max"}).collect()[0][0]
    spark.stop()
    return {"seconds": seconds, "rows": n, "rss_mb": peak_rss_mb(), "worker_rss_mb": worker_rss,
            "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--kind", choices=("text", "image"), default="text")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--model", choices=("bench", "tiny"), default="bench")
    parser.add_argument("--write", type=Path)
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        value = int(args.worker.split("=")[1])
        result = direct(args.model, args.kind, args.rows, value) if args.worker.startswith("direct") else \
            spark_run(args.model, value, args.kind, args.rows, args.partitions)
        print(json.dumps(result))
        return
    model_path(args.model)
    note = machine_note()
    extra = ("--rows", str(args.rows), "--kind", args.kind, "--partitions", str(args.partitions), "--model", args.model)
    results = {name: run_worker(__file__, name, *extra) for name in ("direct=1", "direct=2", "local=1", "local=2")}
    emit(report(results, args, note) + "\n", args.write)


def report(results: dict, args, note: str) -> str:
    base = results["direct=1"]
    one = results["local=1"]
    lines = [f"{args.rows} {args.kind} rows ({WORDS} words each), {args.model} model, batchSize {BATCH}, "
             f"{args.partitions} partitions; {note}", "",
             "| configuration | seconds | rows/s | speed-up (Spark: vs local[1]) | per-row overhead vs direct "
             "| peak RSS driver / worker (MB) |",
             "|---|---|---|---|---|---|"]
    names = {"direct=1": "E5V.encode direct, 1 thread", "direct=2": "E5V.encode direct, 2 threads (control)",
             "local=1": "Spark local[1]", "local=2": "Spark local[2]"}
    for key, r in results.items():
        rate = r["rows"] / r["seconds"]
        ratio = f"{one['seconds'] / r['seconds']:.2f}x" if key.startswith("local") else \
            f"{base['seconds'] / r['seconds']:.2f}x vs 1 thread"
        overhead = "-" if key != "local=1" else f"{(r['seconds'] - base['seconds']) / r['rows'] * 1000:+.1f} ms"
        lines.append(f"| {names[key]} | {r['seconds']:.1f} | {rate:.2f} | {ratio} | {overhead} | "
                     f"{r['rss_mb']:.0f} / {r['worker_rss_mb']:.0f} |")
    if "python_path_seconds" in base:
        r = base["python_path_seconds"]
        lines.append(f"| stage's Python path in-process (no Spark), 1 thread | {r:.1f} | {base['rows'] / r:.2f} | - | "
                     f"{(r - base['seconds']) / base['rows'] * 1000:+.2f} ms | - |")
    lines.append("")
    lines.append("Per-row overhead is measured where the comparison is like for like: local[1] (one worker, one "
                 "thread) vs the direct call (one thread); it covers Arrow transfer, conversion and task scheduling. "
                 "The 2-thread direct row is the control for scaling: the speed-up a second core gave a plain "
                 "torch call during the same run.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
