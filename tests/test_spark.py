"""E5VEmbeddings on real pyspark (local[2], Java 17) and the tiny generated model.

One SparkSession for the whole test session; embeddings are compared with ``E5V.encode`` on the same inputs.
Spark's image source decodes with Java ImageIO, so image-source rows are compared with ``encode`` on the PIL
image rebuilt from the struct's pixels, and that rebuild is separately checked against PIL decoding the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("pyspark")

from e5v.spark import E5VEmbeddings, write_parquet  # noqa: E402
from e5v.spark.decode import struct_to_image  # noqa: E402

COS = 0.9999


def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_image_source_rows_equal_encode_and_convert_like_pil(spark, stage, model, image_dir):
    df = spark.read.format("image").load(str(image_dir)).repartition(2)
    out = stage.copy({stage.inputCol: "image"}).transform(df)
    rows = {Path(r.image.origin).name: r for r in out.collect()}
    assert set(rows) == {"rgb.png", "rgb.jpg", "gray.png", "gray.jpg", "rgba.png", "corrupt.png"}
    assert rows["corrupt.png"].embedding is None and "could not decode" in rows["corrupt.png"].embedding_error
    assert rows["gray.png"].image.nChannels == 1 and rows["rgba.png"].image.nChannels == 4
    for name in ("rgb.png", "rgb.jpg", "gray.png", "gray.jpg", "rgba.png"):
        row = rows[name]
        assert row.embedding_error is None, name
        rebuilt = struct_to_image(row.image.asDict())
        assert _cos(row.embedding, model.encode([rebuilt])[0]) >= COS, name
        # The conversion itself: the struct's pixels are the file as PIL decodes it (bit-exact for PNG;
        # JPEG decoders may differ by a level or two per channel).
        decoded = np.asarray(Image.open(image_dir / name).convert(rebuilt.mode), np.int16)
        diff = np.abs(np.asarray(rebuilt, np.int16) - decoded)
        if name.endswith(".png"):
            assert diff.max() == 0, name
            assert _cos(row.embedding, model.encode([image_dir / name])[0]) >= COS, name
        else:
            assert diff.mean() < 1.5, name


def test_binary_file_rows_equal_encode(spark, stage, model, image_dir):
    df = spark.read.format("binaryFile").load(str(image_dir))
    out = stage.copy({stage.inputCol: "content"}).transform(df).collect()
    by_name = {Path(r.path).name: r for r in out}
    assert by_name["corrupt.png"].embedding is None
    assert "not a readable image" in by_name["corrupt.png"].embedding_error
    good = sorted(n for n in by_name if n != "corrupt.png")
    expected = model.encode([(image_dir / n).read_bytes() for n in good])
    for name, vector in zip(good, expected):
        assert by_name[name].embedding_error is None
        assert _cos(by_name[name].embedding, vector) >= COS, name


def test_text_rows_keep_order_across_batches_and_partitions(spark, stage, model):
    texts = [f"sentence number {i} about {'dogs' if i % 2 else 'cats'}" for i in range(14)]
    data = [(i, t) for i, t in enumerate(texts)] + [(14, None), (15, "   ")]
    df = spark.createDataFrame(data, "id long, text string").repartition(3)
    before = [r.id for r in df.collect()]
    out = stage.copy({stage.inputCol: "text", stage.instruction: "Summarize above sentence in one word: "}) \
        .transform(df).collect()
    assert [r.id for r in out] == before  # row order kept within partitions
    rows = {r.id: r for r in out}
    expected = model.encode(texts, instruction="Summarize above sentence in one word: ")
    for i, vector in enumerate(expected):
        assert _cos(rows[i].embedding, vector) >= COS
        assert abs(np.linalg.norm(rows[i].embedding) - 1) < 1e-4
    assert rows[14].embedding is None and rows[14].embedding_error is None  # null in, null out, no error
    assert rows[15].embedding is None and rows[15].embedding_error == "text is empty"
    default = model.encode(texts[:1])[0]
    assert _cos(rows[0].embedding, default) < COS  # the instruction param really changed the prompt


def test_composed_rows(spark, stage, model, image_dir):
    files = spark.read.format("binaryFile").load([str(image_dir / "rgb.png"), str(image_dir / "gray.jpg")])
    content = {Path(r.path).name: r.content for r in files.collect()}
    data = [(0, content["rgb.png"], "make it blue"), (1, content["gray.jpg"], "in colour"),
            (2, content["rgb.png"], None), (3, None, "only text"), (4, None, None)]
    df = spark.createDataFrame(data, "id int, img binary, mod string")
    rows = {r.id: r for r in stage.copy({stage.imageCol: "img", stage.textCol: "mod"}).transform(df).collect()}
    expected = model.encode([{"image": content["rgb.png"], "text": "make it blue"},
                             {"image": content["gray.jpg"], "text": "in colour"}, content["rgb.png"], "only text"])
    for i, vector in enumerate(expected):
        assert rows[i].embedding_error is None
        assert _cos(rows[i].embedding, vector) >= COS, i
    assert rows[4].embedding is None and rows[4].embedding_error is None
    assert _cos(rows[0].embedding, rows[2].embedding) < COS  # the text really took part


def test_pipeline_save_load_round_trip(spark, tiny_model_path, model, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel

    df = spark.createDataFrame([("a red car",), ("a blue boat",)], "caption string")
    stage = E5VEmbeddings(model=str(tiny_model_path), inputCol="caption", outputCol="vec", errorCol="why",
                          batchSize=2, imageMode="base", instruction="Summary above sentence in one word: ",
                          normalize=False, numThreads=1)
    fitted = Pipeline(stages=[stage]).fit(df)
    fitted.save(str(tmp_path / "pipe"))
    loaded = PipelineModel.load(str(tmp_path / "pipe"))
    again = loaded.stages[0]
    assert isinstance(again, E5VEmbeddings)
    for name in ("model", "inputCol", "outputCol", "errorCol", "batchSize", "imageMode", "instruction",
                 "normalize", "numThreads"):
        assert again.getOrDefault(name) == stage.getOrDefault(name), name
    got = [r.vec for r in loaded.transform(df).orderBy("caption").collect()]
    expected = model.encode(["a blue boat", "a red car"], normalize=False)
    for g, e in zip(got, expected):
        assert _cos(g, e) >= COS
        assert abs(np.linalg.norm(g) - np.linalg.norm(e)) < 1e-3 * np.linalg.norm(e)  # not normalised
    stage.write().overwrite().save(str(tmp_path / "stage"))
    assert E5VEmbeddings.load(str(tmp_path / "stage")).getOrDefault("outputCol") == "vec"


def test_model_loaded_once_per_python_worker(spark, stage):
    df = spark.createDataFrame([(f"text {i}",) for i in range(24)], "t string").repartition(6)
    stage.copy({stage.inputCol: "t", stage.batchSize: 2}).transform(df).write.format("noop").mode("overwrite").save()

    from pyspark.sql.functions import pandas_udf

    @pandas_udf("string")
    def probe(column: pd.Series) -> pd.Series:  # runs in the same kind of (Arrow) Python worker as the stage
        from e5v.spark.worker import load_count

        return pd.Series([f"{os.getpid()}:{load_count()}"] * len(column))

    seen = [r.p for r in df.select(probe("t").alias("p")).collect()]
    counts = {pid: int(n) for pid, n in (s.split(":") for s in seen)}
    # 6 tasks x 3 Arrow batches x 2 chunks ran on reused workers: every worker loaded the model at most once.
    assert max(counts.values()) <= 1, counts
    assert sum(counts.values()) >= 1, counts  # the probe landed on the (reused) workers that did the work


def test_write_parquet_drops_pixels(spark, stage, model, image_dir, tmp_path):
    import pyarrow.parquet as pq

    df = spark.read.format("image").load(str(image_dir / "rgb.png"))
    write_parquet(stage.copy({stage.inputCol: "image"}).transform(df), str(tmp_path / "out"))
    table = pq.read_table(str(tmp_path / "out"))
    assert table.column_names == ["image_origin", "embedding", "embedding_error"]
    assert _cos(table["embedding"][0].as_py(), model.encode([image_dir / "rgb.png"])[0]) >= COS


@pytest.mark.parametrize("params, message", [
    ({}, "set inputCol"),
    ({"inputCol": "t", "imageCol": "b"}, "not both"),
    ({"inputCol": "n"}, "has type int"),
    ({"inputCol": "missing"}, "not found"),
    ({"imageCol": "t"}, "must be binary"),
    ({"inputCol": "t", "outputCol": "b"}, "already exists"),
])
def test_bad_configuration_is_refused_on_the_driver(spark, tiny_model_path, params, message):
    df = spark.createDataFrame([("x", 1, b"\x00")], "t string, n int, b binary")
    with pytest.raises(ValueError, match=message):
        E5VEmbeddings(model=str(tiny_model_path), **params).transform(df)
    with pytest.raises(ValueError, match="needs model"):
        E5VEmbeddings(inputCol="t").transform(df)


def test_write_store_then_search_and_rerun_adds_nothing(spark, stage, model, image_dir, tmp_path):
    """Spark results go into the vector store (config from a worker), search finds them, re-runs dedupe, and
    files indexed by the CLI path with the same bytes are recognised as already present."""
    from e5v.spark import write_store
    from e5v.store import Store

    files = spark.read.format("binaryFile").load(str(image_dir))
    binary_stage = stage.copy({stage.inputCol: "content"})
    embedded = binary_stage.transform(files)
    db = tmp_path / "db"
    report = write_store(embedded, str(db), binary_stage)
    assert report.added == 5 and len(report.failed) == 1  # corrupt.png: no vector, reason kept
    assert "corrupt.png" in report.failed[0][0] and "not a readable image" in report.failed[0][1]
    store = Store.open(db, model)  # same model -> same config: accepted
    assert store.config["model"] == model.embedding_config()["model"]
    hit = store.search(image_dir / "rgb.png", k=1)[0]
    assert hit["path"] == str(image_dir / "rgb.png") and hit["score"] > 0.9999  # a filesystem path, not a URI
    again = write_store(embedded, str(db), binary_stage)
    assert again.added == 0 and again.skipped_existing == 5
    cli_style = store.add([image_dir], show_progress=False)  # the same files through `e5v index`'s path
    assert cli_style.added == 0 and cli_style.skipped_existing == 5

    texts = spark.createDataFrame([(1, "a red car", "web"), (2, None, "x")], "id long, text string, source string")
    text_stage = stage.copy({stage.inputCol: "text"})
    report = write_store(text_stage.transform(texts), str(db), text_stage, metadata_cols=["source"])
    assert report.added == 1  # the null row is nothing to store
    found = store.search("a red car", k=1, kind="text")[0]
    assert found["text"] == "a red car" and found["metadata"] == {"source": "web"}

    other = stage.copy({stage.inputCol: "text", stage.instruction: "Describe it in one word:"})
    from e5v.errors import ConfigMismatchError

    with pytest.raises(ConfigMismatchError):
        write_store(other.transform(texts), str(db), other)
    with pytest.raises(ValueError, match="normalize"):
        unnormalised = stage.copy({stage.inputCol: "text", stage.normalize: False})
        write_store(unnormalised.transform(texts), str(db), unnormalised)


def test_hostile_files_give_null_rows_with_messages_not_failed_tasks(spark, stage, model, images, tmp_path):
    """The EXIF-retagged JPEG (struct.error inside Pillow) and a cut JPEG with its end marker put back used
    to fail the task or embed grey rows; each is one null row with its reason, the good file embeds."""
    import io

    from test_image_boundary import exif_retagged_jpeg

    folder = tmp_path / "hostile"
    folder.mkdir()
    images["red square"].save(folder / "good.png")
    (folder / "exif.jpg").write_bytes(exif_retagged_jpeg())
    buf = io.BytesIO()
    images["green wide"].save(buf, format="JPEG", progressive=True)
    (folder / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2] + b"\xff\xd9")
    df = spark.read.format("binaryFile").load(str(folder))
    rows = {Path(r.path).name: r for r in stage.copy({stage.inputCol: "content"}).transform(df).collect()}
    assert rows["exif.jpg"].embedding is None and "cannot decode image" in rows["exif.jpg"].embedding_error
    assert rows["cut.jpg"].embedding is None and "incomplete or corrupt JPEG" in rows["cut.jpg"].embedding_error
    assert rows["good.png"].embedding_error is None
    assert _cos(rows["good.png"].embedding, model.encode([folder / "good.png"])[0]) >= COS


def test_a_gme_checkpoint_runs_through_the_stage_unchanged(spark, tmp_path, images):
    """A GME checkpoint (marked by its card's gme_inference.py) is picked up by the worker's model load."""
    from e5v import E5V
    from e5v.testing_qwen import make_tiny_qwen2vl

    path = make_tiny_qwen2vl(tmp_path / "gme", variant="qwen2_vl", seed=3)
    (path / "gme_inference.py").write_text("# the model card's inference script\n")
    gme = E5V.from_pretrained(path)
    assert gme.components.spec.name == "gme"
    texts = ["a red car", "a green field", "a dog"]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id long, text string")
    rows = {r.id: r for r in E5VEmbeddings(model=str(path), inputCol="text").transform(df).collect()}
    for i, vector in enumerate(gme.encode(texts)):
        assert rows[i].embedding_error is None and _cos(rows[i].embedding, vector) >= COS


@pytest.mark.parametrize("name", ["vlm2vec", "jina_v4", "qwen3_vl_embedding", "ops_mm"])
def test_the_newer_families_run_through_the_stage_unchanged(spark, tmp_path, name):
    """VLM2Vec (chosen by name), jina-embeddings-v4 (by its config; a task adapter and its passage prompt) and
    Qwen3-VL-Embedding (by its model type): the stage's family, task and prompt params reach the workers."""
    from e5v import E5V
    from e5v.testing_qwen import make_tiny_qwen2vl

    variant = {"vlm2vec": "qwen2_vl", "jina_v4": "qwen2_5_vl", "qwen3_vl_embedding": "qwen3_vl", "ops_mm": "qwen2_vl"}[name]
    path = make_tiny_qwen2vl(tmp_path / name, variant=variant, seed=9,
                             architectures=["JinaEmbeddingsV4Model"] if name == "jina_v4" else None)
    params = {"vlm2vec": {"family": "vlm2vec"}, "qwen3_vl_embedding": {}, "ops_mm": {"family": "ops_mm"}}.get(name)
    if name == "jina_v4":
        from test_family_recipes import _write_adapters

        _write_adapters(path)
        params = {"task": "code", "prompt": "passage"}
    model = E5V.from_pretrained(path, **params)
    texts = ["a red car", "a green field", "a dog"]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id long, text string")
    rows = {r.id: r for r in E5VEmbeddings(model=str(path), inputCol="text", **params).transform(df).collect()}
    for i, vector in enumerate(model.encode(texts)):
        assert rows[i].embedding_error is None and _cos(rows[i].embedding, vector) >= COS
