"""Benchmark the e5v vector store (LanceDB) against a plain numpy matmul, side by side.

For each size N: N random unit vectors (D=4096, generated in chunks so RAM stays bounded) are inserted
into a store table in commits of ``--chunk`` rows; then top-10 queries run three ways:

  numpy   exact cosine by matmul (fp32 in RAM up to --numpy-ram-rows rows; past that a chunked scan of
          an fp16 memmap, converted chunk by chunk: 16 GB of fp32 for 1M x 4096 does not fit next to others)
  exact   the store's default brute-force search (LanceDB flat scan)
  ann     IVF_PQ index (e5v.store.ann defaults) with nprobes/refine as listed, recall@10 vs numpy exact

Queries are stored vectors plus Gaussian noise (cosine ~0.8 to their source), so each has one true
nearest neighbour; on uniformly random data the other 9 of the top 10 are near-ties, which is the worst
case for any ANN index. Recall is therefore reported as recall@1 and recall@10.

Usage:  .venv/bin/python bench/store.py --sizes 100000 [--out bench/results/store.md]
"""

from __future__ import annotations

import argparse
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from e5v.store import ann  # noqa: E402
from e5v.store.schema import TABLE, make_schema  # noqa: E402

D = 4096
K = 10


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, D), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


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

    def topk(self, q: np.ndarray, k: int = K) -> np.ndarray:
        if self.in_ram:
            s = self.m @ q
        else:
            s = np.concatenate([self.m[i:i + 65536].astype(np.float32) @ q for i in range(0, self.n, 65536)])
        top = np.argpartition(-s, k)[:k]
        return top[np.argsort(-s[top])]


def timed(fn, queries) -> tuple[list[float], list]:
    times, out = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        times.append(time.perf_counter() - t)
    return times, out


def recall(found: list[np.ndarray], truth: list[np.ndarray], k: int) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def run(n: int, args, workdir: Path) -> list[dict]:
    import lancedb

    rng = np.random.default_rng(0)
    db = lancedb.connect(workdir / "db")
    schema = make_schema(D, {"bench": True})
    schema = pa.schema([schema.field("id"), schema.field("vector")], metadata=schema.metadata)
    table = db.create_table(TABLE, schema=schema)
    base = NumpyBaseline(n, workdir, args.numpy_ram_rows)
    insert_s = 0.0
    for start in range(0, n, args.chunk):
        x = unit(rng, min(args.chunk, n - start))
        base.put(start, x)
        batch = pa.table({"id": pa.array(np.arange(start, start + len(x)).astype(str)),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), D)}, schema=schema)
        t = time.perf_counter()
        table.add(batch)
        insert_s += time.perf_counter() - t
    size_data = du(workdir / "db")
    print(f"[{n}] inserted in {insert_s:.1f}s ({n / insert_s:.0f} rows/s), {size_data / 1e9:.2f} GB", flush=True)

    src = rng.choice(n, args.queries, replace=False)
    noise = rng.standard_normal((args.queries, D), dtype=np.float32) * np.float32(0.75 / np.sqrt(D))
    qs = np.asarray(base.m[src], dtype=np.float32) + noise
    qs = (qs / np.linalg.norm(qs, axis=1, keepdims=True)).astype(np.float32)  # float64 here would make numpy
    # cast the whole matrix to float64 on every query (NEP 50: float32 array * np.float64 -> float64)
    nq_exact = min(args.queries, args.exact_queries)
    if not base.in_ram:
        qs = qs[:nq_exact]  # each chunked scan reads the whole memmap: bound the count

    np_t, truth = timed(base.topk, qs)
    print(f"[{n}] numpy p50 {pct(np_t, 50):.1f} ms", flush=True)

    def lance(q, nprobes=None, refine=None, exact=False):
        b = table.search(q).metric("cosine").limit(K).select(["id"])
        if exact:
            b = b.bypass_vector_index()
        if nprobes:
            b = b.nprobes(nprobes)
        if refine:
            b = b.refine_factor(refine)
        return np.asarray(b.to_arrow()["id"].to_pylist(), dtype=np.int64)

    ex_t, ex_out = timed(lambda q: lance(q, exact=True), qs[:nq_exact])
    print(f"[{n}] lance exact p50 {pct(ex_t, 50):.1f} ms", flush=True)

    params, build_s, size_index = None, float("nan"), float("nan")
    if args.ann_settings:
        t = time.perf_counter()
        params = ann.build_ann(table, D)
        build_s = time.perf_counter() - t
        size_index = du(workdir / "db")
        print(f"[{n}] index {params} built in {build_s:.0f}s", flush=True)

    rows = [
        {"n": n, "method": "numpy matmul" + (" (fp32 RAM)" if base.in_ram else " (fp16 memmap, chunked)"),
         "p50": pct(np_t, 50), "p99": pct(np_t, 99), "r1": 1.0, "r10": 1.0, "q": len(qs)},
        {"n": n, "method": "store exact (flat scan)", "p50": pct(ex_t, 50), "p99": pct(ex_t, 99),
         "r1": recall(ex_out, truth, 1), "r10": recall(ex_out, truth, K), "q": nq_exact},
    ]
    for nprobes, refine in args.ann_settings:
        lance(qs[0], nprobes, refine)  # warm the index cache
        an_t, an_out = timed(lambda q: lance(q, nprobes, refine), qs)
        rows.append({"n": n, "method": f"store ANN nprobes={nprobes} refine={refine}", "p50": pct(an_t, 50),
                     "p99": pct(an_t, 99), "r1": recall(an_out, truth, 1), "r10": recall(an_out, truth, K),
                     "q": len(qs)})
        print(f"[{n}] {rows[-1]}", flush=True)
    for r in rows:
        r.update(insert_rate=n / insert_s, build_s=build_s, disk_data=size_data, disk_index=size_index,
                 params=params)
    return rows


def table_md(rows: list[dict]) -> str:
    out = ["| N | method | queries | top-10 p50 ms | p99 ms | x numpy p50 | recall@1 | recall@10 |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next(x for x in rows if x["n"] == r["n"] and x["method"].startswith("numpy"))
        out.append(f"| {r['n']:,} | {r['method']} | {r['q']} | {r['p50']:.1f} | {r['p99']:.1f} | "
                   f"{base['p50'] / r['p50']:.2f}x | {r['r1']:.3f} | {r['r10']:.3f} |")
    out += ["", "| N | insert rows/s | disk (data) | disk (data+index) | index build s | index params |",
            "|---|---|---|---|---|---|"]
    for n in sorted({r["n"] for r in rows}):
        r = next(x for x in rows if x["n"] == n)
        out.append(f"| {n:,} | {r['insert_rate']:,.0f} | {r['disk_data'] / 1e9:.2f} GB | "
                   f"{r['disk_index'] / 1e9:.2f} GB | {r['build_s']:.0f} | {r['params']} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--chunk", type=int, default=10_000, help="rows per insert commit")
    p.add_argument("--numpy-ram-rows", type=int, default=200_000,
                   help="above this the numpy baseline scans an fp16 memmap in chunks")
    p.add_argument("--ann", dest="ann_settings", type=lambda s: tuple(int(x) for x in s.split(",")), nargs="+",
                   default=[(ann.NPROBES, ann.REFINE_FACTOR), (64, 50)], help="nprobes,refine pairs")
    p.add_argument("--no-ann", dest="ann_settings", action="store_const", const=[],
                   help="skip building and querying the ANN index (exact search and insert only)")
    p.add_argument("--exact-queries", type=int, default=100,
                   help="queries for the exact scans (the chunked numpy baseline uses only this many)")
    p.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir, removed)")
    p.add_argument("--out", default=None, help="append the markdown table to this file")
    args = p.parse_args()
    rows = []
    for n in args.sizes:
        work = Path(tempfile.mkdtemp(prefix=f"e5v-bench-{n}-", dir=args.workdir))
        try:
            rows += run(n, args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    md = table_md(rows)
    md += (f"\n\nPeak RSS {peak_rss_gb():.1f} GB; {platform.processor() or platform.machine()}, "
           f"{__import__('os').cpu_count()} cores; command: `{' '.join(['.venv/bin/python'] + sys.argv)}`\n")
    print(md)
    if args.out:
        with open(args.out, "a") as f:
            f.write(md + "\n")


if __name__ == "__main__":
    main()
