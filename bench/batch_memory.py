"""Peak RSS of one ``encode`` of anyres images with batch_size=8, with and without the token budget.

Why: activation memory grows with the padded tokens of one forward pass, and an anyres image is ~2.4k
tokens, so ``batch_size=8`` on images meant ~19k tokens at once. The encoder now cuts batches at
``E5V.max_batch_tokens`` (8192 by default). This measures both settings side by side in one run, each in
its own process (clean peak RSS), on the benchmark model (E5-V's widths, random weights), and checks the
vectors agree.

    .venv/bin/python bench/batch_memory.py [--images 6] [--write bench/results/batch_memory.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# bench/ holds a script named openvino.py: with bench/ on sys.path, `import openvino` would import it.
# So common.py is imported with bench/ on the path only for that import.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE))
from common import BENCH_MODEL, emit, machine_note, peak_rss_mb, run_worker  # noqa: E402

sys.path.remove(str(_HERE))

EXPORTS = Path(os.environ.get("E5V_BENCH_OV", "/tmp/e5v-bench-ov"))
UNBOUNDED = 10 ** 9  # the behaviour before the budget: only batch_size limits a batch
CONFIGS = ["ov-int8", "torch-fp32"]


def images(n: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)  # 1008 x 336..436: 2.3-2.4k tokens each, similar enough to share a batch
    return [Image.fromarray(rng.integers(0, 255, (336 + 20 * i, 1008, 3), dtype=np.uint8)) for i in range(n)]


def worker(config: str, budget: int, n: int, out: str) -> dict:
    import numpy as np

    from e5v import E5V

    backend, _, weights = config.partition("-")
    path = BENCH_MODEL if backend == "torch" else EXPORTS / weights
    model = E5V.from_pretrained(path, backend="torch" if backend == "torch" else "openvino")
    model.max_batch_tokens = budget
    passes = []  # counted, not derived: one entry per language-model forward pass
    forward = model.backend.hidden_states
    model.backend.hidden_states = lambda *a: passes.append(1) or forward(*a)
    start = time.perf_counter()
    vectors = model.encode(images(n), batch_size=8)
    seconds = time.perf_counter() - start
    np.save(out, vectors)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "passes": len(passes)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker")
    parser.add_argument("--budget", type=int, default=0)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--out", default="")
    parser.add_argument("--write", default="")
    args = parser.parse_args()
    if args.worker:
        import json

        print(json.dumps(worker(args.worker, args.budget, args.images, args.out)))
        return
    import numpy as np

    from e5v.preprocess import MAX_BATCH_TOKENS
    from e5v.testing import make_bench_model

    note = machine_note()
    make_bench_model(BENCH_MODEL)
    if not (EXPORTS / "int8" / "e5v_manifest.json").is_file():
        from e5v.export import export_openvino

        export_openvino(str(BENCH_MODEL), EXPORTS / "int8", weights="int8", log=lambda m: None)
    lines = [f"Machine: {note}. {args.images} anyres images (1008 x 336..436, 2.3-2.4k tokens each), "
             "`encode(images, batch_size=8)`, one process per row.", "",
             "| config | max_batch_tokens | forward passes | s | peak RSS MB | vs unbounded (RSS) | min cos to unbounded |",
             "|---|---|---|---|---|---|---|"]
    for config in CONFIGS:
        rows = {}
        for budget in (UNBOUNDED, MAX_BATCH_TOKENS):
            out = f"/tmp/e5v-bench-batchmem-{config}-{budget}.npy"
            rows[budget] = run_worker(__file__, config, "--budget", str(budget), "--images", str(args.images),
                                      "--out", out)
            rows[budget]["vectors"] = np.load(out)
        for budget, r in rows.items():
            cos = float((r["vectors"] * rows[UNBOUNDED]["vectors"]).sum(1).min())
            lines.append(f"| {config} | {'none' if budget == UNBOUNDED else budget} | {r['passes']} | {r['seconds']:.1f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / rows[UNBOUNDED]['peak_rss_mb']:.2f}x | "
                         f"{cos:.7f} |")
    emit("\n".join(lines), args.write, append=False)


if __name__ == "__main__":
    main()
