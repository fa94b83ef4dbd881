"""The Spark stage writing into a PostgreSQL store from its executors: same rows as the driver path, reruns
and retried tasks store nothing twice, and a SIGKILLed job rerun leaves every row exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("pyspark")
pytest.importorskip("psycopg")

from e5v.errors import StoreError  # noqa: E402
from e5v.store import Store  # noqa: E402


def test_executors_write_partitions_directly_and_reruns_add_nothing(spark, stage, model, image_dir, pg_db):
    from e5v.spark import write_store

    files = spark.read.format("binaryFile").load(str(image_dir)).repartition(3)
    binary_stage = stage.copy({stage.inputCol: "content"})
    embedded = binary_stage.transform(files)
    report = write_store(embedded, pg_db, binary_stage)
    assert report.added == 5 and len(report.failed) == 1 and report.total_rows == 5
    assert "corrupt.png" in report.failed[0][0] and "not a readable image" in report.failed[0][1]
    store = Store.open(pg_db, model)  # the executors recorded the model's config
    hit = store.search(image_dir / "rgb.png", k=1)[0]
    assert hit["path"] == str(image_dir / "rgb.png") and hit["score"] > 0.9999
    again = write_store(embedded, pg_db, binary_stage)
    assert (again.added, again.skipped_existing) == (0, 5)
    assert store.add([image_dir], show_progress=False).skipped_existing == 5  # same hashes as `e5v index`

    texts = spark.createDataFrame([(i, f"caption {i}", "web" if i % 2 else "scan") for i in range(40)] + [(99, None, "x")],
                                  "id long, text string, source string").repartition(4)
    text_stage = stage.copy({stage.inputCol: "text"})
    report = write_store(text_stage.transform(texts), pg_db, text_stage, metadata_cols=["source"])
    assert report.added == 40 and report.failed == []
    found = store.search("caption 7", k=1, filter={"source": "web"})[0]
    assert found["text"] == "caption 7" and found["metadata"] == {"source": "web"}
    other = stage.copy({stage.inputCol: "text", stage.instruction: "Describe it in one word:"})
    from e5v.errors import ConfigMismatchError

    with pytest.raises(ConfigMismatchError):
        write_store(other.transform(texts), pg_db, other)


JOB = textwrap.dedent("""
    import os, sys
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession
    from e5v.spark import E5VEmbeddings, write_store
    model, db, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.sql.execution.arrow.maxRecordsPerBatch", "4").getOrCreate())
    df = spark.createDataFrame([(i, f"row {i} of the job") for i in range(n)], "id long, text string").repartition(6)
    stage = E5VEmbeddings(model=model, inputCol="text", batchSize=2)
    report = write_store(stage.transform(df), db, stage, commit_every=4)
    print("REPORT", report.added, report.skipped_existing, len(report.failed), flush=True)
""")


def _rows(db: str) -> int:
    try:
        with Store.open(db) as store:
            return len(store)
    except StoreError:
        return 0


@pytest.mark.slow
def test_a_killed_spark_job_rerun_stores_every_row_once(tiny_model_path, pg_db, tmp_path):
    n = 600
    script = tmp_path / "job.py"
    script.write_text(JOB)
    cmd = [sys.executable, str(script), str(tiny_model_path), pg_db, str(n)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while _rows(pg_db) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its JVM and the Python workers
    proc.wait()
    # a Python worker still holding rows it read from the dead JVM commits them, then meets end of input
    # and exits (as executors outlive a lost driver): wait until nothing changes any more
    killed_at, still = _rows(pg_db), 0
    while still < 3:
        time.sleep(1)
        now = _rows(pg_db)
        still, killed_at = (still + 1, now) if now == killed_at else (0, now)
    assert 8 <= killed_at < n, f"the job must be killed mid-way for this test to mean anything ({killed_at})"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    added, skipped, failed = map(int, done.stdout.split("REPORT", 1)[1].split())
    assert failed == 0 and added + skipped == n and added == n - killed_at
    with Store.open(pg_db) as store:
        texts = [h["text"] for h in store.search([1.0] * 64, k=2 * n, exact=True)]
    assert sorted(texts) == sorted(f"row {i} of the job" for i in range(n))
