"""`e5v eval sts` on the real STS-B test file: cold run vs re-runs served by the embedding cache.

Model: e5v.testing.make_bench_model (E5-V's real layer widths, 2 decoder + 2 vision layers; random
weights, so the Spearman printed is meaningless and is not reported as a quality number). Each run is
a fresh process running the CLI, so its peak RSS is its own. Baseline = the same command with
--no-cache, measured in the same invocation.

    .venv/bin/python bench/eval.py [--limit 100] [--write bench/results/eval.md]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_MODEL, machine_note, peak_rss_mb, run_worker  # noqa: E402

STSB = Path(__file__).resolve().parent.parent / "../shared/data/stsbenchmark/sts-test.csv"


def worker(args: list[str]) -> None:
    """Run one `e5v eval ...` in this process; print wall time and peak RSS as JSON."""
    from e5v.cli import cli

    start = time.perf_counter()
    try:
        cli.main(["eval", *args], standalone_mode=False)
    finally:
        elapsed = time.perf_counter() - start
    print(json.dumps({"seconds": elapsed, "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=100, help="STS-B pairs (2 sentences each)")
    parser.add_argument("--write", type=Path, default=None)
    opts = parser.parse_args()
    if not STSB.is_file():
        sys.exit(f"STS-B test file not found: {STSB}")
    from e5v.testing import make_bench_model

    make_bench_model(BENCH_MODEL)
    note = machine_note()
    cache = Path(tempfile.mkdtemp(prefix="e5v-eval-bench-"))
    common = ["sts", "--data", str(STSB), "--limit", str(opts.limit), "--model", str(BENCH_MODEL), "--no-progress"]
    runs = [
        ("no cache (baseline)", [*common, "--no-cache"]),
        ("cold cache (embeds, writes cache)", [*common, "--cache-dir", str(cache)]),
        ("warm cache (all cached, model not loaded)", [*common, "--cache-dir", str(cache)]),
        ("warm cache, --batch-size 4 (same vectors)", [*common, "--cache-dir", str(cache), "--batch-size", "4"]),
    ]
    try:
        results = [(name, run_worker(__file__, json.dumps(args))) for name, args in runs]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    base = results[0][1]["seconds"]
    lines = [f"`e5v eval sts` on STS-B test, first {opts.limit} pairs, bench model ({note})", "",
             "| run | wall s | vs no-cache | peak RSS MB |", "|---|---:|---:|---:|"]
    for name, r in results:
        lines.append(f"| {name} | {r['seconds']:.2f} | {r['seconds'] / base:.3f}x | {r['peak_rss_mb']:.0f} |")
    table = "\n".join(lines)
    print(table)
    if opts.write:
        command = f".venv/bin/python bench/eval.py --limit {opts.limit}" + (f" --write {opts.write}" if opts.write else "")
        opts.write.parent.mkdir(parents=True, exist_ok=True)
        opts.write.write_text(
            f"# e5v eval: embedding cache\n\nCommand: `{command}`\n\n{table}\n\n"
            "Each run is a fresh process running the CLI. Random-weight bench model: the Spearman it prints is\n"
            "meaningless and not reported. The machine may be shared with other jobs (load average above);\n"
            "compare the ratios, not the absolute times. Warm runs read vectors only (the weights are never\n"
            "loaded); their time is mostly Python, numpy and scipy imports.\n")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
    else:
        main()
