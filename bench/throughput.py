"""Reference recipe vs E5V.encode (torch backend), same model, same inputs, one run.

Model: E5-V's real layer shapes (Llama-3-8B widths, CLIP-L tower) with every depth scaled by 1/16
(2 of 32 decoder layers, 2 of 24 vision layers) and the vocabulary scaled so the lm_head keeps its ~7%
share of the compute (e5v.testing.make_bench_model). Each configuration runs in its own process so its
peak RSS is its own.

    .venv/bin/python bench/throughput.py [--texts 32] [--images 2] [--write BENCHMARKS-section.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import BENCH_MODEL, emit, machine_note, peak_rss_mb, run_worker, timed  # noqa: E402

WORDS = ("a dog runs across the wet grass while two children chase it near the old stone bridge at "
         "sunset and a man in a red coat watches from a bench reading the morning newspaper").split()


def texts(n: int) -> list[str]:
    """Mixed lengths, 3 to ~120 words, deterministic."""
    out = []
    for i in range(n):
        length = 3 + (i * 37) % 118
        out.append(" ".join(WORDS[(i + j) % len(WORDS)] for j in range(length)))
    return out


def images(n: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(640, 480), (1008, 336), (336, 336), (480, 640)]
    return [Image.fromarray(rng.integers(0, 255, (s[1], s[0], 3), dtype=np.uint8)) for s in
            (sizes[i % len(sizes)] for i in range(n))]


def _runners(config: str, batch_texts, batch_images, batch_size: int):
    """(run_texts, run_images) closures for one configuration, model loaded."""
    import torch

    if config.startswith("reference"):
        from reference import IMAGE, TEXT, Reference

        ref = Reference(BENCH_MODEL, dtype=torch.bfloat16 if config.endswith("bf16") else torch.float32)
        ref.processor.tokenizer.pad_token = ref.processor.tokenizer.eos_token

        def run_texts():
            # the recipe as published: processor batches (right-padded), full model, all hidden states
            for i in range(0, len(batch_texts), batch_size):
                chunk = [TEXT.replace("<sent>", t) for t in batch_texts[i:i + batch_size]]
                inputs = ref.processor(text=chunk, return_tensors="pt", padding=True)
                with torch.no_grad():
                    ref.model(**inputs, output_hidden_states=True, return_dict=True).hidden_states[-1][:, -1]

        def run_images():
            for image in batch_images:
                inputs = ref.processor(text=[IMAGE], images=[image], return_tensors="pt")
                with torch.no_grad():
                    ref.model(**inputs, output_hidden_states=True, return_dict=True).hidden_states[-1][:, -1]

        return run_texts, run_images
    from e5v import E5V

    model = E5V.from_pretrained(BENCH_MODEL, dtype="fp32")
    return (lambda: model.encode(batch_texts, batch_size=batch_size),
            lambda: model.encode(batch_images, batch_size=1))


def worker(config: str, n_texts: int, n_images: int, batch_size: int) -> dict:
    """Peak memory of one configuration alone: load, embed the texts and the images once."""
    run_texts, run_images = _runners(config, texts(n_texts), images(n_images), batch_size)
    run_texts()
    run_images()
    return {"config": config, "peak_rss_mb": peak_rss_mb()}


def interleaved(configs: list[str], n_texts: int, n_images: int, batch_size: int, rounds: int) -> dict:
    """Time every configuration in one process, alternating them round by round (best of ``rounds``), so
    drifting background load hits all of them alike."""
    batch_texts, batch_images = texts(n_texts), images(n_images)
    runners = {c: _runners(c, batch_texts, batch_images, batch_size) for c in configs}
    for run_texts, _ in runners.values():
        run_texts()  # warm-up
    best = {c: {"text_s": float("inf"), "image_s": float("inf")} for c in configs}
    for _ in range(rounds):
        for c, (run_texts, run_images) in runners.items():
            best[c]["text_s"] = min(best[c]["text_s"], timed(run_texts))
            best[c]["image_s"] = min(best[c]["image_s"], timed(run_images) / max(n_images, 1))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker")
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", default="reference-fp32,reference-bf16,e5v-torch-fp32")
    parser.add_argument("--write", help="append the markdown table to this file")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.texts, args.images, args.batch_size)))
        return
    from e5v.testing import make_bench_model

    make_bench_model(BENCH_MODEL)
    note = machine_note()
    configs = args.configs.split(",")
    times = interleaved(configs, args.texts, args.images, args.batch_size, args.rounds)
    memory = {c: run_worker(__file__, c, "--texts", str(args.texts), "--images", str(args.images),
                            "--batch-size", str(args.batch_size))["peak_rss_mb"] for c in configs}
    base = times["reference-fp32"]
    lines = [
        f"{args.texts} texts of mixed length (3-120 words), batch size {args.batch_size}; "
        f"{args.images} images (anyres: 640x480 and 1008x336, one at a time); best of {args.rounds} interleaved "
        f"rounds; peak RSS of each configuration alone in its own process; {note}",
        "",
        "| config | texts (s) | speed-up vs ref fp32 | per image (s) | speed-up vs ref fp32 | peak RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for c in configs:
        t = times[c]
        lines.append(f"| {c} | {t['text_s']:.2f} | {base['text_s'] / t['text_s']:.2f}x | "
                     f"{t['image_s']:.2f} | {base['image_s'] / t['image_s']:.2f}x | {memory[c]:.0f} |")
    emit("\n".join(lines), args.write)


if __name__ == "__main__":
    main()
