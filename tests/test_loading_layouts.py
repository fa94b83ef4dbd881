"""Checkpoints as users really have them: saved by the installed transformers, run as ``python -m e5v``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from e5v import E5V
from e5v.errors import ModelLoadError


@pytest.fixture(scope="module")
def resaved(tiny_model_path, model, tmp_path_factory):
    """The tiny model and its processor saved with ``save_pretrained`` of the installed transformers, as a
    user's own fine-tune would be (transformers 5: image processor nested in processor_config.json)."""
    from transformers import LlavaNextForConditionalGeneration

    out = tmp_path_factory.mktemp("resaved") / "model"
    LlavaNextForConditionalGeneration.from_pretrained(tiny_model_path).save_pretrained(out)
    model.processor.save_pretrained(out)
    return out


def test_a_checkpoint_saved_by_the_installed_transformers_loads_and_embeds_the_same(resaved, model, images):
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:  # the layout this test exists for
        assert not (resaved / "preprocessor_config.json").exists()
        assert "image_processor" in json.loads((resaved / "processor_config.json").read_text())
    loaded = E5V.from_pretrained(resaved)
    items = ["a dog in the grass", images["red square"], {"image": images["blue tall"], "text": "make it red"}]
    np.testing.assert_allclose(loaded.encode(items), model.encode(items), atol=1e-6)


def test_a_directory_without_image_processor_settings_is_refused_clearly(resaved, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(resaved, broken)
    config = json.loads((broken / "processor_config.json").read_text())
    config.pop("image_processor")
    (broken / "processor_config.json").write_text(json.dumps(config))
    (broken / "preprocessor_config.json").unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match="no image processor settings"):
        E5V.from_pretrained(broken)


def test_python_dash_m_e5v_is_the_e5v_command(tiny_model_path, tmp_path):
    version = subprocess.run([sys.executable, "-m", "e5v", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("e5v, version")
    out = tmp_path / "v.npy"
    run = subprocess.run([sys.executable, "-m", "e5v", "embed", "-m", str(tiny_model_path), "-t", "a dog", "-o",
                          str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert np.load(out).shape == (1, 64)
    bad = subprocess.run([sys.executable, "-m", "e5v", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Usage: e5v" in bad.stderr
