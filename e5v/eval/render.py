"""Render a caption as an image (black text on white, word-wrapped) for the image-image protocol.

The paper turns every caption of COCO / Flickr30K into an 800x400 picture of its text (~40 px font)
and retrieves real images with it. To make those pictures the same bytes on every machine we use a
bundled font (DejaVu Sans 2.37, ``e5v/assets/``, Bitstream Vera licence) and Pillow's BASIC layout
engine (libraqm is optional and not installed everywhere). What remains is the FreeType build inside
the Pillow wheel, so ``RENDER_VERSION`` records the Pillow version and the font's hash; the cache key
of rendered inputs includes it.

Layout follows the E5-V code: greedy word wrap to ``width - 2 * margin``, lines left-aligned at
``margin`` and the block centred vertically; text that does not fit is clipped at the bottom (as in
the original). A single word wider than a line gets a line of its own instead of looping forever.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT_PATH = Path(__file__).resolve().parent.parent / "assets" / "DejaVuSans.ttf"


@dataclass(frozen=True)
class RenderSpec:
    """How captions are drawn; every field is part of the cache key."""

    width: int = 800  # image width in pixels (paper: 800)
    height: int = 400  # image height in pixels (paper: 400)
    font_size: int = 40  # pixels per em (paper: 40)
    margin: int = 20  # left/right padding in pixels (E5-V code: 20)


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    if not FONT_PATH.is_file():
        raise FileNotFoundError(f"bundled font missing: {FONT_PATH} (reinstall e5v)")
    return ImageFont.truetype(str(FONT_PATH), size, layout_engine=ImageFont.Layout.BASIC)


@functools.lru_cache(maxsize=1)
def render_version() -> str:
    """Identifies everything that could change the pixels: Pillow (and its FreeType) and the font file."""
    import PIL

    font_hash = hashlib.sha256(FONT_PATH.read_bytes()).hexdigest()[:16]
    return f"pillow-{PIL.__version__}/font-{font_hash}"


def wrap(text: str, font: ImageFont.FreeTypeFont, max_width: int) -> list[str]:
    """Greedy word wrap: as many words per line as fit in ``max_width`` pixels."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if current and font.getlength(candidate) > max_width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def render_text(text: str, spec: RenderSpec = RenderSpec()) -> Image.Image:
    """An RGB ``spec.width x spec.height`` image of ``text`` in black on white."""
    font = _font(spec.font_size)
    image = Image.new("RGB", (spec.width, spec.height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    lines = wrap(text, font, spec.width - 2 * spec.margin)
    ascent, descent = font.getmetrics()
    line_height = ascent + descent
    y = (spec.height - line_height * len(lines)) // 2
    y = max(y, 0)  # overlong text starts at the top and is clipped at the bottom
    for line in lines:
        draw.text((spec.margin, y), line, font=font, fill=(0, 0, 0))
        y += line_height
    return image
