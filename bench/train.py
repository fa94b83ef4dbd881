"""Training step time and peak memory of `e5v train` on a model with E5-V's real layer widths.

Model: e5v.testing.make_bench_model (Llama-3-8B widths, 2 of 32 decoder layers; only the language model
is loaded for training). Data: generated triplets. LoRA r=64 / alpha 16 on q,k,v,o,gate,up,down, as in
the paper. Each configuration trains in its own process (clean peak RSS); configurations run one after
another, in rounds, so drifting background load hits all alike. Baseline: fp32 without gradient
checkpointing.

    .venv/bin/python bench/train.py [--steps 4] [--batch-size 4] [--rounds 1] [--write bench/results/train.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_MODEL, emit, machine_note, peak_rss_mb, run_worker  # noqa: E402

CONFIGS = {
    "fp32": dict(precision="fp32", gradient_checkpointing=False),
    "fp32+grad-ckpt": dict(precision="fp32", gradient_checkpointing=True),
    "bf16+grad-ckpt": dict(precision="bf16", gradient_checkpointing=True),
}
TOPICS = ["dog", "cat", "car", "sky", "man", "woman", "food", "snow", "guitar", "beach"]
FILLERS = ("a the runs in grass sleeps on sofa red blue near house is bright street plays with two people busy "
           "down quick brown lazy").split()


def write_data(path: Path, n: int) -> None:
    import random

    rng = random.Random(0)
    with open(path, "w") as fh:
        for _ in range(n):
            t, u = rng.sample(TOPICS, 2)
            a, b = rng.sample(FILLERS, 12), rng.sample(FILLERS, 12)
            fh.write(json.dumps({"sent0": " ".join([t] + a), "sent1": " ".join([t] + b),
                                 "hard_neg": " ".join([u] + a)}) + "\n")


def worker(config: str, steps: int, batch_size: int) -> dict:
    import torch

    from e5v.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "d.jsonl"
        write_data(data, 256)
        train(TrainConfig(model=str(BENCH_MODEL), data=str(data), output=str(Path(tmp) / "out"),
                          max_steps=steps + 1, batch_size=batch_size, warmup_steps=1, save_every=10_000,
                          keep_checkpoints=1, show_progress=False, **CONFIGS[config]))
        log = [json.loads(line) for line in (Path(tmp) / "out" / "train_log.jsonl").read_text().splitlines()]
    deltas = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(log, log[1:])]  # step 1 (warm-up) excluded
    return {"config": config, "step_s": statistics.median(deltas), "peak_rss_mb": peak_rss_mb(),
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--write", help="append the markdown table to this file")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.batch_size)))
        return
    from e5v.testing import make_bench_model

    make_bench_model(BENCH_MODEL)
    note = machine_note()
    results: dict[str, dict] = {}
    for _ in range(args.rounds):
        for config in CONFIGS:
            r = run_worker(__file__, config, "--steps", str(args.steps), "--batch-size", str(args.batch_size))
            best = results.get(config)
            results[config] = r if best is None else {**r, "step_s": min(r["step_s"], best["step_s"]),
                                                      "peak_rss_mb": max(r["peak_rss_mb"], best["peak_rss_mb"])}
    base = results["fp32"]
    lines = [
        f"E5-V widths, 2 decoder layers, LoRA r=64 on 7 projections; {args.batch_size} triplets per step "
        f"(3 x {args.batch_size} sequences of ~30 tokens); median step time of {args.steps} steps after one "
        f"warm-up step, best of {args.rounds} round(s); peak RSS per configuration in its own process; {note}",
        "",
        "| config | s / step | speed vs fp32 | peak RSS (MB) | memory vs fp32 |",
        "|---|---|---|---|---|",
    ]
    for config, r in results.items():
        lines.append(f"| {config} | {r['step_s']:.2f} | {base['step_s'] / r['step_s']:.2f}x | "
                     f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x |")
    emit("\n".join(lines), args.write)


if __name__ == "__main__":
    main()
