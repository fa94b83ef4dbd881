"""Estimated vs measured peak RSS of a torch CPU load, per dtype (the memory guard's estimate, e5v/backends/memory.py).

Each load runs in a fresh process (``common.run_worker``) and embeds one text and one image so the
activation part is exercised; the estimate is computed from the safetensors headers in the parent.

    python bench/load_memory.py [--model DIR] [--output bench/results/load_memory.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import BENCH_MODEL, emit, machine_note, peak_rss_mb, run_worker  # noqa: E402


def worker(model: str, dtype: str) -> None:
    from PIL import Image

    from e5v import E5V

    m = E5V.from_pretrained(model, dtype=dtype)
    loaded = peak_rss_mb()
    m.encode(["a dog runs in the grass", Image.new("RGB", (640, 480), (40, 120, 200))])
    # one forward pass at the full token budget: 8 texts of ~1000 tokens in one batch (8 x 1000 <= 8192)
    m.encode([" ".join(f"w{i}" for i in range(260))] * 8, batch_size=8)
    print(json.dumps({"loaded_mb": loaded, "peak_mb": peak_rss_mb(), "route": m.route}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(BENCH_MODEL))
    parser.add_argument("--output", default=None)
    parser.add_argument("--worker", default=None)
    args, rest = parser.parse_known_args()
    if args.worker:
        worker(args.model, args.worker)
        return
    import torch

    from e5v.backends.memory import estimate_torch
    from e5v.loading import load_components
    from e5v.preprocess import MAX_BATCH_TOKENS
    from e5v.testing import make_bench_model

    path = make_bench_model(args.model)
    hidden = load_components(path).config.text_config.hidden_size
    lines = [f"\n### Run ({machine_note()})", "", f"`python bench/load_memory.py --model {args.model}`", "",
             "| dtype | estimated peak | peak RSS after loading | peak RSS after a full-budget batch | estimate / "
             "measured |", "|---|---|---|---|---|"]
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        est = estimate_torch(path, dtype, hidden, MAX_BATCH_TOKENS).peak / 2**20
        got = run_worker(__file__, name, "--model", str(path))
        lines.append(f"| {name} | {est:,.0f} MB | {got['loaded_mb']:,.0f} MB | {got['peak_mb']:,.0f} MB | "
                     f"{est / got['peak_mb']:.2f} |")
    emit("\n".join(lines), args.output)


if __name__ == "__main__":
    main()
