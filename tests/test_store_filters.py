"""Structured metadata filters compile to quoted SQL and select the right rows of a real LanceDB store."""

from __future__ import annotations

import pytest

from e5v.store import Store
from e5v.store.filters import FilterError, check_raw_where, compile_filter

META = [{"source": "web", "year": 2020, "ok": True}, {"source": "scan", "year": 2023.0, "ok": False},
        {"source": "o'brien", "year": 1999}, {}]


@pytest.fixture(scope="module")
def store(tmp_path_factory, model):
    s = Store.open(tmp_path_factory.mktemp("filters") / "db", model)
    s.add([{"text": f"item {i}", "metadata": m} for i, m in enumerate(META)], show_progress=False)
    return s


def texts(store, **kw) -> set[str]:
    return {h["text"] for h in store.search("item", k=10, **kw)}


@pytest.mark.parametrize("spec, expected", [
    ({"source": "web"}, {0}),
    ({"source": "o'brien"}, {2}),
    ({"year": {"$gte": 2020}}, {0, 1}),
    ({"year": {"$gt": 1990, "$lt": 2021}}, {0, 2}),
    ({"year": 2023}, {1}),
    ({"ok": True}, {0}),
    ({"ok": {"$ne": True}}, {1}),
    ({"source": {"$in": ["web", "scan"]}}, {0, 1}),
    ({"$or": [{"source": "web"}, {"year": {"$lt": 2000}}]}, {0, 2}),
    ({"$and": [{"source": "web"}, {"ok": False}]}, set()),
    ({"source": "x') OR (1=1"}, set()),
])
def test_filters_select_the_right_rows(store, spec, expected):
    assert texts(store, filter=spec) == {f"item {i}" for i in expected}


def test_a_filter_combines_with_kind_and_cannot_escape_it(store):
    assert texts(store, filter={"source": "web"}, kind="image") == set()


@pytest.mark.parametrize("spec, fragment", [
    ({}, "non-empty"), ("source = 'web'", "object"), ({"$not": {}}, "unknown operator"),
    ({"a": {"$regex": "x"}}, "unknown operator"), ({"a": {"$in": []}}, "list of 1"),
    ({"a": {"$in": ["x", 1]}}, "one type"), ({"a": [1]}, "values must be"), ({"a": float("nan")}, "finite"),
    ({"a": {"$gt": True}}, "booleans"), ({"a" * 200: 1}, "keys"), ({"a": "x" * 2000}, "limited"),
    ({"$or": [{"$or": [{"$or": [{"$or": [{"$or": [{"$or": [{"a": 1}]}]}]}]}]}]}, "deeper"),
    ({f"k{i}": i for i in range(100)}, "more than"),
])
def test_malformed_filters_are_refused_with_the_part_named(spec, fragment):
    with pytest.raises(FilterError, match=fragment):
        compile_filter(spec)


def test_values_are_quoted_never_spliced():
    sql = compile_filter({"name": "a' OR '1'='1"})
    assert sql == "(json_get_string(metadata, 'name') = 'a'' OR ''1''=''1')"


def test_raw_where_must_be_balanced(store):
    assert check_raw_where("a = '(' AND (b = 1)") == "(a = '(' AND (b = 1))"
    for bad in ("1=1) OR (1=1", "(a = 1", "a = 'x"):
        with pytest.raises(FilterError, match="unbalanced"):
            check_raw_where(bad)
    with pytest.raises(FilterError):
        store.search("item", where="1=1) OR (1=1", kind="image")


def test_a_key_holding_strings_numbers_and_booleans_filters_instead_of_failing(model, tmp_path):
    """LanceDB's json_get_float/json_get_bool fail the query on a row whose value is a string; the compiled
    filter reads text and converts leniently, so mixed metadata filters by value."""
    s = Store.open(tmp_path / "db", model)
    s.add([{"text": f"v {i}", "metadata": {"v": v}} for i, v in enumerate(["web", 7, True, 2.5, "8"])],
          show_progress=False)
    assert texts(s, filter={"v": {"$gte": 7}}) == {"v 1", "v 4"}  # "8" is text holding a number: lenient
    assert texts(s, filter={"v": True}) == {"v 2"}
    assert texts(s, filter={"v": "web"}) == {"v 0"}
    assert texts(s, filter={"v": {"$in": [2.5, 7]}}) == {"v 1", "v 3"}
