"""GME (a Qwen2-VL embedder) against its model card's recipe (gme_inference.py), run one item at a time in fp32
with transformers' own Qwen2-VL forward on a generated model; selection by name and by marker file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from e5v import E5V, ModelLoadError
from family_cards import QwenCard, normalized, qwen_smart_resize

DEFAULT_INSTRUCTION = "You are a helpful assistant."


def card_resize(image: Image.Image) -> Image.Image:
    """gme_inference.fetch_image: convert("RGB"), smart_resize(factor 28, 4..16384 patches), PIL resize."""
    return qwen_smart_resize(image.convert("RGB"), 28, 4 * 28 * 28, 16384 * 28 * 28)


class GmeCard(QwenCard):
    """The card's embed(): one item, its prompt string, the processor with the card's pixel bounds."""

    def __init__(self, path):
        super().__init__(path, min_pixels=256 * 28 * 28, max_pixels=1280 * 28 * 28)

    def embed(self, text=None, image=None, instruction=None) -> np.ndarray:
        user = ("<|vision_start|><|image_pad|><|vision_end|>" if image is not None else "") + (text or "")
        prompt = (f"<|im_start|>system\n{instruction or DEFAULT_INSTRUCTION}<|im_end|>\n<|im_start|>user\n{user}"
                  "<|im_end|>\n<|im_start|>assistant\n<|endoftext|>")
        states, _ = self.states(prompt, card_resize(image) if image is not None else None)
        return normalized(states[-1])


@pytest.fixture(scope="module")
def gme_path(tmp_path_factory):
    from e5v.testing_qwen import make_tiny_qwen2vl

    return make_tiny_qwen2vl(tmp_path_factory.mktemp("gme"), variant="qwen2_vl", seed=3)


@pytest.fixture(scope="module")
def gme(gme_path):
    return E5V.from_pretrained(gme_path, family="gme")


@pytest.fixture(scope="module")
def card(gme_path):
    return GmeCard(gme_path)


def _items(images):
    rgba = images["red square"].convert("RGBA")
    rgba.putalpha(128)  # the card drops transparency instead of compositing it
    return ["What kind of car is this?", images["green wide"], images["yellow small"], rgba,
            {"image": images["blue tall"], "text": "the same car in red"}, "a"]


def _kwargs(item):
    return {"text": item} if isinstance(item, str) else item if isinstance(item, dict) else {"image": item}


def _cos(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("batch_size", [1, 3, 6])
def test_vectors_equal_the_card_recipe_in_any_batch(gme, card, images, batch_size):
    items = _items(images)
    vectors = gme.encode(items, batch_size=batch_size)  # mixed kinds and lengths: left-padded batches
    for item, vector in zip(items, vectors):
        assert _cos(vector, card.embed(**_kwargs(item))) >= 0.9999, item


def test_instruction_goes_to_the_system_turn(gme, card):
    query = "Find an image that matches the given text."
    got = gme.encode(["a red car"], instruction=query)[0]
    assert _cos(got, card.embed(text="a red car", instruction=query)) >= 0.9999
    assert _cos(got, gme.encode(["a red car"])[0]) < 0.9999  # it changes the vector
    assert gme.embedding_config(instruction=query)["prompts"]["system"] == query
    assert "system" not in gme.embedding_config()["prompts"]


def test_family_chosen_by_name_or_by_the_card_file(gme_path, tmp_path):
    import shutil

    assert E5V.from_pretrained(gme_path).components.spec.name == "qwen2_vl"  # a plain Qwen2-VL config
    marked = shutil.copytree(gme_path, tmp_path / "gme-checkpoint")
    (marked / "gme_inference.py").write_text("# the model card's inference script\n")
    model = E5V.from_pretrained(marked)
    assert model.components.spec.name == "gme" and model.embedding_config()["prompt_family"] == "gme"
    with pytest.raises(ValueError, match="unknown model family"):
        E5V.from_pretrained(gme_path, family="nope")
    from e5v.testing import make_tiny_model

    with pytest.raises(ModelLoadError, match="covers"):
        E5V.from_pretrained(make_tiny_model(tmp_path / "llava"), family="gme")
    with pytest.raises(ValueError, match="pooling 'mean' is not available for gme"):
        E5V.from_pretrained(gme_path, family="gme", pooling="mean")


def test_gme_through_the_cli_and_the_store(gme_path, images, tmp_path):
    from click.testing import CliRunner

    from e5v.cli import cli
    from e5v.store import Store

    out = tmp_path / "v.npy"
    run = CliRunner().invoke(cli, ["embed", "-m", str(gme_path), "--family", "gme", "-t", "a red car", "-o", str(out)])
    assert run.exit_code == 0, run.output
    model = E5V.from_pretrained(gme_path, family="gme")
    assert _cos(np.load(out)[0], model.encode(["a red car"])[0]) >= 0.9999
    store = Store.open(tmp_path / "db", model)
    store.add([{"text": "a red car"}, {"image": images["green wide"]}], show_progress=False)
    assert store.search("a red car", k=1)[0]["text"] == "a red car"
    reopened = Store.open(tmp_path / "db")  # the store records the family's recipe in its config
    assert reopened.config["prompt_family"] == "gme"


def test_gme_search_without_model_reloads_its_family(gme_path, tmp_path):
    import json

    from click.testing import CliRunner

    from e5v.cli import cli

    db = tmp_path / "db"
    texts = tmp_path / "t.txt"
    texts.write_text("a red car\na green field\n")
    runner = CliRunner()
    assert runner.invoke(cli, ["index", str(texts), "--db", str(db), "-m", str(gme_path), "--family", "gme",
                               "-q"]).exit_code == 0
    res = runner.invoke(cli, ["search", "--db", str(db), "-t", "a red car", "--json", "-k", "1"])
    assert res.exit_code == 0, res.output
    hit = json.loads(res.output.strip().splitlines()[-1])["results"][0]
    assert hit["text"] == "a red car" and hit["score"] > 0.9999  # same family, same recipe, same vector


def test_gme_through_the_server(gme, images):
    import base64
    import io
    import time

    import httpx
    from test_server_queue import InProcessServer

    from e5v.server import ServerConfig, create_app

    buf = io.BytesIO()
    images["green wide"].save(buf, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    with InProcessServer(create_app(ServerConfig(model_names=("gme",)), model=gme)) as base:
        for _ in range(100):
            if httpx.get(base + "/health").status_code == 200:
                break
            time.sleep(0.1)
        body = {"model": "gme", "input": ["a red car", [{"type": "image_url", "image_url": {"url": uri}}]]}
        r = httpx.post(base + "/v1/embeddings", json=body, timeout=60)
    assert r.status_code == 200, r.text
    got = [d["embedding"] for d in r.json()["data"]]
    expected = gme.encode(["a red car", buf.getvalue()])
    assert _cos(got[0], expected[0]) >= 0.9999 and _cos(got[1], expected[1]) >= 0.9999
