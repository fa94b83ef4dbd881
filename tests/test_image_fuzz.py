"""Seeded mutation fuzzing of the image decode boundary: only InputError may escape, memory stays bounded.

Each seed image (JPEG baseline/progressive, PNG, APNG, WebP lossy/lossless, GIF, TIFF, with and without
EXIF) is mutated by flipping bytes, overwriting runs, cutting, duplicating and inserting. Every mutant goes
through ``probe`` + ``decode`` (what ``E5V.encode`` does) and must give an 8-bit RGB image or InputError.
"""

from __future__ import annotations

import io
import random
import resource
import struct
import warnings

import numpy as np
import pytest
from PIL import Image, TiffTags

from e5v import InputError
from e5v.imagefile import ImageLimits, load_image

N_MUTANTS = 2000
#: small budget so a mutant that claims a big canvas is refused quickly (the limit is part of what's tested)
LIMITS = ImageLimits(max_pixels=2_000_000)


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    exif[0x010F] = "e5v-camera"  # Make
    exif[0x0131] = "fuzz"  # Software
    return exif


def seeds() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    out = []

    def save(name: str, image: Image.Image, fmt: str, **kw) -> None:
        buf = io.BytesIO()
        image.save(buf, format=fmt, **kw)
        out.append((name, buf.getvalue()))

    for exif in (None, _exif()):
        tag = "-exif" if exif is not None else ""
        extra = {"exif": exif} if exif is not None else {}
        save("jpeg" + tag, photo, "JPEG", quality=85, **extra)
        save("jpeg-progressive" + tag, photo, "JPEG", progressive=True, **extra)
        save("png" + tag, photo.convert("RGBA"), "PNG", **extra)
        save("webp" + tag, photo, "WEBP", quality=80, **extra)
        save("webp-lossless" + tag, photo, "WEBP", lossless=True, **extra)
        save("tiff" + tag, photo, "TIFF", compression="tiff_deflate", **extra)
    frames = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    save("gif-animated", frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)
    save("apng", frames[0], "PNG", save_all=True, append_images=frames[1:], duration=40)
    save("png-palette", photo.convert("P"), "PNG", transparency=0)
    save("tiff-16bit", Image.fromarray(rng.integers(0, 65535, (24, 32), dtype=np.uint16)), "TIFF")
    save("bmp", photo, "BMP")
    return out


#: TIFF/EXIF tag ids (each with its own expected type): re-tagging an entry is how real files break parsers
TAG_IDS = sorted(TiffTags.TAGS_V2)


def _exif_offsets(data: bytes) -> list[int]:
    """Where TIFF/EXIF structures start (byte-order marks), to aim structural mutations at them."""
    return [i for mark in (b"II*\x00", b"MM\x00*") for i in range(len(data)) if data.startswith(mark, i)]


def mutate(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    exif_at = _exif_offsets(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(10)
        at = rnd.randrange(len(b)) if b else 0
        if op >= 6 and exif_at:  # an IFD field near a TIFF header: a tag id, a type or a count
            start = rnd.choice(exif_at)
            at = min(len(b) - 2, start + 8 + 2 * rnd.randrange(0, 60))
            fmt = "<H" if b[start:start + 2] == b"II" else ">H"
            value = rnd.choice(TAG_IDS) if op % 2 == 0 else rnd.randrange(0, 20)
            b[at:at + 2] = struct.pack(fmt, value)
        elif op == 0:  # flip bits of one byte
            b[at] ^= 1 << rnd.randrange(8)
        elif op == 1:  # overwrite a run with random bytes
            n = rnd.randint(1, 16)
            b[at:at + n] = bytes(rnd.randrange(256) for _ in range(n))
        elif op == 2:  # cut
            del b[at:]
        elif op == 3:  # duplicate a run
            n = rnd.randint(1, 64)
            b[at:at] = b[at:at + n]
        elif op == 4:  # interesting values (sizes, lengths, tag ids)
            b[at:at + 2] = rnd.choice([b"\xff\xff", b"\x00\x00", b"\x7f\xff", b"\x01\x53", b"\xff\xd9"])
        else:  # drop a run
            n = rnd.randint(1, 32)
            del b[at:at + n]
        if len(b) < 8:
            break
    return bytes(b)


@pytest.mark.slow
def test_mutants_raise_only_input_error():
    rnd = random.Random(1234)
    base = seeds()
    outcomes = {"decoded": 0, "refused": 0}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for n in range(N_MUTANTS):
        name, data = base[n % len(base)]
        mutant = mutate(data, rnd)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF; warnings are not failures
                image = load_image(mutant, n, LIMITS)
        except InputError as exc:
            assert exc.index == n and str(exc).startswith(f"input {n}:")
            outcomes["refused"] += 1
            continue
        except Exception as exc:  # pragma: no cover - the failure this test exists to catch
            pytest.fail(f"mutant {n} of {name} escaped as {type(exc).__name__}: {exc}")
        assert image.mode == "RGB" and image.width * image.height <= LIMITS.max_pixels
        outcomes["decoded"] += 1
    # both outcomes must occur, or the mutator is not exercising the decoders
    assert outcomes["decoded"] > 100 and outcomes["refused"] > 500, outcomes
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 512, f"decoding mutants raised peak RSS by {grown_mb:.0f} MB"


def test_every_seed_decodes():
    for name, data in seeds():
        assert load_image(data, 0, LIMITS).mode == "RGB", name
