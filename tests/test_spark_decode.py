"""Spark value conversion and the worker's batch logic, without a JVM (fast; the Spark runs are in test_spark.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pyspark")

from e5v.errors import InputError  # noqa: E402
from e5v.spark.decode import SKIP, image_value, row_input, struct_to_image, text_value  # noqa: E402
from e5v.spark.worker import cached_model, convert_batch, embed_rows, load_count  # noqa: E402


def _struct(pixels: np.ndarray, mode: int, origin: str = "mem://x") -> dict:
    h, w = pixels.shape[:2]
    c = 1 if pixels.ndim == 2 else pixels.shape[2]
    return {"origin": origin, "height": h, "width": w, "nChannels": c, "mode": mode, "data": pixels.tobytes()}


def test_bgr_struct_becomes_rgb():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = struct_to_image(_struct(rgb[:, :, ::-1].copy(), 16))  # OpenCV stores BGR
    assert image.mode == "RGB" and image.size == (7, 5)
    assert np.array_equal(np.asarray(image), rgb)


def test_bgra_struct_becomes_rgba_and_gray_stays_gray():
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    image = struct_to_image(_struct(rgba[:, :, [2, 1, 0, 3]].copy(), 24))
    assert image.mode == "RGBA" and np.array_equal(np.asarray(image), rgba)
    gray = rng.integers(0, 256, (3, 9), dtype=np.uint8)
    image = struct_to_image(_struct(gray, 0))
    assert image.mode == "L" and np.array_equal(np.asarray(image), gray)


@pytest.mark.parametrize("change, message", [
    ({"height": -1, "width": -1, "nChannels": -1, "mode": -1, "data": b""}, "could not decode"),
    ({"data": b"\x00" * 10}, "bytes of pixel data"),
    ({"mode": 0}, "does not match nChannels"),
    ({"nChannels": 2, "mode": 8, "data": b"\x00" * 12}, "unsupported nChannels"),
])
def test_bad_structs_name_the_image(change, message):
    row = {**_struct(np.zeros((2, 3, 3), np.uint8), 16, origin="file:/data/a.png"), **change}
    with pytest.raises(InputError, match=message) as info:
        struct_to_image(row)
    assert "file:/data/a.png" in str(info.value)


def test_nulls_skip_and_composition():
    assert image_value(None) is SKIP and text_value(None) is SKIP and text_value(float("nan")) is SKIP
    assert image_value({k: None for k in ("origin", "height", "width", "nChannels", "mode", "data")}) is SKIP
    assert image_value(bytearray(b"abc")) == b"abc"
    with pytest.raises(InputError, match="text must be a string"):
        text_value(3)
    with pytest.raises(InputError, match="cannot read an image"):
        image_value(12)
    assert row_input("img", "txt") == {"image": "img", "text": "txt"}
    assert row_input("img", SKIP) == "img" and row_input(SKIP, "txt") == "txt"
    assert row_input(SKIP, SKIP) is SKIP


def test_embed_rows_keeps_order_nulls_and_errors(tiny_model_path, model):
    import pandas as pd

    image = Image.new("RGB", (40, 30), (10, 200, 30))
    struct = _struct(np.asarray(image)[:, :, ::-1].copy(), 16)
    texts = pd.Series(["a dog", None, "", "a cat", "x"])
    images = pd.DataFrame([struct, {k: None for k in struct}, struct, struct, {**struct, "data": b"\x01"}])
    rows = convert_batch((images, texts), ("image", "text"))
    assert rows[1] is SKIP and isinstance(rows[4], InputError)
    config = {"model": str(tiny_model_path), "backend": None, "batch_size": 2, "normalize": True,
              "instruction": None, "image_mode": "anyres", "threads": 1}
    out = embed_rows(model, rows, config)
    assert list(out["error"].isna()) == [True, True, False, True, False]
    assert "text is empty" in out["error"][2] and "bytes of pixel data" in out["error"][4]
    expected = model.encode([{"image": image, "text": "a dog"}, {"image": image, "text": "a cat"}])
    got = np.stack([out["embedding"][0], out["embedding"][3]])
    assert (np.sum(got * expected, axis=1) >= 0.9999).all()
    assert out["embedding"][1] is None and out["embedding"][2] is None


def test_model_cache_loads_once_per_process(tiny_model_path):
    config = {"model": str(tiny_model_path), "backend": None}
    before = load_count()
    first = cached_model(config)
    assert cached_model(dict(config)) is first
    assert load_count() - before <= 1  # 0 when an earlier test in this process already loaded it
