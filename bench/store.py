"""Benchmark the e5v vector store (LanceDB) against a plain numpy matmul, side by side.

For each data regime and size N: N random unit vectors (D=4096, generated chunk by chunk from a seed so
RAM stays bounded) are inserted into a store table in commits of ``--chunk`` rows; then top-10 queries
run three ways:

  numpy   exact cosine by matmul (fp32 in RAM up to --numpy-ram-rows rows; past that a chunked scan of
          an fp16 memmap, converted chunk by chunk)
  exact   LanceDB's flat scan, and (up to e5v.store.exact.MAX_ROWS rows) the store's in-memory exact search
  ann     the store's ANN index (``e5v.store.ann`` defaults: IVF_RQ + exact re-ranking) at the listed
          nprobes/refine settings; recall@10 against the numpy exact top-10 of the same queries

Data regimes (``--data``):

  clustered  unit vectors drawn around N/100 random centres (cosine ~0.7 to their centre, ~0.5 between
             members of one centre), queries fresh draws around random centres: every query has a real
             top-10, as embeddings of real collections do (near-duplicates, same object, same topic).
  uniform    uniformly random unit vectors; queries are stored vectors plus noise (cosine ~0.8 to their
             source). Only the top-1 is meaningful: the other 9 of the exact top-10 are near-ties at
             cosine ~0.06 among N unrelated vectors, which no index can find without scanning
             everything (recall@10 there measures the index's ability to rank noise).

With ``--pgvector`` the same vectors and queries also go through e5v's PostgreSQL store (``bench/store_pg.py``:
binary COPY inserts, exact seq scan, HNSW on binary codes + exact re-rank), side by side in the same run.

Usage:  .venv/bin/python bench/store.py --data clustered uniform --sizes 100000 [--pgvector] [--out bench/results/store.md]
"""

from __future__ import annotations

import argparse
import itertools
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import emit, machine_note  # noqa: E402
from e5v.store import ann  # noqa: E402
from e5v.store.exact import MAX_ROWS as EXACT_RAM_ROWS, ExactIndex  # noqa: E402
from e5v.store.schema import TABLE, make_schema  # noqa: E402

D = 4096
K = 10


def normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Data:
    """Deterministic chunks of unit vectors and the matching queries for one regime."""

    SPREAD = np.float32(1.02 / np.sqrt(D))  # clustered: cosine ~0.7 between a member and its centre

    def __init__(self, regime: str, n: int, seed: int = 0):
        self.regime, self.n, self.seed = regime, n, seed
        if regime == "clustered":
            rng = np.random.default_rng([seed, 1])
            self.centres = normalize(rng.standard_normal((max(1, n // 100), D), dtype=np.float32))

    def chunk(self, index: int, size: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 2, index])
        noise = rng.standard_normal((size, D), dtype=np.float32)
        if self.regime == "uniform":
            return normalize(noise)
        return normalize(self.centres[rng.integers(0, len(self.centres), size)] + noise * self.SPREAD)

    def queries(self, count: int, stored) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 3])
        noise = rng.standard_normal((count, D), dtype=np.float32)
        if self.regime == "uniform":  # near-duplicates of stored vectors; float32 throughout (NEP 50: a
            src = np.sort(rng.choice(self.n, count, replace=False))  # float64 query casts the whole matrix)
            return normalize(np.asarray(stored[src], dtype=np.float32) + noise * np.float32(0.75 / np.sqrt(D)))
        return normalize(self.centres[rng.integers(0, len(self.centres), count)] + noise * self.SPREAD)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


class NumpyBaseline:
    """Exact top-k by matmul: fp32 matrix in RAM, or a chunked fp16 memmap past ``ram_rows``."""

    def __init__(self, n: int, workdir: Path, ram_rows: int):
        self.in_ram = n <= ram_rows
        self.n = n
        if self.in_ram:
            self.m = np.empty((n, D), np.float32)
        else:
            self.m = np.lib.format.open_memmap(workdir / "baseline.f16.npy", "w+", np.float16, (n, D))

    def put(self, start: int, x: np.ndarray) -> None:
        self.m[start:start + len(x)] = x

    def scores(self, q: np.ndarray) -> np.ndarray:
        """(N,) for one query, (N, Q) for a (Q, D) block: the block form is one pass for all queries."""
        qt = q.T
        if self.in_ram:
            return self.m @ qt
        return np.concatenate([self.m[i:i + 65536].astype(np.float32) @ qt for i in range(0, self.n, 65536)])

    def topk(self, q: np.ndarray, k: int = K) -> np.ndarray:
        s = self.scores(q)
        top = np.argpartition(-s, k)[:k]
        return top[np.argsort(-s[top])]

    def truth(self, qs: np.ndarray, k: int = K) -> list[np.ndarray]:
        s = self.scores(qs)  # (N, Q)
        out = []
        for j in range(s.shape[1]):
            top = np.argpartition(-s[:, j], k)[:k]
            out.append(top[np.argsort(-s[top, j])])
        return out


def timed(fn, queries) -> tuple[list[float], list]:
    times, out = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        times.append(time.perf_counter() - t)
    return times, out


def recall(found: list[np.ndarray], truth: list[np.ndarray], k: int) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def run(regime: str, n: int, args, workdir: Path) -> list[dict]:
    import lancedb

    data = Data(regime, n)
    db = lancedb.connect(workdir / "db")
    schema = make_schema(D, {"bench": True})
    schema = pa.schema([schema.field("id"), schema.field("vector")], metadata=schema.metadata)
    table = db.create_table(TABLE, schema=schema)
    base = NumpyBaseline(n, workdir, args.numpy_ram_rows)
    insert_s = 0.0
    for start in range(0, n, args.chunk):
        x = data.chunk(start // args.chunk, min(args.chunk, n - start))
        base.put(start, x)
        batch = pa.table({"id": pa.array(np.arange(start, start + len(x)).astype(str)),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), D)}, schema=schema)
        t = time.perf_counter()
        table.add(batch)
        insert_s += time.perf_counter() - t
    size_data = du(workdir / "db")
    print(f"[{regime} {n}] inserted in {insert_s:.1f}s ({n / insert_s:.0f} rows/s), {size_data / 1e9:.2f} GB", flush=True)

    qs = data.queries(args.queries, base.m)
    truth = base.truth(qs)  # exact top-10 of every query, one pass over the matrix
    nq_exact = min(args.queries, args.exact_queries)
    np_t, np_out = timed(base.topk, qs[:nq_exact])  # latency of the plain baseline, one query at a time
    assert all((a == b).all() for a, b in zip(np_out, truth))
    print(f"[{regime} {n}] numpy p50 {pct(np_t, 50):.1f} ms", flush=True)

    def lance(q, nprobes=None, refine=None, exact=False):
        b = table.search(q).metric("cosine").limit(K).select(["id"])
        if exact:
            b = b.bypass_vector_index()
        if nprobes:
            b = b.nprobes(nprobes)
        if refine:
            b = b.refine_factor(refine)
        return np.asarray(b.to_arrow()["id"].to_pylist(), dtype=np.int64)

    numpy_kind = "numpy matmul" + (" (fp32 RAM)" if base.in_ram else " (fp16 memmap, chunked)")
    del base  # the rest needs only the truth: free the matrix (16 GB at 1M) before LanceDB scans and indexes
    ex_t, ex_out = timed(lambda q: lance(q, exact=True), qs[:nq_exact])
    print(f"[{regime} {n}] lance exact p50 {pct(ex_t, 50):.1f} ms", flush=True)
    mem_rows = []
    if n <= EXACT_RAM_ROWS:  # the store's own exact path at this size: an in-memory copy read once
        cache, t = ExactIndex(), time.perf_counter()
        cache.ensure(table)
        load_s = time.perf_counter() - t
        mem_t, mem_out = timed(lambda q: np.asarray([int(i) for i, _ in cache.top_k(q, K)]), qs)
        mem_rows.append({"n": n, "method": f"store exact (in-memory copy; first query +{load_s:.1f} s to read it)",
                         "p50": pct(mem_t, 50), "p99": pct(mem_t, 99), "r1": recall(mem_out, truth, 1),
                         "r10": recall(mem_out, truth, K), "q": len(qs)})
        del cache

    params, build_s, size_index = None, float("nan"), float("nan")
    if args.ann_settings:
        t = time.perf_counter()
        params = {k: v for k, v in ann.build_ann(table, D).items() if k not in ("dim", "metric")}
        build_s = time.perf_counter() - t
        size_index = du(workdir / "db")
        print(f"[{regime} {n}] index {params} built in {build_s:.0f}s", flush=True)

    rows = [
        {"n": n, "method": numpy_kind,
         "p50": pct(np_t, 50), "p99": pct(np_t, 99), "r1": 1.0, "r10": 1.0, "q": nq_exact},
        {"n": n, "method": "LanceDB exact (flat scan)", "p50": pct(ex_t, 50), "p99": pct(ex_t, 99),
         "r1": recall(ex_out, truth, 1), "r10": recall(ex_out, truth, K), "q": nq_exact},
    ] + mem_rows
    for nprobes, refine in args.ann_settings:
        default = nprobes == 0 and refine == ann.REFINE_FACTOR
        nprobes = nprobes or ann.default_nprobes(n)
        lance(qs[0], nprobes, refine)  # warm the index cache
        an_t, an_out = timed(lambda q: lance(q, nprobes, refine), qs)
        rows.append({"n": n, "method": f"store ANN nprobes={nprobes} refine={refine}" + (" (default)" if default else ""), "p50": pct(an_t, 50),
                     "p99": pct(an_t, 99), "r1": recall(an_out, truth, 1), "r10": recall(an_out, truth, K),
                     "q": len(qs)})
        print(f"[{regime} {n}] {rows[-1]}", flush=True)
    for r in rows:
        r.update(data=regime, insert_rate=n / insert_s, build_s=build_s, disk_data=size_data, disk_index=size_index,
                 params=params, backend="LanceDB")
    if args.pgvector:
        from store_pg import run_pg

        del table, db
        shutil.rmtree(workdir / "db", ignore_errors=True)  # the LanceDB copy's disk (16 GB at 1M) before PostgreSQL's

        rows += run_pg(regime, n, args, data, qs, truth, nq_exact, timed, pct, recall, D, K)
    return rows


def table_md(rows: list[dict]) -> str:
    out = ["| data | N | method | queries | top-10 p50 ms | p99 ms | x numpy p50 | recall@1 | recall@10 |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next(x for x in rows if (x["data"], x["n"]) == (r["data"], r["n"]) and x["method"].startswith("numpy"))
        out.append(f"| {r['data']} | {r['n']:,} | {r['method']} | {r['q']} | {r['p50']:.1f} | {r['p99']:.1f} | "
                   f"{base['p50'] / r['p50']:.2f}x | {r['r1']:.3f} | {r['r10']:.3f} |")
    out += ["", "| data | N | store | insert rows/s | disk (data) | disk (data+index) | index build s | index params |",
            "|---|---|---|---|---|---|---|---|"]
    for key in dict.fromkeys((r["data"], r["n"], r["backend"]) for r in rows):
        r = next(x for x in rows if (x["data"], x["n"], x["backend"]) == key)
        out.append(f"| {key[0]} | {key[1]:,} | {key[2]} | {r['insert_rate']:,.0f} | {r['disk_data'] / 1e9:.2f} GB | "
                   f"{r['disk_index'] / 1e9:.2f} GB | {r['build_s']:.0f} | {r['params']} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    p.add_argument("--data", nargs="+", choices=["clustered", "uniform"], default=["clustered", "uniform"])
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--chunk", type=int, default=10_000, help="rows per insert commit")
    p.add_argument("--numpy-ram-rows", type=int, default=200_000,
                   help="above this the numpy baseline scans an fp16 memmap in chunks")
    p.add_argument("--ann", dest="ann_settings", type=lambda s: tuple(int(x) for x in s.split(",")), nargs="+",
                   default=[(0, ann.REFINE_FACTOR), (20, 10), (100, 40)], help="nprobes,refine pairs (nprobes 0: the store's default for N)")
    p.add_argument("--no-ann", dest="ann_settings", action="store_const", const=[],
                   help="skip building and querying the ANN index (exact search and insert only)")
    p.add_argument("--exact-queries", type=int, default=100,
                   help="queries for the exact scans (the chunked numpy baseline uses only this many)")
    p.add_argument("--pgvector", action="store_true",
                   help="also run e5v's PostgreSQL + pgvector store on the same vectors (bench/store_pg.py)")
    p.add_argument("--pg-refine", type=int, nargs="+", default=[10, ann.REFINE_FACTOR, 40],
                   help="pgvector HNSW: candidates = refine x k from the index, re-ranked exactly")
    p.add_argument("--pg-index", nargs="+", choices=["ivfflat", "hnsw"], default=["ivfflat", "hnsw"],
                   help="pgvector: the ANN index kinds to build and query, in this order")
    p.add_argument("--pg-hnsw", type=int, nargs=2, metavar=("M", "EF_CONSTRUCTION"), default=None,
                   help="pgvector HNSW build parameters (default: the store's, e5v.store.pg_ann)")
    p.add_argument("--pg-probes", type=int, nargs="+", default=[0],
                   help="pgvector IVFFlat: lists probed (0: the store's default)")
    p.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir, removed)")
    p.add_argument("--out", default=None, help="append the markdown table to this file")
    args = p.parse_args()
    rows = []
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    for regime, n in itertools.product(args.data, args.sizes):
        work = Path(tempfile.mkdtemp(prefix=f"e5v-bench-{regime}-{n}-", dir=args.workdir))
        try:
            rows += run(regime, n, args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    md = table_md(rows)
    pg = "; PostgreSQL settings " + str(__import__("store_pg").SETTINGS) if args.pgvector else ""
    md += (f"\n\nPeak RSS of the bench process {peak_rss_gb():.1f} GB; {machine_note()}{pg}; command: `{' '.join(['.venv/bin/python'] + sys.argv)}`\n")
    emit(md, args.out)


if __name__ == "__main__":
    main()
