"""POST /v1/search on the real server with a real LanceDB store (``--db``), behind an API key."""

from __future__ import annotations

import httpx
import pytest
from server_util import data_uri, png_bytes, serve

KEY = "search-key"
TEXTS = ["a dog runs in the grass", "a red car is parked near the house", "snow on the mountain"]


@pytest.fixture(scope="module")
def db(tmp_path_factory, model, images):
    from e5v.store import Store

    root = tmp_path_factory.mktemp("server-store") / "db"
    items = [{"text": t, "metadata": {"n": i}} for i, t in enumerate(TEXTS)]
    items += [{"image": images["red square"], "metadata": {"name": "red"}},
              {"image": images["blue tall"], "metadata": {"name": "blue"}},
              {"image": images["green wide"], "text": "make it yellow", "metadata": {"name": "composed"}}]
    Store.open(root, model).add(items, show_progress=False)
    return root


@pytest.fixture(scope="module")
def http(db, tiny_model_path):
    with serve(tiny_model_path, "--db", str(db), "--api-key", KEY) as base:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
            yield client


def search(http, query, **kw) -> httpx.Response:
    return http.post("/v1/search", json={"query": query, **kw})


def hits(response) -> list[dict]:
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_text_query_finds_the_same_text_first(http):
    for i, text in enumerate(TEXTS):
        top = hits(search(http, text, k=3))
        assert len(top) == 3 and [h["rank"] for h in top] == [0, 1, 2]
        assert top[0]["text"] == text and top[0]["score"] > 0.9999 and top[0]["metadata"] == {"n": i}
        assert top[0]["score"] >= top[1]["score"] >= top[2]["score"]


def test_image_and_composed_queries(http, images):
    red = data_uri(png_bytes(images["red square"]))
    top = hits(search(http, {"image": red}, k=2))[0]
    assert top["kind"] == "image" and top["metadata"] == {"name": "red"} and top["score"] > 0.9999
    green = data_uri(png_bytes(images["green wide"]))
    top = hits(search(http, {"image": green, "text": "make it yellow"}, k=1))[0]
    assert top["kind"] == "composed" and top["score"] > 0.9999


def test_kind_and_structured_filters(http):
    assert {h["kind"] for h in hits(search(http, "a dog", k=10, kind="image"))} == {"image"}
    only = hits(search(http, "a dog", k=10, filter={"n": 2}))
    assert [h["text"] for h in only] == [TEXTS[2]]
    both = hits(search(http, "a dog", k=10, filter={"$or": [{"n": {"$lt": 1}}, {"name": {"$in": ["red", "blue"]}}]}))
    assert sorted(h["text"] or h["metadata"]["name"] for h in both) == sorted([TEXTS[0], "red", "blue"])
    assert hits(search(http, "a dog", k=10, filter={"name": "o'brien') OR (1=1"})) == []  # quoted, not SQL


def test_raw_sql_is_refused_unless_opted_in(http):
    """A client's raw SQL can cost gigabytes (repeat()) or OR past the kind clause; off by default."""
    for where in ("length(repeat('ab', 150000000)) > 0", "1=1) OR (1=1"):
        r = search(http, "a dog", k=10, where=where, kind="image")
        assert r.status_code == 400 and r.json()["error"]["code"] == "sql_filter_disabled", r.text


@pytest.fixture(scope="module")
def sql_http(db, tiny_model_path):
    with serve(tiny_model_path, "--db", str(db), "--allow-sql-filter") as base:
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client


def test_raw_sql_with_the_opt_in_flag_cannot_escape_other_clauses(sql_http):
    only = hits(search(sql_http, "a dog", k=10, where="json_get_int(metadata, 'n') = 2"))
    assert [h["text"] for h in only] == [TEXTS[2]]
    r = search(sql_http, "a dog", k=10, where="1=1) OR (1=1", kind="image")
    assert r.status_code == 400 and "unbalanced" in r.json()["error"]["message"], r.text


def test_bad_search_requests(http):
    for body, fragment in [({"k": 3}, "query"), ({"query": "a", "k": 0}, "k must"), ({"query": "a", "k": "3"}, "k must"),
                           ({"query": 5}, "query"), ({"query": {"image": "http://10.0.0.1/x.png"}}, "SSRF"),
                           ({"query": "a", "kind": "audio"}, "kind"), ({"query": "a", "filter": {"$x": 1}}, "operator"),
                           ({"query": "a", "filter": {"n": {"$gt": [1]}}}, "values must be"),
                           ({"query": "a", "filter": "n = 1"}, "object")]:
        r = http.post("/v1/search", json=body)
        assert r.status_code == 400, (body, r.text)
        assert fragment in r.json()["error"]["message"], (body, r.json())


def test_search_needs_the_key(http):
    r = httpx.post(str(http.base_url) + "/v1/search", json={"query": "a"})
    assert r.status_code == 401
