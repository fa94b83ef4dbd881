"""Rendered caption images (image-image protocol): deterministic bytes, paper geometry, word wrap."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np

from e5v.eval.render import FONT_PATH, RenderSpec, render_text, wrap, _font

CAPTION = "A man riding a wave on top of a surfboard, with spray flying everywhere in the late sun."
HASH_SNIPPET = (
    "import hashlib; from e5v.eval.render import render_text; "
    f"print(hashlib.sha256(render_text({CAPTION!r}).tobytes()).hexdigest())"
)


def _ink_rows(image) -> np.ndarray:
    pixels = np.asarray(image.convert("L"))
    return np.flatnonzero((pixels < 128).any(axis=1))


def test_same_bytes_in_separate_processes():
    hashes = [subprocess.run([sys.executable, "-c", HASH_SNIPPET], capture_output=True, text=True, check=True)
              .stdout.strip() for _ in range(2)]
    here = hashlib.sha256(render_text(CAPTION).tobytes()).hexdigest()
    assert len(hashes[0]) == 64
    assert hashes[0] == hashes[1] == here


def test_geometry_and_colours():
    image = render_text(CAPTION)
    assert image.size == (800, 400) and image.mode == "RGB"
    pixels = np.asarray(image)
    assert set(np.unique(pixels[..., 0])) >= {0, 255}  # black ink on white
    assert (pixels[:5] == 255).all() and (pixels[-5:] == 255).all()  # centred block: blank top/bottom
    assert (pixels[:, :15] == 255).all()  # left margin of 20 px (glyph side bearings may add)
    assert FONT_PATH.is_file() and (FONT_PATH.parent / "DejaVuSans-LICENSE.txt").is_file()


def test_long_captions_wrap_onto_more_lines_within_the_width():
    font = _font(40)
    lines = wrap(CAPTION, font, 760)
    assert len(lines) >= 2 and " ".join(lines) == " ".join(CAPTION.split())
    assert all(font.getlength(line) <= 760 for line in lines)
    short, long = _ink_rows(render_text("a dog")), _ink_rows(render_text(CAPTION))
    assert long[-1] - long[0] > 2 * (short[-1] - short[0])
    # a word wider than a line gets its own line instead of hanging
    assert wrap("x" * 80 + " y", font, 760) == ["x" * 80, "y"]


def test_font_size_is_about_forty_pixels():
    rows = _ink_rows(render_text("Hxg"))
    assert 35 <= rows[-1] - rows[0] + 1 <= 45  # cap height + descender of a 40 px em
    bigger = _ink_rows(render_text("Hxg", RenderSpec(font_size=80)))
    assert bigger[-1] - bigger[0] > 1.8 * (rows[-1] - rows[0])


def test_different_text_different_pixels():
    assert render_text("a red car").tobytes() != render_text("a red cat").tobytes()
