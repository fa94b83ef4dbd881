"""The real server (``e5v serve`` under uvicorn, 127.0.0.1) driven by the official openai client and httpx.

Vectors must equal ``E5V.encode`` on the same generated model. Every limit, auth, SSRF refusal and malformed
request is checked for its status code and OpenAI-style error body.
"""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from server_util import cos, data_uri, png_bytes, serve
from test_image_boundary import exif_retagged_jpeg

KEY = "test-key-0123456789"
NAME = "e5v-test"


@pytest.fixture(scope="module")
def image_host(images):
    """A local HTTP server with images, a redirect to a non-allowlisted host, a big file, a slow one."""
    png = png_bytes(images["red square"])
    big = np.random.default_rng(0).integers(0, 255, 100_000, dtype=np.uint8).tobytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            port = self.server.server_address[1]
            routes = {"/img.png": (200, png, {}), "/big.png": (200, big, {}),
                      "/hop": (302, b"", {"Location": "/img.png"}),
                      "/escape": (302, b"", {"Location": f"http://localhost:{port}/img.png"}),
                      "/metadata": (302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"})}
            if self.path == "/slow.png":
                time.sleep(3)
            status, body, headers = routes.get(self.path, (404, b"no", {}))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def url(tiny_model_path):
    with serve(tiny_model_path, "--api-key", KEY, "--max-items", "8", "--max-text-chars", "4000",
               "--max-image-bytes", "60000", "--max-image-pixels", "2000000", "--max-body-bytes", "300000",
               "--max-batch-size", "8", "--allow-remote-images", "--remote-host", "127.0.0.1",
               "--remote-allow-private", "--remote-max-bytes", "50000", "--remote-timeout", "1.5") as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c


def post(http, body, path="/v1/embeddings"):
    return http.post(path, json=body)


def vectors(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


def assert_error(response, status: int, fragment: str = "", code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    assert fragment in err["message"], err["message"]
    if code:
        assert err["code"] == code
    return err


def user(*parts):
    return [{"role": "user", "content": list(parts)}]


def image_part(uri):
    return {"type": "image_url", "image_url": {"url": uri}}


# ----------------------------------------------------------------------------- vectors and schema
def test_text_embeddings_with_the_openai_client_equal_encode(client, model):
    texts = ["a dog runs in the grass", "a red car is parked near the house", "snow"]
    res = client.embeddings.create(model=NAME, input=texts)  # the client asks for base64 by default
    got = np.array([d.embedding for d in res.data])
    want = model.encode(texts)
    assert [d.index for d in res.data] == [0, 1, 2] and res.model == NAME
    assert min(cos(g, w) for g, w in zip(got, want)) >= 0.9999
    details = model.encode_with_details(texts)
    assert res.usage.prompt_tokens == res.usage.total_tokens == sum(details.token_counts.values())


def test_float_and_base64_encodings_carry_the_same_vector(client, http, model):
    floats = client.embeddings.create(model=NAME, input="a cat", encoding_format="float").data[0].embedding
    raw = post(http, {"model": NAME, "input": "a cat", "encoding_format": "base64"}).json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(raw), dtype="<f4")
    assert decoded.shape == (model.embedding_dim,)
    np.testing.assert_allclose(decoded, np.array(floats, dtype=np.float32), rtol=0, atol=0)
    assert cos(floats, model.encode(["a cat"])[0]) >= 0.9999


def test_messages_image_text_and_composed_equal_encode(client, model, images):
    png = png_bytes(images["green wide"])
    uri = data_uri(png)
    cases = [(user(image_part(uri)), png),
             (user({"type": "text", "text": "a dog"}), "a dog"),
             (user(image_part(uri), {"type": "text", "text": "make it red"}), {"image": png, "text": "make it red"})]
    for messages, item in cases:
        res = client.post("/embeddings", cast_to=object, body={"model": NAME, "messages": messages})
        assert cos(res["data"][0]["embedding"], model.encode([item])[0]) >= 0.9999
        assert res["usage"]["prompt_tokens"] == model.encode_with_details([item]).token_counts[0]


def test_a_batch_of_multimodal_items_in_input_and_infinity_image_modality(http, model, images):
    a, b = png_bytes(images["red square"]), png_bytes(images["blue tall"])
    body = {"model": NAME, "input": ["a dog", [image_part(data_uri(a))],
                                     [image_part(data_uri(b)), {"type": "text", "text": "in the snow"}],
                                     {"role": "user", "content": "a cat"}]}
    got = vectors(post(http, body))
    want = model.encode(["a dog", a, {"image": b, "text": "in the snow"}, "a cat"])
    assert min(cos(g, w) for g, w in zip(got, want)) >= 0.9999
    got = vectors(post(http, {"model": NAME, "modality": "image", "input": [data_uri(a), data_uri(b)]}))
    assert min(cos(g, w) for g, w in zip(got, model.encode([a, b]))) >= 0.9999


def test_instruction_extension_field(client, model):
    instruction = "Describe the colour of the above in one word:"
    res = client.embeddings.create(model=NAME, input=["a red car"], encoding_format="float",
                                   extra_body={"instruction": instruction})
    got = res.data[0].embedding
    assert cos(got, model.encode(["a red car"], instruction=instruction)[0]) >= 0.9999
    assert cos(got, model.encode(["a red car"])[0]) < 0.9999


def test_dimensions_is_refused_unless_it_is_the_native_size(client, model):
    with pytest.raises(openai.BadRequestError, match="Matryoshka"):
        client.embeddings.create(model=NAME, input="a", dimensions=16)
    res = client.embeddings.create(model=NAME, input="a", dimensions=model.embedding_dim)
    assert len(res.data[0].embedding) == model.embedding_dim


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError, match="not served"):
        client.embeddings.create(model="text-embedding-3-small", input="a")


def test_models_route(client, http, model):
    assert [m.id for m in client.models.list().data] == [NAME]
    config = http.get("/v1/models").json()["data"][0]["embedding_config"]
    assert config["dim"] == model.embedding_dim and config["pooling"] == "last"


def test_metrics_and_unknown_routes(http):
    post(http, {"model": NAME, "input": ["a", "b"]})
    text = http.get("/metrics").text
    for series in ("e5v_requests_total{route=\"/v1/embeddings\",status=\"200\"}", "e5v_items_total{kind=\"text\"}",
                   "e5v_batch_size_bucket", "e5v_queue_depth", "e5v_request_seconds_bucket", "e5v_tokens_total"):
        assert series in text
    assert_error(http.get("/v1/nothing"), 404, code="not_found")
    assert_error(http.get("/v1/embeddings"), 405)
    assert_error(http.post("/v1/search", json={"query": "a"}), 404)  # no --db: no search route


# ----------------------------------------------------------------------------- auth
def test_api_key_is_required_everywhere_but_health(url):
    with httpx.Client(base_url=url, timeout=30) as anon:
        assert anon.get("/health").json()["status"] == "ok"
        for method, path in [("POST", "/v1/embeddings"), ("GET", "/v1/models"), ("GET", "/metrics"),
                             ("GET", "/v1/nothing")]:
            assert_error(anon.request(method, path, json={"input": "a"}), 401, code="invalid_api_key")
            for header in (f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", KEY, f"Basic {KEY}", "Bearer"):
                assert_error(anon.request(method, path, json={"input": "a"}, headers={"Authorization": header}), 401)
    bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model=NAME, input="a")


# ----------------------------------------------------------------------------- bad input
def test_malformed_json_and_wrong_types(http):
    assert_error(http.post("/v1/embeddings", content=b"{not json", headers={"Content-Type": "application/json"}),
                 400, "not valid JSON", "invalid_json")
    assert_error(http.post("/v1/embeddings", content=b"\xff\xfe\x00", headers={"Content-Type": "application/json"}),
                 400, "not valid JSON")
    assert_error(post(http, ["a"]), 400, "JSON object")
    assert_error(post(http, {"model": NAME, "input": 3}), 400, "must be a string or a list")
    assert_error(post(http, {"model": NAME, "input": [{"text": 1}]}), 400, "input[0]")
    assert_error(post(http, {"model": NAME, "input": [[101, 102]]}), 400, "token-id")
    assert_error(post(http, {"model": NAME, "input": "a", "encoding_format": "int8"}), 400, "encoding_format")
    assert_error(post(http, {"model": NAME, "input": "a", "user": 5}), 400, "'user' must be a string")


def test_empty_inputs(http):
    for body in ({"model": NAME, "input": []}, {"model": NAME, "input": ""}, {"model": NAME, "input": [" \n"]},
                 {"model": NAME}, {"model": NAME, "messages": user()}):
        assert response_is_400(post(http, body))


def response_is_400(response) -> bool:
    assert_error(response, 400)
    return True


def test_bad_base64_and_corrupt_images(http, images):
    png = png_bytes(images["red square"])
    bad = {"bad base64": "data:image/png;base64,!!!notbase64",
           "not an image": data_uri(b"hello, I am not an image at all"),
           "truncated png": data_uri(png[: len(png) // 3]),
           "wrong media type": "data:text/plain;base64," + base64.b64encode(png).decode(),
           "file url": "file:///etc/passwd",
           "exif struct.error jpeg": data_uri(exif_retagged_jpeg(), "image/jpeg"),
           "cut jpeg, end marker restored": data_uri(_cut_jpeg(images["green wide"]), "image/jpeg"),
           "eps (not allowed)": data_uri(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "image/eps")}
    for name, uri in bad.items():
        err = assert_error(post(http, {"model": NAME, "input": ["ok text", [image_part(uri)]]}), 400)
        assert "input[1]" in err["message"], (name, err)


def _cut_jpeg(image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2] + b"\xff\xd9"


def test_a_bad_item_fails_only_its_own_request(http):
    """'<image>' inside text is refused by the encoder in the model thread, while other requests share the batch."""
    bodies = [{"model": NAME, "input": ["fine", "a literal <image> token"]}] + \
             [{"model": NAME, "input": [f"good {i}"]} for i in range(6)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda b: post(http, b), bodies))
    assert_error(responses[0], 400, "input[1]", "invalid_input")
    assert all(r.status_code == 200 for r in responses[1:])


# ----------------------------------------------------------------------------- limits
def test_limits(http, images):
    assert_error(post(http, {"model": NAME, "input": ["x"] * 9}), 400, "limit of 8", "too_many_inputs")
    assert_error(post(http, {"model": NAME, "input": "word " * 1000}), 400, "limit of 4,000", "text_too_long")
    assert_error(post(http, {"model": NAME, "input": "x" * 400_000}), 413, "--max-body-bytes", "request_too_large")
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    big = png_bytes(noise)
    assert 60_000 < len(big) < 200_000
    assert_error(post(http, {"model": NAME, "input": [[image_part(data_uri(big))]]}), 400, "limit of 60,000",
                 "image_too_large")
    huge = png_bytes(Image.new("RGB", (1500, 1500), (9, 9, 9)))  # compresses to a few KB, 2.25 M pixels
    assert_error(post(http, {"model": NAME, "input": [[image_part(data_uri(huge))]]}), 400, "over the limit of 2,000,000")


def test_body_size_is_checked_while_streaming_without_content_length(http):
    def chunks():
        for _ in range(40):
            yield b"x" * 10_000

    assert_error(http.post("/v1/embeddings", content=chunks(), headers={"Content-Type": "application/json"}), 413,
                 code="request_too_large")


# ----------------------------------------------------------------------------- remote images (SSRF)
def test_remote_images_from_the_allowlist(http, image_host, model, images):
    got = vectors(post(http, {"model": NAME, "input": [[image_part(image_host + "/img.png")]]}))
    assert cos(got[0], model.encode([png_bytes(images["red square"])])[0]) >= 0.9999
    got = vectors(post(http, {"model": NAME, "modality": "image", "input": [image_host + "/hop"]}))  # same-host hop
    assert cos(got[0], model.encode([png_bytes(images["red square"])])[0]) >= 0.9999


def test_remote_image_refusals(http, image_host):
    port = image_host.rsplit(":", 1)[1]
    cases = {f"http://localhost:{port}/img.png": "allowlist",  # host not on the list
             image_host + "/escape": "allowlist",  # redirect to another host
             image_host + "/metadata": "allowlist",  # redirect to the cloud metadata address
             "http://169.254.169.254/latest/meta-data/": "allowlist",
             image_host + "/big.png": "limit of 50,000",
             image_host + "/slow.png": "longer than 1.5 s",
             image_host + "/missing.png": "HTTP 404",
             "ftp://127.0.0.1/x.png": "data: URI"}
    for link, fragment in cases.items():
        assert_error(post(http, {"model": NAME, "modality": "image", "input": [link]}), 400, fragment)
