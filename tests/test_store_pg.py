"""The store on a real PostgreSQL + pgvector (``postgresql://`` addresses): same answers as the LanceDB store,
its filters, many writers, the HNSW index with exact re-ranking, and what a hostile caller or server does."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("psycopg")
pytest.importorskip("lancedb")

from e5v.errors import ConfigMismatchError, StoreError  # noqa: E402
from e5v.store import PgStore, Store, pg_ann, store_exists  # noqa: E402
from e5v.store.filters import FilterError  # noqa: E402
from e5v.store.walk import content_hash  # noqa: E402

ITEMS = [{"text": f"item {i}", "metadata": m} for i, m in enumerate(
    [{"source": "web", "year": 2020, "ok": True}, {"source": "scan", "year": 2023.0, "ok": False},
     {"source": "o'brien", "year": 1999}, {}, {"source": 7, "year": "1990"}])]


@pytest.fixture(scope="module")
def pg_store(pg_url, model, images):
    store = Store.open(f"{pg_url}#module_items", model)
    report = store.add(ITEMS + [img for img in images.values()][:3] + [{"image": next(iter(images.values())),
                                                                          "text": "make it blue"}],
                       show_progress=False, commit_every=3)
    assert (report.added, report.failed) == (9, [])
    return store


@pytest.fixture(scope="module")
def lance_store(tmp_path_factory, model, images):
    store = Store.open(tmp_path_factory.mktemp("lance") / "db", model)
    store.add(ITEMS + [img for img in images.values()][:3] + [{"image": next(iter(images.values())),
                                                                "text": "make it blue"}], show_progress=False)
    return store


def test_same_rankings_and_exact_cosines_as_the_lance_store(pg_store, lance_store, model, images):
    assert isinstance(pg_store, PgStore) and pg_store.config == lance_store.config
    first = next(iter(images.values()))
    for query in ["item 3", first, {"image": first, "text": "make it blue"}]:
        pg, lance = pg_store.search(query, k=9), lance_store.search(query, k=9)
        assert [h["id"] for h in pg] == [h["id"] for h in lance]
        assert [h["score"] for h in pg] == pytest.approx([h["score"] for h in lance], abs=1e-5)
        q = model.encode([query])[0]
        item = pg_store.get(pg[1]["id"])
        assert pg[1]["score"] == pytest.approx(float(item["vector"] @ q), abs=1e-5)
    assert pg_store.search("item 3", k=1)[0]["metadata"] == {}


@pytest.mark.parametrize("spec, expected, lance_coerces", [
    ({"source": "web"}, {0}, False),
    ({"source": "o'brien"}, {2}, False),
    ({"year": {"$gte": 2020}}, {0, 1}, False),
    ({"year": {"$gt": 1990, "$lt": 2021}}, {0, 2}, False),
    ({"year": 2023}, {1}, False),
    ({"ok": True}, {0}, False),
    ({"ok": {"$ne": True}}, {1}, False),
    ({"source": {"$in": ["web", "scan"]}}, {0, 1}, False),
    ({"ok": {"$in": [False]}, "source": {"$ne": "web"}}, {1}, False),
    ({"source": 7}, {4}, False),
    # JSON types never coerce here; LanceDB's json_get_* read 7 as "7" and "1990" as 1990.0
    ({"source": "7"}, set(), True),
    ({"$or": [{"source": "web"}, {"year": {"$lt": 2000}}]}, {0, 2}, True),
    ({"$and": [{"source": "web"}, {"ok": False}]}, set(), False),
    ({"source": "x') OR (1=1"}, set(), False),
    ({"o'k\"ey\\": {"$in": ["v", "x') OR (1=1"]}}, set(), False),  # hostile key and values through the GIN hint
])
def test_structured_filters_select_the_same_rows_as_lance(pg_store, lance_store, spec, expected, lance_coerces):
    pg = {h["text"] for h in pg_store.search("item", k=20, filter=spec)}
    assert pg == {f"item {i}" for i in expected}
    lance = {h["text"] for h in lance_store.search("item", k=20, filter=spec)}
    assert (pg != lance) == lance_coerces


def test_equality_filters_are_answered_by_the_metadata_index(pg_db, model):
    """A GIN index on metadata finds string/boolean equality matches (the containment test the filter adds), for
    new stores at creation and for older ones on the next build_ann."""
    store = Store.open(pg_db, model)
    rows = [{"text": f"doc {i}", "metadata": {"src": "rare" if i == 7 else "bulk", "ok": i % 2 == 0}} for i in range(60)]
    store.add(rows, show_progress=False)
    spec = {"src": {"$in": ["rare", "none"]}, "ok": False}

    def plan() -> str:
        sql, args, _ = store.query_plan(model.encode(["doc"])[0], 5, None, None, spec, None)
        with store._session() as conn, conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")
            return "\n".join(line[0] for line in conn.execute("EXPLAIN " + sql, args).fetchall())

    assert f"{store.table}_metadata" in plan()
    assert [h["text"] for h in store.search("doc", k=5, filter=spec)] == ["doc 7"]
    with store._session() as conn:
        conn.execute(f"DROP INDEX {store.table}_metadata")  # a store created before the index existed
    assert f"{store.table}_metadata" not in plan()
    store.build_ann("hnsw")
    assert f"{store.table}_metadata" in plan()


def test_raw_where_is_postgres_sql_read_only_and_time_limited(pg_store, pg_url, monkeypatch):
    import psycopg

    texts = {h["text"] for h in pg_store.search("item", k=20, where="metadata->>'source' LIKE 'w%'")}
    assert texts == {"item 0"}  # a % in the owner's SQL is literal, not a placeholder
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE IF NOT EXISTS e5v_probe")
    with pytest.raises(StoreError, match="read-only transaction"):
        pg_store.search("item", where="nextval('e5v_probe') > 0")
    with pytest.raises(FilterError, match="unbalanced"):
        pg_store.search("item", where="true) OR (true", kind="image")
    monkeypatch.setattr("e5v.store.postgres.SEARCH_TIMEOUT", "200ms")
    with pytest.raises(StoreError, match="statement timeout"):
        pg_store.search("item", where="pg_sleep(5) IS NOT NULL")
    assert len(pg_store.search("item", k=3)) == 3  # the connection is fine afterwards


def test_readd_is_idempotent_and_a_nul_is_one_failed_item(pg_db, model):
    store = Store.open(pg_db, model)
    first = store.add([{"text": "a"}, {"text": "b\x00c"}, {"text": "d", "metadata": {"k": "x\x00"}}],
                      show_progress=False)
    assert first.added == 1 and len(first.failed) == 2 and "NUL" in first.failed[0][1]
    again = store.add([{"text": "a"}, {"text": "e"}], show_progress=False)
    assert (again.added, again.skipped_existing, len(store)) == (1, 1, 2)


def test_a_resumed_add_asks_for_stored_hashes_once_per_window(pg_db, model, monkeypatch):
    from e5v.store import ingest

    store = Store.open(pg_db, model)
    items = [{"text": f"t{i}", "metadata": {"i": i, "nested": {"x": [i, "y"]}}} for i in range(150)]
    assert store.add(items, show_progress=False).added == 150
    lookups = []
    real = PgStore.stored_among
    monkeypatch.setattr(PgStore, "stored_among", lambda self, hashes: lookups.append(len(hashes)) or real(self, hashes))
    again = store.add(items + [{"text": "new"}, {"text": "new"}], show_progress=False)
    assert (again.added, again.skipped_existing, len(store)) == (1, 151, 151)
    windows = -(-152 // ingest.LOOKUP_WINDOW)
    assert len(lookups) == windows and sum(lookups) == 152  # one query per window, not one per record
    hit = store.search("t7", k=1, filter={"i": 7})[0]
    assert hit["metadata"] == {"i": 7, "nested": {"x": [7, "y"]}}  # serialised once, stored as jsonb


def test_config_mismatch_foreign_table_bad_name_and_unreachable_server(pg_db, pg_url, model, tiny_model_path):
    import psycopg

    from e5v import E5V

    Store.open(pg_db, model).add([{"text": "x"}], show_progress=False)
    base = E5V.from_pretrained(tiny_model_path, image_mode="base")
    with pytest.raises(ConfigMismatchError, match="image_mode: store has 'anyres', model has 'base'"):
        Store.open(pg_db, base)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS someone_elses (x int)")
    with pytest.raises(StoreError, match="exists but e5v did not create it"):
        Store.open(f"{pg_url}#someone_elses", model)
    with pytest.raises(ValueError, match="table name"):
        Store.open(f"{pg_url}#Robert'); DROP TABLE x;--", model)
    with pytest.raises(StoreError, match="no store at"):
        Store.open(f"{pg_url}#never_made", None)
    assert store_exists(pg_db) and not store_exists(f"{pg_url}#never_made")
    closed = pg_url.replace("postgres@", "postgres:hunter2@").rsplit(":", 1)[0] + ":1/postgres"
    with pytest.raises(StoreError, match="cannot connect") as err:
        Store.open(closed, model)
    assert "hunter2" not in str(err.value) and "***" in str(err.value)


def test_concurrent_writers_store_each_item_once(pg_db, model):
    """Four writers (own connections) add overlapping vectors at once: every hash exactly once, none lost."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((400, model.embedding_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [{"vector": v, "kind": "text", "text": f"t{i}", "hash": content_hash("text", text=f"t{i}")}
            for i, v in enumerate(vectors)]
    first = Store.open(pg_db, model)
    reports, errors = [], []

    def write(offset: int) -> None:
        try:
            store = Store.open(pg_db, config=first.config)
            part = rows[offset:] + rows[:offset]  # every writer holds every row, in another order
            reports.append(store.add_vectors(part, commit_every=37))
        except Exception as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i * 100,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.added for r in reports) == 400 and sum(r.skipped_existing for r in reports) == 1200
    assert len(first) == 400
    hits = first.search(vectors[7], k=1)
    assert hits[0]["text"] == "t7" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)


def _clustered_store(pg_db, model, n_clusters: int = 30, per_cluster: int = 100, seed: int = 1):
    """A store of clustered 4,096-d vectors (like real embeddings, as tests/test_store_ann.py) and 20 queries."""
    rng = np.random.default_rng(seed)
    dim = 4096
    unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
    centres = unit(rng.standard_normal((n_clusters, dim)))
    n = n_clusters * per_cluster
    members = unit(centres[np.repeat(np.arange(n_clusters), per_cluster)] + rng.standard_normal((n, dim)) / np.sqrt(dim))
    store = Store.open(pg_db, config=dict(model.embedding_config(), dim=dim))
    store.add_vectors([{"vector": v, "kind": "image" if i % 3 else "text", "hash": content_hash("text", text=str(i)),
                        "metadata": {"n": i}} for i, v in enumerate(members)])
    queries = unit(centres[rng.integers(0, n_clusters, 20)] + rng.standard_normal((20, dim)) / np.sqrt(dim))
    return store, queries


def _plan(store, query, index, **tuning) -> str:
    """EXPLAIN of the search's own SQL under its own settings."""
    sql, args, settings = store.query_plan(query, 10, None, "text", {"n": {"$lt": 300}}, index, 20, **tuning)
    with store._session() as conn, conn.transaction():
        for name, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        return "\n".join(line[0] for line in conn.execute("EXPLAIN " + sql, args).fetchall())


@pytest.mark.parametrize("kind", ["ivfflat", "hnsw"])
def test_ann_on_binary_codes_finds_the_exact_neighbours(pg_db, model, kind):
    """The ANN path at E5-V's 4,096 dims (over pgvector's 2,000/4,000-dim limits for vector/halfvec): recall@10
    of each index kind (IVFFlat on a halfvec prefix, HNSW on binary codes) + exact re-rank against exact search,
    filters filled, the index used."""
    store, queries = _clustered_store(pg_db, model)
    exact = [[h["id"] for h in store.search(q, k=10)] for q in queries]
    assert not store.has_ann
    with pytest.raises(ValueError, match="has none"):
        store.search(queries[0], nprobes=5)
    params = store.build_ann(kind)
    assert store.has_ann and store.ann_index.kind == kind and store.build_ann() == params  # a no-op now
    assert params["index_type"] == {"ivfflat": "IVFFLAT", "hnsw": "HNSW"}[kind]
    approx = [[h["id"] for h in store.search(q, k=10)] for q in queries]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9, recall
    hits = store.search(queries[0], k=10)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert [h["id"] for h in store.search(queries[0], k=10, exact=True)] == exact[0]
    few = store.search(queries[0], k=10, filter={"n": {"$lt": 300}}, kind="text")  # iterative scan fills k
    assert len(few) == 10 and all(h["metadata"]["n"] < 300 and h["kind"] == "text" for h in few)
    other = {"ivfflat": {"ef_search": 100}, "hnsw": {"nprobes": 5}}[kind]
    with pytest.raises(ValueError, match=f"ANN index is {'IVFFlat' if kind == 'ivfflat' else 'HNSW'}"):
        store.search(queries[0], **other)
    assert pg_ann.index_name(store.table, kind) in _plan(store, queries[0], store.ann_index)


def test_ivfflat_probes_trade_recall_and_replacing_the_index_kind(pg_db, model):
    """nprobes reaches ivfflat.probes (one list of many misses neighbours, all lists find them all); building
    the other kind replaces the index, and an INVALID leftover of an interrupted build is dropped first."""
    store, queries = _clustered_store(pg_db, model, n_clusters=60, per_cluster=200)  # 12,000 rows: 12 lists
    exact = [[h["id"] for h in store.search(q, k=10)] for q in queries]
    store.build_ann("ivfflat")
    index = store.ann_index
    assert (index.kind, index.lists) == ("ivfflat", 12)

    def recall(reader=store, **tuning) -> float:
        got = [[h["id"] for h in reader.search(q, k=10, **tuning)] for q in queries]
        return float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(got, exact)]))

    assert recall(nprobes=12) == 1.0 and recall() >= 0.95
    settings = store.query_plan(queries[0], 10, None, None, None, index, 20, nprobes=3)[2]
    assert settings["ivfflat.probes"] == "3" and settings["ivfflat.iterative_scan"] == "relaxed_order"
    assert store.build_ann("hnsw")["index_type"] == "HNSW"
    with store._session() as conn:  # the old index is gone, not kept beside the new one
        names = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (store.table,))}
        assert names >= {f"{store.table}_bq_hnsw"} and f"{store.table}_pf_ivfflat" not in names
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(%s)",
                     (f"{store.table}_bq_hnsw",))  # what a build killed half-way leaves
    other = Store.open(pg_db)  # a fresh reader (no cached index facts) sees no usable index: exact scans
    assert not other.has_ann and [h["id"] for h in other.search(queries[0], k=10)] == exact[0]
    assert other.build_ann()["index_type"] == "HNSW"  # the invalid HNSW dropped; the default kind built anew
    assert other.ann_index.kind == "hnsw" and recall(other) >= 0.95
    assert other.build_ann("ivfflat")["index_type"] == "IVFFLAT" and recall(other) >= 0.95
    # stale facts (for ANN_FACTS_TTL): the candidate query no longer matches the index; PostgreSQL scans, answers hold
    assert recall() >= 0.95  # whether its facts are stale (hnsw, within ANN_FACTS_TTL) or fresh (ivfflat)
    with pytest.raises(ValueError, match="kind must be one of"):
        other.build_ann("diskann")


def test_searches_go_on_while_another_writer_commits(pg_db, model):
    store = Store.open(pg_db, model)
    store.add([{"text": f"seed {i}"} for i in range(5)], show_progress=False)
    done, failures = threading.Event(), []

    def write() -> None:
        writer = Store.open(pg_db, model)
        writer.add([{"text": f"new {i}"} for i in range(60)], show_progress=False, commit_every=4)
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    seen = []
    while not done.is_set():
        try:
            seen.append(len(store.search("seed 1", k=100)))
        except Exception as exc:  # noqa: BLE001
            failures.append(exc)
            break
    thread.join()
    assert failures == [] and seen and seen[0] >= 5 and len(store) == 65
    assert seen == sorted(seen)  # commits become visible whole and in order


def test_lance_store_refuses_the_postgres_only_option(lance_store):
    with pytest.raises(ValueError, match="ef_search"):
        lance_store.search("item", ef_search=100)


def test_the_postgres_store_needs_neither_lancedb_nor_pyarrow(pg_db, tmp_path):
    """`pip install "e5v[pgvector]"` without the `store` extra: a process where lancedb, pyarrow and pandas
    cannot be imported opens, fills and searches a PostgreSQL store."""
    import subprocess
    import sys

    script = tmp_path / "no_lance.py"
    script.write_text(f'''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("lancedb", "pyarrow", "pandas"):
            raise ImportError("not installed: " + name)
sys.meta_path.insert(0, Block())
import numpy as np
from e5v.store import Store
from e5v.store.walk import content_hash
store = Store.open({pg_db!r}, config={{"dim": 8, "model": "m"}})
v = np.ones(8, np.float32) / np.sqrt(8)
report = store.add_vectors([{{"vector": v, "kind": "text", "text": "a", "hash": content_hash("text", text="a")}}])
assert report.added == 1 and store.search(v, k=1)[0]["text"] == "a"
assert not {{"lancedb", "pyarrow"}} & set(sys.modules)
print("ok")
''')
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
