"""The newer families (VLM2Vec, jina-embeddings-v4, Qwen3-VL-Embedding) through every shell unchanged: the CLI,
the store (and a CLI search that reloads the store's family, task and prompts), and the server with the official
openai client. Each path's vectors must equal ``E5V.encode`` of the same model (the recipe parity itself is
tests/test_family_recipes.py). The Spark stage is in tests/test_spark.py."""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

from e5v import E5V
from e5v.cli import cli

#: family -> (generator variant, how the family is selected, CLI flags, from_pretrained kwargs)
CASES = {
    "vlm2vec": ("qwen2_vl", None, ["--family", "vlm2vec"], {"family": "vlm2vec"}),
    "jina_v4": ("qwen2_5_vl", ["JinaEmbeddingsV4Model"], ["--task", "code", "--prompt", "passage"],
                {"task": "code", "prompt": "passage"}),
    "qwen3_vl_embedding": ("qwen3_vl", None, [], {}),
    "ops_mm": ("qwen2_vl", None, ["--family", "ops_mm"], {"family": "ops_mm"}),
}


def _cos(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    from e5v.testing_qwen import make_tiny_qwen2vl

    name = request.param
    variant, architectures, flags, kwargs = CASES[name]
    path = make_tiny_qwen2vl(tmp_path_factory.mktemp(name), variant=variant, seed=9, architectures=architectures)
    if name == "jina_v4":
        from test_family_recipes import _write_adapters

        _write_adapters(path)
    model = E5V.from_pretrained(path, **kwargs)
    assert model.components.spec.name == name
    return name, path, flags, model


def test_cli_embed_equals_encode(case, images, tmp_path):
    name, path, flags, model = case
    picture = tmp_path / "green.png"
    images["green wide"].save(picture)
    out = tmp_path / "v.npy"
    run = CliRunner().invoke(cli, ["embed", "-m", str(path), *flags, "-t", "a red car", "-i", str(picture),
                                   "-o", str(out)])
    assert run.exit_code == 0, run.output
    got, expected = np.load(out), model.encode(["a red car", picture])
    assert got.shape == expected.shape and min(_cos(g, e) for g, e in zip(got, expected)) >= 0.9999


def test_store_and_cli_search_reload_the_family(case, images, tmp_path):
    from e5v.store import Store

    name, path, flags, model = case
    texts = tmp_path / "t.txt"
    texts.write_text("a red car\na green field\na dog on a beach\n")
    db = tmp_path / "db"
    runner = CliRunner()
    run = runner.invoke(cli, ["index", str(texts), "--db", str(db), "-m", str(path), *flags, "-q"])
    assert run.exit_code == 0, run.output
    config = Store.open(db).config
    assert config["prompt_family"] == model.components.chat.name
    assert config.get("task") == model.components.task
    res = runner.invoke(cli, ["search", "--db", str(db), "-t", "a green field", "--json", "-k", "1"])
    assert res.exit_code == 0, res.output
    hit = json.loads(res.output.strip().splitlines()[-1])["results"][0]
    assert hit["text"] == "a green field" and hit["score"] > 0.9999  # the same recipe on both sides
    store = Store.open(tmp_path / "db2", model)
    report = store.add([{"image": images["blue tall"]}, {"text": "a blue tower"}], show_progress=False)
    assert report.added == 2
    assert store.search(images["blue tall"], k=1)[0]["score"] > 0.9999


def test_server_with_the_openai_client(case, images):
    import httpx
    import openai
    from test_server_queue import InProcessServer

    from e5v.server import ServerConfig, create_app

    name, path, flags, model = case
    buf = io.BytesIO()
    images["green wide"].save(buf, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    with InProcessServer(create_app(ServerConfig(model_names=(name,)), model=model)) as base:
        for _ in range(100):
            if httpx.get(base + "/health").status_code == 200:
                break
            time.sleep(0.1)
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
        texts = client.embeddings.create(model=name, input=["a red car", "a dog"])
        raw = httpx.post(base + "/v1/embeddings", json={
            "model": name, "input": [[{"type": "image_url", "image_url": {"url": uri}}]]}, timeout=60)
    assert raw.status_code == 200, raw.text
    expected = model.encode(["a red car", "a dog", buf.getvalue()])
    got = [d.embedding for d in texts.data] + [raw.json()["data"][0]["embedding"]]
    assert min(_cos(g, e) for g, e in zip(got, expected)) >= 0.9999
