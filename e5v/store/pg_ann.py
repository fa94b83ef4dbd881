"""The PostgreSQL store's ANN indexes, each followed by an exact re-rank: HNSW (the default) over binary codes,
or IVFFlat over a halfvec of the first ``PREFIX_DIMS`` dims.

pgvector indexes at most 2,000 dims of ``vector`` and 4,000 of ``halfvec``, and E5-V has 4,096, so neither
indexes the vectors themselves. HNSW indexes ``binary_quantize(vector)::bit(dim)`` with Hamming distance (512 B a
row); IVFFlat indexes ``subvector(vector, 1, 1024)::halfvec(1024)`` with cosine distance (2 KB a row). A search
asks the index for ``refine_factor * k`` candidates by its own distance and re-ranks them by exact cosine on the
full vectors, so the scores returned are exact either way.

Why, measured on 1M clustered 4,096-d vectors (10,000 clusters, bench/results/store.md; 2 cores, AMD Zen 5):
the 1-bit codes rank well (the exact Hamming top-200, re-ranked, holds the exact top-10 of every query), and
HNSW with m 32 / ef_construction 96 finds them: recall@10 **0.992 at 33 ms p50** at the default 200 candidates
(LanceDB IVF_RQ on the same data: 0.971-0.985 at ~36 ms), built in 759 s, 1.0 GB. With m 16 / ef_construction
64 the graph linked the clusters too sparsely (0.735, 0.81 even at pgvector's 1,000-candidate ceiling).
IVFFlat (``kind="ivfflat"``, ``nprobes``) is the lighter build (140 s) at lower recall there: 0.844 at 32 of
1,000 lists (46 ms), and over binary codes it was worse still (0.632). PostgreSQL maintains both kinds on every
insert, but IVFFlat's lists keep the centroids of the rows present when it was built (rebuild after the table
has grown several times over; ``build_ann(rebuild=True)``); HNSW has no such staleness.

A table keeps one ANN index: building another kind builds it concurrently, then drops the old one. A search
spells the candidate query for the kind it last read (``PgStore.ann_index``, cached 5 s); right after a switch
by another process the planner finds no matching index and scans, slower but with the same answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

KINDS = ("ivfflat", "hnsw")
DEFAULT_KIND = "hnsw"
HNSW_M = 32  # 16 / 64 lost the clusters at 1M rows (recall@10 0.735); see the module docstring
HNSW_EF_CONSTRUCTION = 96
MAX_EF_SEARCH = 1000  # pgvector's ceiling for hnsw.ef_search
MAX_LISTS = 32768  # pgvector's ceiling for ivfflat lists
MIN_PROBES = 10
PREFIX_DIMS = 1024  # IVFFlat indexes the first 1024 dims as halfvec (2 KB a row); see the module docstring
ITERATIVE_SCAN = (0, 8, 0)  # pgvector that fills k under a filter (hnsw/ivfflat.iterative_scan)


@dataclass(frozen=True)
class AnnIndex:
    """The valid ANN index a table has: its kind, name and (IVFFlat) number of lists."""

    kind: str
    name: str
    lists: int | None = None


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"ANN index kind must be one of {KINDS}, got {kind!r}")
    return kind


#: Index name suffix per kind: what the index holds (binary codes / a float prefix) and its type.
_NAME_TAGS = {"ivfflat": "pf_ivfflat", "hnsw": "bq_hnsw"}
_OPCLASSES = {"ivfflat": "halfvec_cosine_ops", "hnsw": "bit_hamming_ops"}
_OPERATORS = {"ivfflat": "<=>", "hnsw": "<~>"}


def index_name(table: str, kind: str) -> str:
    return f"{table}_{_NAME_TAGS[check_kind(kind)]}"


def indexed(kind: str, dim: int, operand: str = "vector") -> str:
    """The indexed expression of ``kind``; a query must spell it the same way for the planner to use the index."""
    if check_kind(kind) == "hnsw":
        return f"binary_quantize({operand})::bit({int(dim)})"
    n = min(int(dim), PREFIX_DIMS)
    return f"subvector({operand}, 1, {n})::halfvec({n})"


def candidate_order(kind: str, dim: int) -> str:
    """ORDER BY of the candidate query: the index's own distance to the query (one ``%s`` for the query)."""
    return f"{indexed(kind, dim)} {_OPERATORS[check_kind(kind)]} {indexed(kind, dim, '%s::vector')}"


def num_lists(n_rows: int) -> int:
    """pgvector's guidance: rows / 1000 up to a million rows, sqrt(rows) beyond; at least 10."""
    lists = n_rows // 1000 if n_rows <= 1_000_000 else int(math.sqrt(n_rows))
    return max(10, min(MAX_LISTS, lists))


def default_probes(lists: int) -> int:
    """Lists scanned per query: sqrt(lists) (pgvector's starting point), at least MIN_PROBES (10 of 1000 at 1M
    would be 1% of the rows: too few where a query's neighbours straddle lists)."""
    return min(lists, max(MIN_PROBES, math.ceil(math.sqrt(lists))))


def ddl(table: str, dim: int, kind: str, n_rows: int) -> str:
    """CREATE INDEX CONCURRENTLY for ``kind`` on a table of about ``n_rows`` rows."""
    target = f"(({indexed(kind, dim)}) {_OPCLASSES[kind]})"
    if check_kind(kind) == "hnsw":
        options = f"m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}"
    else:
        options = f"lists = {num_lists(n_rows)}"
    return f"CREATE INDEX CONCURRENTLY {index_name(table, kind)} ON {table} USING {kind} {target} WITH ({options})"


def describe(index: AnnIndex, dim: int) -> dict[str, Any]:
    """The parameters of ``index`` as plain data (``build_ann``'s return, reports, benchmarks)."""
    if index.kind == "hnsw":
        return {"index_type": "HNSW", "quantization": "binary", "metric": "hamming, re-ranked by cosine", "dim": dim,
                "m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}
    prefix = min(dim, PREFIX_DIMS)
    return {"index_type": "IVFFLAT", "quantization": f"halfvec of the first {prefix} dims",
            "metric": f"cosine on {prefix} dims, re-ranked by cosine", "dim": dim, "lists": index.lists,
            "probes": default_probes(index.lists or 10)}


def search_settings(index: AnnIndex, candidates: int, nprobes: int | None, ef_search: int | None,
                    pgvector: tuple[int, ...]) -> dict[str, str]:
    """Transaction-local settings for one ANN search; ValueError for the other index kind's tuning knob.

    Both kinds' settings are given, so a search is tuned whichever index the planner finds (another process
    may have switched the kind since ``index`` was read). The index is what the caller chose (``exact=True``
    is the scan): on small tables the planner would sort every row's code instead, slower past a few thousand
    rows and not what was asked.
    """
    if index.kind == "hnsw" and nprobes is not None:
        raise ValueError("nprobes tunes an IVF index; this store's ANN index is HNSW, which takes ef_search "
                         "(or rebuild it with build_ann(kind='ivfflat'))")
    if index.kind == "ivfflat" and ef_search is not None:
        raise ValueError("ef_search tunes an HNSW index; this store's ANN index is IVFFlat, which takes nprobes")
    lists = index.lists or num_lists(1_000_000)  # unknown when the index was HNSW a moment ago
    settings = {"enable_seqscan": "off",
                "hnsw.ef_search": str(min(MAX_EF_SEARCH, max(40, ef_search or candidates))),
                "ivfflat.probes": str(min(lists, nprobes or default_probes(lists)))}
    if pgvector >= ITERATIVE_SCAN:  # a filter that rejects most candidates makes the index search further
        settings |= {"hnsw.iterative_scan": "relaxed_order", "ivfflat.iterative_scan": "relaxed_order",
                     "ivfflat.max_probes": str(index.lists or MAX_LISTS)}
    return settings


def current(conn: Any, table: str) -> tuple[AnnIndex | None, list[str]]:
    """(the table's valid ANN index or None, names of its invalid ones: left by an interrupted build).

    Two valid ones exist only while a switch drops the old one: the newer (higher oid) is the one asked for."""
    names = [index_name(table, kind) for kind in KINDS]
    rows = conn.execute("SELECT c.relname, i.indisvalid, c.reloptions FROM pg_index i JOIN pg_class c "
                        "ON c.oid = i.indexrelid WHERE i.indexrelid = ANY(ARRAY[to_regclass(%s), to_regclass(%s)]) "
                        "ORDER BY c.oid", names).fetchall()
    valid = [AnnIndex(KINDS[names.index(name)], name, _lists(options)) for name, ok, options in rows if ok]
    return (valid[-1] if valid else None), [name for name, ok, _ in rows if not ok]


def _lists(reloptions: list[str] | None) -> int | None:
    options = dict(o.split("=", 1) for o in (reloptions or []))
    return int(options["lists"]) if "lists" in options else None


def build(conn: Any, table: str, dim: int, kind: str | None, build_memory: str, rebuild: bool = False) -> AnnIndex:
    """Make ``kind`` the table's one ANN index (concurrently: writers and searches go on); returns it.

    ``kind`` None keeps the kind the table has (else ``DEFAULT_KIND``). A valid index of that kind is kept
    unless ``rebuild``; invalid leftovers of an interrupted build are dropped first; an index of the other kind
    is dropped only after the new one is valid.
    """
    existing, invalid = current(conn, table)
    kind = check_kind(kind or (existing.kind if existing else DEFAULT_KIND))
    for name in invalid:
        conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    name = index_name(table, kind)
    if existing is not None and existing.kind == kind and rebuild:
        conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")  # searches fall back to the scan meanwhile
        existing = None
    if existing is None or existing.kind != kind:
        conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (build_memory,))
        try:
            n_rows = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]) if kind == "ivfflat" else 0
            conn.execute(ddl(table, dim, kind, n_rows))  # only IVFFlat's lists depend on the rows
        except Exception:
            conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")  # a failed concurrent build leaves it INVALID
            raise
        finally:
            conn.execute("RESET maintenance_work_mem")
    for other in KINDS:
        if other != kind:
            conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index_name(table, other)}")
    built, _ = current(conn, table)
    assert built is not None and built.kind == kind, built
    return built
