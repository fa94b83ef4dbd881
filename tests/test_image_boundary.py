"""The decode boundary (e5v/imagefile.py) and per-batch decoding in ``encode``: hostile files are bad items."""

from __future__ import annotations

import gc
import io
import struct
import weakref

import numpy as np
import pytest
from PIL import Image

from e5v import E5V, InputError
from e5v.imagefile import ImageLimits, ImageSource, load_image, probe


def _save(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def noise():
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))


def exif_retagged_jpeg() -> bytes:
    """The issue's file: 24x16 JPEG, EXIF Orientation 6, the Make tag's id changed to 0x0153 (SampleFormat)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Canon"
    data = _save(Image.new("RGB", (24, 16), "red"), "JPEG", exif=exif)
    tiff = data.find(b"MM\x00*")
    fmt = ">H"
    if tiff < 0:
        tiff, fmt = data.find(b"II*\x00"), "<H"
    at = data.find(struct.pack(fmt, 0x010F), tiff)
    return data[:at] + struct.pack(fmt, 0x0153) + data[at + 2:]


# ------------------------------------------------------------------ every decoder failure is an InputError
def test_exif_struct_error_is_an_input_error_naming_the_item(model):
    with pytest.raises(InputError, match="input 1: cannot decode image .*error") as info:
        model.encode(["fine", exif_retagged_jpeg()])
    assert info.value.index == 1


def test_encode_with_details_records_a_decode_failure_and_embeds_the_rest(model, noise):
    good = _save(noise, "PNG")
    details = model.encode_with_details([good, exif_retagged_jpeg(), "a dog", good], batch_size=8)
    assert list(details.errors) == [1] and "cannot decode image" in details.errors[1]
    assert np.isfinite(details.vectors[[0, 2, 3]]).all() and np.isnan(details.vectors[1]).all()
    assert 1 not in details.token_counts
    np.testing.assert_allclose(details.vectors[0], model.encode([good])[0], atol=1e-5)


# ------------------------------------------------------------------ format allowlist
def test_formats_outside_the_allowlist_are_refused_from_the_header(model, noise):
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    small = noise.resize((16, 16))
    for data, fmt in ((eps, "EPS"), (_save(small, "SGI"), "SGI"), (_save(small, "PPM"), "PPM"),
                      (_save(small, "ICO"), "ICO"), (_save(small, "DDS"), "DDS")):
        with pytest.raises(InputError, match=f"input 0: image format {fmt} is not allowed"):
            model.encode([data])
    # IM has no header test Pillow could run without its decoder: refused as unrecognised
    with pytest.raises(InputError, match="input 0: not a readable image .* no allowed format"):
        model.encode([_save(small, "IM")])


def test_the_allowlist_is_configurable(noise):
    ppm = _save(noise.resize((16, 16)), "PPM")
    assert load_image(ppm, 0, ImageLimits(formats=("PPM",))).size == (16, 16)
    with pytest.raises(InputError, match="PNG is not allowed"):
        load_image(_save(noise, "PNG"), 0, ImageLimits(formats=("JPEG",)))
    with pytest.raises(ValueError, match="unknown image formats"):
        ImageLimits(formats=("NOPE",))


def test_from_pretrained_and_cli_take_image_formats(tiny_model_path, noise):
    m = E5V.from_pretrained(tiny_model_path, image_formats=["png"])
    assert m.image_limits.formats == ("PNG",)
    with pytest.raises(InputError, match="JPEG is not allowed"):
        m.encode([_save(noise, "JPEG")])


def test_mpo_counts_as_jpeg(noise):
    mpo = _save(noise, "MPO", save_all=True, append_images=[noise.rotate(90)])
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    assert load_image(mpo, 0).size == noise.size


# ------------------------------------------------------------------ no silent wrong vector from a truncated file
@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.9])
def test_truncated_jpeg_with_its_end_marker_restored_is_refused(model, noise, progressive, fraction):
    data = _save(noise, "JPEG", progressive=progressive, quality=90)
    cut = data[: int(len(data) * fraction)] + b"\xff\xd9"
    decoded = Image.open(io.BytesIO(cut)).convert("RGB")  # Pillow alone decodes it without a word
    wrong = (np.abs(np.asarray(decoded, int) - np.asarray(Image.open(io.BytesIO(data)), int)).max(axis=(1, 2)) > 40)
    assert wrong.sum() > 0
    with pytest.raises(InputError, match="input 0: incomplete or corrupt JPEG data"):
        model.encode([cut])


def test_complete_jpegs_of_every_kind_pass_the_check(noise):
    for kw in ({}, {"progressive": True}, {"subsampling": 0}, {"quality": 10}):
        assert load_image(_save(noise, "JPEG", **kw), 0).size == noise.size
    assert load_image(_save(noise.convert("L"), "JPEG"), 0).mode == "RGB"
    assert load_image(_save(noise.convert("CMYK"), "JPEG"), 0).mode == "RGB"


# ------------------------------------------------------------------ bounded memory: probe, then decode per batch
def test_probe_reads_the_header_only(noise, tmp_path):
    path = tmp_path / "big.webp"
    Image.new("RGB", (5000, 5000), "white").save(path, format="WEBP", lossless=True)
    assert path.stat().st_size < 20_000  # a tiny file that claims a big canvas
    source = probe(path, 0)
    assert isinstance(source, ImageSource) and source.size == (5000, 5000) and source.format == "WEBP"
    assert isinstance(source.source, type(path))  # the path, not its pixels, is held
    with pytest.raises(InputError, match="over the limit of 1,000,000"):
        probe(path, 0, ImageLimits(max_pixels=1_000_000))


def test_probe_reports_the_upright_size_from_exif():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _save(Image.new("RGB", (60, 20)), "JPEG", exif=exif)
    assert probe(data).size == (20, 60) == load_image(data).size


def test_encode_holds_one_batch_of_decoded_images(model, noise, monkeypatch):
    """Decoded images of a finished batch are garbage before the next batch is decoded."""
    sizes = [(64 + 8 * i, 64) for i in range(6)]  # distinct lengths: 6 batches of one
    files = [_save(noise.resize(size), "PNG") for size in sizes]
    alive: list[weakref.ref] = []
    peak = 0
    decode = ImageSource.decode

    def tracking_decode(self, index=None, **kwargs):
        nonlocal peak
        gc.collect()
        image = decode(self, index, **kwargs)
        alive.append(weakref.ref(image))
        peak = max(peak, sum(ref() is not None for ref in alive))
        return image

    monkeypatch.setattr(ImageSource, "decode", tracking_decode)
    vectors = model.encode(files, batch_size=1)
    assert len(alive) == 6 and peak == 1
    assert np.isfinite(vectors).all()


def test_one_item_the_model_cannot_take_does_not_sink_its_batch(model, noise, monkeypatch):
    processor = model.components.image_processor
    original = type(processor).__call__

    def picky(self, images, *args, **kwargs):
        if any(im.size == (33, 33) for im in images):
            raise TypeError("this processor cannot take 33x33")
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(type(processor), "__call__", picky)
    items = [noise.resize((64, 64)), noise.resize((33, 33)), noise.resize((64, 64)), "a text"]
    details = model.encode_with_details(items, batch_size=8)
    assert list(details.errors) == [1] and "TypeError: this processor cannot take 33x33" in details.errors[1]
    assert np.isfinite(details.vectors[[0, 2, 3]]).all()
    with pytest.raises(InputError, match="input 1: the model failed on this item"):
        model.encode(items, batch_size=8)


def test_a_broken_backend_raises_instead_of_nan_rows(model, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("backend is broken")

    monkeypatch.setattr(model.backend, "hidden_states", broken)
    with pytest.raises(RuntimeError, match="backend is broken"):
        model.encode_with_details(["a", "bb", "ccc"], batch_size=8)
