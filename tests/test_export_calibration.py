"""Data-aware int4 (`e5v export --weights int4 --calibration`): the recorded inputs are the encoder's own,
GPTQ with them beats plain int4, and bad calibration requests fail before anything is loaded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from e5v import E5V  # noqa: E402
from e5v.cli import cli  # noqa: E402
from e5v.export import export_openvino  # noqa: E402
from e5v.export.calibration import (CALIBRATION_TEXTS, read_calibration_file,  # noqa: E402
                                    record_language_inputs)


def _quiet(msg: str) -> None:
    pass


def _items(images) -> list:
    """Held out: none of these is in the built-in calibration set."""
    return ["a puppy", "two people ride bicycles down a busy street while a red car is parked near the house",
            "snow", *images.values(), {"image": images["green wide"], "text": "make it red"}]


def test_recorded_inputs_are_what_the_encoder_feeds_the_language_model(model, tiny_model_path, images):
    """Running the torch language model on the recorded inputs gives E5V.encode's vectors (as a set: the
    encoder orders work by length)."""
    items = _items(images)
    recorded = record_language_inputs(model.backend.model, tiny_model_path, items)
    assert len(recorded) == len(items)  # one item per batch: no padding rows in the statistics
    assert all(row["attention_mask"].all() for row in recorded)
    expected = model.encode(items, batch_size=1)
    got = []
    for row in recorded:
        hidden = model.backend.hidden_states(torch.from_numpy(row["inputs_embeds"]),
                                             torch.from_numpy(row["attention_mask"]),
                                             torch.from_numpy(row["position_ids"]))
        last = hidden[0, -1].float().numpy()
        got.append(last / np.linalg.norm(last))
    cos = np.stack(got) @ expected.T  # (recorded, items)
    assert (cos.max(1) >= 0.99999).all() and (cos.max(0) >= 0.99999).all()


def test_gptq_beats_plain_int4(model, tiny_model_path, images, tmp_path):
    items = _items(images)
    assert not set(CALIBRATION_TEXTS) & {i for i in items if isinstance(i, str)}
    expected = model.encode(items, batch_size=4)
    plain = export_openvino(str(tiny_model_path), tmp_path / "plain", weights="int4", log=_quiet)
    gptq = export_openvino(str(tiny_model_path), tmp_path / "gptq", weights="int4", calibration="builtin",
                           log=_quiet)
    cos_plain = (E5V.from_pretrained(plain).encode(items, batch_size=4) * expected).sum(1)
    loaded = E5V.from_pretrained(gptq)
    cos_gptq = (loaded.encode(items, batch_size=4) * expected).sum(1)
    assert np.isfinite(cos_gptq).all()
    texts = [isinstance(i, str) for i in items]
    for kind in (np.array(texts), ~np.array(texts)):  # better for texts *and* images, not one at the other's cost
        assert cos_gptq[kind].mean() > cos_plain[kind].mean() + 0.005
        assert cos_gptq[kind].min() > cos_plain[kind].min()
    assert loaded.backend.manifest.compression["language"]["gptq"] == "builtin"


def test_calibration_file_items(tmp_path, images):
    images["red square"].save(tmp_path / "red.png")
    path = tmp_path / "calib.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in
                              [{"text": "a dog"}, {"image": "red.png"}, {"image": "red.png", "text": "make it blue"}]))
    text, image, composed = read_calibration_file(path)
    assert text == "a dog"
    assert image["image"] == tmp_path / "red.png" and composed["text"] == "make it blue"


@pytest.mark.parametrize("content, message", [
    ('{"text": "ok"}\nnot json\n{"caption": "x"}', r"line 2: invalid JSON.*line 3: expected 'text'"),
    ("\n\n", "holds no items"),
])
def test_bad_calibration_files_are_refused_with_line_numbers(tmp_path, content, message):
    path = tmp_path / "calib.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_calibration_file(path)


def test_calibration_is_for_int4_only(tiny_model_path, tmp_path):
    with pytest.raises(ValueError, match="int4 exports only"):
        export_openvino(str(tiny_model_path), tmp_path / "x", weights="int8", calibration="builtin")
    result = CliRunner().invoke(cli, ["export", "-m", str(tiny_model_path), "--weights", "int8",
                                      "--calibration", "builtin", "-o", str(tmp_path / "y")])
    assert result.exit_code != 0 and "int4 exports only" in result.output
    missing = CliRunner().invoke(cli, ["export", "-m", str(tiny_model_path), "--weights", "int4",
                                       "--calibration", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "z")])
    assert missing.exit_code != 0 and "cannot read the calibration file" in missing.output
    assert not (tmp_path / "z").exists()  # refused before anything was written
