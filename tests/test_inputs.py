"""Bad input gets a clear error naming the item (or a documented NaN row), never a crash or wrong vector."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from e5v import InputError
from e5v.inputs import ImageLimits, load_image, to_rgb


def _png(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))


# ------------------------------------------------------------------ errors that name the item
@pytest.mark.parametrize("bad, match", [
    (b"\x89PNG\r\n\x1a\n garbage", "not a readable image"),
    (b"", "empty"),
    (b"just some text, not an image", "not a readable image"),
    ("", "text is empty"),
    ("   \n\t", "text is empty"),
    (12, "cannot embed an item of type int"),
    (None, "cannot embed an item of type NoneType"),
    ({"img": "x"}, "unknown keys"),
    ({}, "needs an 'image' and/or a 'text'"),
    ({"text": 5}, "text must be a string"),
    ("an <image> token in text", "literal '<image>'"),
])
def test_bad_items_name_their_index(model, bad, match):
    with pytest.raises(InputError, match=match) as info:
        model.encode(["fine", bad])
    assert info.value.index == 1 and str(info.value).startswith("input 1:")


def test_truncated_png_and_jpeg(model, photo):
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        photo.save(buf, format=fmt)
        with pytest.raises(InputError, match="input 0"):
            model.encode([buf.getvalue()[: len(buf.getvalue()) // 2]])


def test_files_zero_bytes_missing_and_not_images(model, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(InputError, match="0 bytes"):
        model.encode([empty])
    with pytest.raises(InputError, match="not found"):
        model.encode([tmp_path / "missing.png"])
    with pytest.raises(InputError, match="not a readable image"):
        model.encode([text])


def test_decompression_bomb_is_refused_before_decoding(model):
    bomb = _png(Image.new("1", (20_000, 20_000)))  # 400 Mpx in a few kB
    assert len(bomb) < 200_000
    with pytest.raises(InputError, match="decompression bomb"):
        model.encode([bomb])


def test_max_pixels_is_configurable(photo):
    with pytest.raises(InputError, match="over the limit"):
        load_image(photo, 0, ImageLimits(max_pixels=1000))


def test_extreme_aspect_ratio_is_refused(model):
    with pytest.raises(InputError, match="aspect ratio"):
        model.encode([Image.new("RGB", (5000, 2))])


def test_tiny_and_thin_images_embed(model):
    vectors = model.encode([Image.new("RGB", (1, 1), "red"), Image.new("RGB", (2, 300), "blue")])
    assert np.isfinite(vectors).all()


# ------------------------------------------------------------------ conversions, checked against the reference
def test_animated_gif_and_webp_use_the_first_frame(model, reference):
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue")]
    for fmt in ("GIF", "WEBP"):
        buf = io.BytesIO()
        frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
        first = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        vec = model.encode([buf.getvalue()])[0]
        assert _cos(vec, reference.embed(image=first)) >= 0.9999, fmt


def test_cmyk_palette_alpha_and_la_are_converted_like_transformers(model, reference, photo):
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    for image in (photo.convert("CMYK"), palette, rgba, photo.convert("LA"), photo.convert("L")):
        vec = model.encode([image])[0]
        # the reference processor composites transparency onto white, exactly like to_rgb
        assert _cos(vec, reference.embed(image=image)) >= 0.9999, image.mode


def test_alpha_is_composited_on_white():
    transparent = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_images_are_scaled_not_clipped(model, reference):
    grad = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    image16 = Image.fromarray(grad)
    assert image16.mode.startswith("I;16")
    converted = to_rgb(image16)
    as8 = Image.fromarray((grad / 65535 * 255 + 0.5).astype(np.uint8)).convert("RGB")
    assert np.abs(np.asarray(converted, dtype=int) - np.asarray(as8, dtype=int)).max() <= 1
    vec = model.encode([_png(image16)])[0]
    assert _cos(vec, reference.embed(image=as8)) >= 0.9999


def test_exif_orientation_is_applied(model, photo):
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    photo.save(buf, format="JPEG", exif=exif, quality=95)
    upright = Image.open(io.BytesIO(buf.getvalue()))
    from PIL import ImageOps

    upright = ImageOps.exif_transpose(upright).convert("RGB")
    assert upright.size == (photo.height, photo.width)
    vec = model.encode([buf.getvalue()])[0]
    assert _cos(vec, model.encode([upright])[0]) >= 0.9999


def test_path_bytes_and_pil_give_the_same_vector(model, photo, tmp_path):
    path = tmp_path / "p.png"
    photo.save(path)
    vectors = model.encode([photo, path, path.read_bytes(), str(path.resolve())], batch_size=4)
    assert _cos(vectors[0], vectors[1]) >= 0.9999 and _cos(vectors[0], vectors[2]) >= 0.9999
    # a plain str is text, never silently read as a file
    assert _cos(vectors[0], vectors[3]) < 0.99


def test_encode_image_reads_str_as_path(model, photo, tmp_path):
    path = tmp_path / "q.png"
    photo.save(path)
    assert _cos(model.encode_image([str(path)])[0], model.encode([photo])[0]) >= 0.9999
    with pytest.raises(InputError, match="input 0"):
        model.encode_text([photo])


# ------------------------------------------------------------------ overlong text and skipping
def test_overlong_text_is_truncated_with_a_warning(model, monkeypatch):
    monkeypatch.setattr(type(model.components), "max_length", property(lambda self: 48))
    long_text = " ".join(["word"] * 200)
    with pytest.warns(UserWarning, match="input 0: text is .* truncated"):
        vec = model.encode([long_text])[0]
    assert np.isfinite(vec).all()
    # truncation keeps the template: the vector equals a text cut to fit, embedded normally
    kept = model.encode_with_details([long_text]).token_counts[0]
    assert kept <= 48


def test_image_that_cannot_fit_is_an_error(model, monkeypatch, photo):
    monkeypatch.setattr(type(model.components), "max_length", property(lambda self: 100))
    with pytest.raises(InputError, match="more than the model's limit"):
        model.encode([photo])


def test_on_error_skip_gives_nan_rows_and_a_warning(model):
    good = model.encode(["a dog", "a cat"])
    with pytest.warns(UserWarning, match="1 input"):
        vectors = model.encode(["a dog", b"broken", "a cat"], on_error="skip")
    assert np.isnan(vectors[1]).all()
    assert np.allclose(vectors[[0, 2]], good, atol=1e-5)
    details = model.encode_with_details(["a dog", b"broken"])
    assert list(details.errors) == [1] and "not a readable image" in details.errors[1]
    assert details.token_counts[0] > 0 and 1 not in details.token_counts


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="on_error"):
        model.encode(["a"], on_error="ignore")
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(["a"], batch_size=0)
    with pytest.raises(ValueError, match="image_mode"):
        model.encode(["a"], image_mode="tiles")
    with pytest.raises(InputError, match="list of inputs"):
        model.encode(5)


def test_empty_list_gives_empty_array(model):
    out = model.encode([])
    assert out.shape == (0, model.embedding_dim) and out.dtype == np.float32
