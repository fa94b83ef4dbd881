"""The store's ANN index (IVF_RQ + exact re-ranking): recall against the exact scan, exact scores,
filters, rows added after the index, and the size floor. Vectors are stored directly (add_vectors) so
the test exercises the index on thousands of rows without embedding them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("lancedb")

from e5v.store import Store  # noqa: E402
from e5v.errors import StoreError  # noqa: E402
from e5v.store import ann  # noqa: E402

N_CENTRES, PER_CENTRE = 60, 100  # 6,000 rows: clustered like real embeddings, so neighbours are meaningful


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def clustered(model):
    rng = np.random.default_rng(7)
    dim = model.embedding_dim
    centres = _unit(rng.standard_normal((N_CENTRES, dim)))
    which = np.repeat(np.arange(N_CENTRES), PER_CENTRE)
    vectors = _unit(centres[which] + rng.standard_normal((len(which), dim)) / np.sqrt(dim))
    queries = _unit(centres[rng.integers(0, N_CENTRES, 20)] + rng.standard_normal((20, dim)) / np.sqrt(dim))
    return vectors, queries


@pytest.fixture(scope="module")
def indexed(model, clustered, tmp_path_factory):
    vectors, _ = clustered
    store = Store.open(tmp_path_factory.mktemp("ann") / "db", config=model.embedding_config())
    rows = ({"vector": v, "kind": "image" if i % 2 else "text", "hash": f"{i:016x}" * 2, "path": f"item-{i}",
             "metadata": {"group": i % 3}} for i, v in enumerate(vectors))
    report = store.add_vectors(rows, commit_every=2000)
    assert report.added == len(vectors)
    assert not store.has_ann
    params = store.build_ann()
    assert params["index_type"] == "IVF_RQ" and store.has_ann
    return store


def _ids(hits: list[dict]) -> list[str]:
    return [h["id"] for h in hits]


def test_ann_recall_against_exact_and_scores_are_exact_cosines(indexed, clustered):
    vectors, queries = clustered
    recalls = []
    for q in queries:
        approx = indexed.search(q, k=10)
        exact = indexed.search(q, k=10, exact=True)
        recalls.append(len(set(_ids(approx)) & set(_ids(exact))) / 10)
        for hit in approx:  # re-ranking with the stored vectors: the score is the true cosine, not a code's
            stored = vectors[int(hit["path"].split("-")[1])]
            assert hit["score"] == pytest.approx(float(stored @ q), abs=1e-5)
        assert [h["score"] for h in approx] == sorted((h["score"] for h in approx), reverse=True)
    assert np.mean(recalls) >= 0.95, recalls


def test_ann_with_kind_and_metadata_filters(indexed, clustered):
    _, queries = clustered
    for q in queries[:5]:
        hits = indexed.search(q, k=10, kind="image", where="json_get_int(metadata, 'group') = 1")
        exact = indexed.search(q, k=10, kind="image", where="json_get_int(metadata, 'group') = 1", exact=True)
        assert hits and all(h["kind"] == "image" and h["metadata"]["group"] == 1 for h in hits)
        assert len(set(_ids(hits)) & set(_ids(exact))) >= 8


def test_rows_added_after_the_index_are_found(indexed, model):
    rng = np.random.default_rng(11)
    fresh = _unit(rng.standard_normal(model.embedding_dim))
    indexed.add_vectors([{"vector": fresh, "kind": "text", "hash": "f" * 32, "path": "late"}])
    assert indexed.has_ann
    top = indexed.search(fresh, k=3)
    assert top[0]["path"] == "late" and top[0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_small_store_refuses_an_index(model, tmp_path):
    store = Store.open(tmp_path / "db", config=model.embedding_config())
    store.add_vectors([{"vector": _unit(np.ones(model.embedding_dim)), "kind": "text", "hash": "a" * 32}])
    with pytest.raises(StoreError, match=f"at least {ann.MIN_ANN_ROWS} rows"):
        store.build_ann()


def test_partitions_follow_sqrt_n_and_probes_a_share_of_them():
    assert ann.default_nprobes(100_000) == 20 and ann.default_nprobes(1_000_000) == 50
    assert ann.num_partitions(1_000_000) == 1000
    assert ann.num_partitions(5_000) == 70
    assert ann.num_partitions(10) == 16 and ann.num_partitions(10**9) == 4096


def test_cli_search_documents_the_ann_defaults():
    from click.testing import CliRunner

    from e5v.cli import cli

    from e5v.store import pg_ann

    out = " ".join(CliRunner().invoke(cli, ["search", "--help"]).output.split())  # help lines are wrapped
    assert f"at least {ann.MIN_NPROBES};" in out and f"[default: {ann.REFINE_FACTOR}]" in out
    assert f"PostgreSQL sqrt(lists), >= {pg_ann.MIN_PROBES}]" in out


def test_in_memory_exact_search_equals_lancedb_flat_scan(indexed, clustered):
    from e5v.store.search import search_in_memory, search_lance

    _, queries = clustered
    for q, filters in ((queries[0], []), (queries[1], ["kind = 'text'"]),
                       (queries[2], ["(json_get_int(metadata, 'group') = 2)", "kind = 'image'"])):
        mine = search_in_memory(indexed._table, indexed._exact, q, 10, filters)
        lance = search_lance(indexed._table, q, 10, filters, use_ann=False, nprobes=1, refine_factor=1)
        assert _ids(mine) == _ids(lance)
        assert [h["score"] for h in mine] == pytest.approx([h["score"] for h in lance], abs=1e-5)
        assert [h["metadata"] for h in mine] == [h["metadata"] for h in lance]


def test_exact_search_sees_commits_from_another_writer(model, tmp_path):
    rng = np.random.default_rng(3)
    dim = model.embedding_dim
    reader = Store.open(tmp_path / "db", config=model.embedding_config())
    first = _unit(rng.standard_normal(dim))
    reader.add_vectors([{"vector": first, "kind": "text", "hash": "1" * 32, "path": "first"}])
    assert reader.search(first, k=1)[0]["path"] == "first"  # vectors now cached for this version
    second = _unit(rng.standard_normal(dim))
    Store.open(tmp_path / "db", config=model.embedding_config()).add_vectors(
        [{"vector": second, "kind": "image", "hash": "2" * 32, "path": "second"}])
    top = reader.search(second, k=2)
    assert [h["path"] for h in top] == ["second", "first"]
    assert reader.search(second, k=5, kind="text")[0]["path"] == "first"
    assert reader.search(second, k=5, where="path = 'nothing'") == []


@pytest.mark.parametrize("option", ["--nprobes", "--refine-factor"])
def test_cli_search_refuses_non_positive_ann_tuning(option, tmp_path):
    from click.testing import CliRunner

    from e5v.cli import cli

    result = CliRunner().invoke(cli, ["search", "--db", str(tmp_path), "--text", "a dog", option, "0"])
    assert result.exit_code == 2 and option in result.output and "0" in result.output
