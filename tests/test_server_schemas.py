"""Request parsing, data URIs and the SSRF checks, without a server."""

from __future__ import annotations

import asyncio
import base64

import pytest

from e5v.server.errors import APIError
from e5v.server.images import check_url, decode_data_uri, fetch_image, host_allowed, is_public
from e5v.server.limits import Limits, RemoteImages
from e5v.server.schemas import parse_embedding_request, parse_query

LIMITS = Limits(max_items=5, max_text_chars=20, max_image_bytes=100)
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()


def parse(body, limits=LIMITS):
    return parse_embedding_request(body, limits, dim=64)


def error(body, limits=LIMITS) -> APIError:
    with pytest.raises(APIError) as info:
        parse(body, limits)
    assert info.value.status == 400
    return info.value


def test_openai_text_shapes():
    assert [i.text for i in parse({"input": "a dog"}).items] == ["a dog"]
    req = parse({"model": "m", "input": ["a", "b"], "encoding_format": "base64", "user": "u", "dimensions": 64})
    assert [i.kind for i in req.items] == ["text", "text"] and req.encoding_format == "base64"


def test_vllm_messages_image_text_and_composed():
    def msg(*parts):
        return {"messages": [{"role": "user", "content": list(parts)}]}

    image = {"type": "image_url", "image_url": {"url": PNG}}
    text = {"type": "text", "text": "make it red"}
    assert parse(msg(image)).items[0].kind == "image"
    assert parse(msg(text)).items[0].kind == "text"
    item = parse(msg(image, text)).items[0]
    assert (item.kind, item.text, item.image) == ("composed", "make it red", PNG)
    # several text parts are joined; a batch of such items in `input`
    assert parse(msg(text, {"type": "text", "text": "now"})).items[0].text == "make it red\nnow"
    batch = parse({"input": [[image], {"role": "user", "content": [text]}, msg(image, text), "plain", image]})
    assert [i.kind for i in batch.items] == ["image", "text", "composed", "text", "image"]
    assert [i.param.split(".")[0] for i in batch.items] == [f"input[{i}]" for i in range(5)]


def test_infinity_image_modality():
    req = parse({"modality": "image", "input": [PNG, "https://example.com/a.png"]})
    assert [i.kind for i in req.items] == ["image", "image"]
    assert "data: URI" in error({"modality": "image", "input": ["not a url"]}).message
    assert "modality" in error({"modality": "audio", "input": ["x"]}).message


@pytest.mark.parametrize("body, fragment", [
    ([1, 2], "JSON object"),
    ({}, "exactly one of"),
    ({"input": "a", "messages": []}, "exactly one of"),
    ({"input": 5}, "must be a string or a list"),
    ({"input": [1, 2, 3]}, "token-id"),
    ({"input": [[1, 2]]}, "token-id"),
    ({"input": [{"x": 1}]}, "expected a string"),
    ({"input": []}, "empty"),
    ({"input": [""]}, "empty"),
    ({"input": "   "}, "empty"),
    ({"input": ["a"] * 6}, "limit of 5"),
    ({"input": "x" * 21}, "limit of 20"),
    ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "a", "dimensions": 32}, "Matryoshka"),
    ({"input": "a", "model": 5}, "'model' must be a string"),
    ({"input": "a", "instruction": " "}, "instruction"),
    ({"messages": {"role": "user"}}, "exactly one user message"),
    ({"messages": [{"role": "system", "content": "x"}]}, "role must be 'user'"),
    ({"messages": [{"role": "user", "content": []}]}, "non-empty list"),
    ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "content parts"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}, "must be a string"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]},
     "data: URI"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}] * 2}]},
     "at most one image"),
])
def test_malformed_requests_name_the_problem(body, fragment):
    assert fragment in error(body).message


def test_text_truncation_is_configurable():
    limits = Limits(max_text_chars=5, text_overflow="truncate")
    assert parse({"input": "abcdefgh"}, limits).items[0].text == "abcde"


def test_search_queries():
    assert parse_query("a dog", LIMITS).kind == "text"
    assert parse_query({"image": PNG}, LIMITS).kind == "image"
    assert parse_query({"image": PNG, "text": "red"}, LIMITS).kind == "composed"
    for bad in (5, {}, {"foo": 1}, {"text": 3}, {"image": "ftp://x"}):
        with pytest.raises(APIError):
            parse_query(bad, LIMITS)


def test_data_uris():
    assert decode_data_uri(PNG, LIMITS, "p") == b"\x89PNG fake"
    for uri, fragment in [("data:image/png;base64", "no ','"), ("data:text/plain;base64,aGk=", "image/*"),
                          ("data:image/png,rawbytes", "base64-encoded"), ("data:image/png;base64,@@@", "invalid base64"),
                          ("data:image/png;base64,", "empty"),
                          ("data:image/png;base64," + base64.b64encode(b"x" * 101).decode(), "limit of 100")]:
        with pytest.raises(APIError) as info:
            decode_data_uri(uri, LIMITS, "p")
        assert fragment in info.value.message, uri


def test_host_allowlist():
    assert host_allowed("img.example.com", ("*.example.com",))
    assert not host_allowed("example.com.evil.net", ("*.example.com",))
    assert not host_allowed("evil.net", ("example.com",))
    assert host_allowed("Example.COM.", ("example.com",))
    assert host_allowed("anything.net", ("*",))


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("127.0.0.1", False), ("10.1.2.3", False), ("192.168.0.1", False), ("169.254.169.254", False),
    ("100.64.0.1", False), ("0.0.0.0", False), ("::1", False), ("fe80::1", False), ("::ffff:127.0.0.1", False),
    ("224.0.0.1", False), ("2606:4700::1111", True),
])
def test_public_addresses(address, public):
    assert is_public(address) is public


def test_ssrf_checks_refuse_private_hosts_even_when_allowlisted():
    policy = RemoteImages(enabled=True, hosts=("127.0.0.1", "localhost", "169.254.169.254"))
    for url in ("http://127.0.0.1:9/x.png", "http://localhost/x.png", "http://169.254.169.254/latest/meta-data"):
        with pytest.raises(APIError) as info:
            asyncio.run(check_url(url, policy, "p"))
        assert "non-public address" in info.value.message
    with pytest.raises(APIError, match="not allowed"):
        asyncio.run(check_url("file:///etc/passwd", policy, "p"))
    with pytest.raises(APIError, match="allowlist"):
        asyncio.run(check_url("http://example.org/a.png", policy, "p"))


def test_remote_images_are_off_by_default():
    with pytest.raises(APIError) as info:
        asyncio.run(fetch_image("http://example.org/a.png", RemoteImages(), LIMITS, "p"))
    assert info.value.code == "remote_images_disabled" and "SSRF" in info.value.message
