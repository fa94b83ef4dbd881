"""Spark ``write_store`` into the two stores, side by side: LanceDB (rows stream through the driver, one
writer) vs PostgreSQL (each executor writes its partitions over its own connection).

The DataFrame is embedded once and cached, so the timings are the writers' alone; then a rerun of each (every
row already stored) is timed too. Model: the tiny generated model (64-d vectors), so the figures are about
rows and round trips, not about moving E5-V's 16 KB vectors (``bench/store.py`` measures those inserts).

Usage:  .venv/bin/python bench/spark_store.py [--rows 10000] [--partitions 8] [--out bench/results/spark.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine_note  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--commit-every", type=int, default=1024)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    note = machine_note()
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    from e5v.spark import E5VEmbeddings, write_store
    from e5v.store import Store
    from e5v.testing import make_tiny_model
    from e5v.testing_pg import local_postgres

    work = Path(tempfile.mkdtemp(prefix="e5v-spark-store-"))
    model = make_tiny_model(work / "model")
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "2g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    df = spark.createDataFrame([(i, f"passage {i} about topic {i % 97} and more words") for i in range(args.rows)],
                               "id long, text string").repartition(args.partitions)
    stage = E5VEmbeddings(model=str(model), inputCol="text", batchSize=32)
    t = time.perf_counter()
    embedded = stage.transform(df).cache()
    embedded.count()
    embed_s = time.perf_counter() - t
    results = {}
    with local_postgres() as url:
        for name, db in (("LanceDB (through the driver)", str(work / "lance")),
                         ("PostgreSQL (from the executors)", f"{url}#spark_bench")):
            times = []
            for _ in range(2):  # first write, then a rerun where every row is already stored
                t = time.perf_counter()
                report = write_store(embedded, db, stage, commit_every=args.commit_every)
                times.append(time.perf_counter() - t)
                print(name, report, flush=True)
            with Store.open(db) as store:
                assert len(store) == args.rows, (name, len(store))
            results[name] = times
    spark.stop()
    lance, pg = results.values()
    lines = [f"### Spark `write_store`: {args.rows:,} rows, local[2], {args.partitions} partitions",
             "", f"Command: `.venv/bin/python bench/spark_store.py --rows {args.rows} --partitions {args.partitions}`; "
             f"{note}. Embedded once and cached ({embed_s:.1f} s, tiny model, 64-d vectors).", "",
             "| store | write s | rows/s | rerun (all present) s | vs LanceDB |", "|---|---|---|---|---|"]
    for name, (first, rerun) in results.items():
        lines.append(f"| {name} | {first:.1f} | {args.rows / first:,.0f} | {rerun:.1f} | {lance[0] / first:.2f}x |")
    emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
