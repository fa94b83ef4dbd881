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

from common import BENCH_MODEL, machine_note, peak_rss_mb, run_worker, timed  # noqa: E402

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


def worker(config: str, n_texts: int, n_images: int, batch_size: int) -> dict:
    import torch

    torch.manual_seed(0)
    batch_texts, batch_images = texts(n_texts), images(n_images)
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

        run_texts_warm = lambda: run_texts()  # noqa: E731
    else:
        from e5v import E5V

        model = E5V.from_pretrained(BENCH_MODEL, dtype="fp32")

        def run_texts():
            model.encode(batch_texts, batch_size=batch_size)

        def run_images():
            model.encode(batch_images, batch_size=1)

        run_texts_warm = run_texts
    run_texts_warm()  # warm-up (allocator, oneDNN kernels)
    t_text = timed(run_texts)
    t_image = timed(run_images)
    return {"config": config, "text_s": t_text, "image_s": t_image / max(n_images, 1), "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker")
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--configs", default="reference-fp32,reference-bf16,e5v-torch-fp32")
    parser.add_argument("--write", help="append the markdown table to this file")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.texts, args.images, args.batch_size)))
        return
    from e5v.testing import make_bench_model

    make_bench_model(BENCH_MODEL)
    note = machine_note()
    results = [run_worker(__file__, c, "--texts", str(args.texts), "--images", str(args.images),
                          "--batch-size", str(args.batch_size)) for c in args.configs.split(",")]
    base = next(r for r in results if r["config"] == "reference-fp32")
    lines = [
        f"{args.texts} texts of mixed length (3-120 words), batch size {args.batch_size}; "
        f"{args.images} images (anyres, one at a time); {note}",
        "",
        "| config | texts (s) | speed-up vs ref fp32 | per image (s) | speed-up vs ref fp32 | peak RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['config']} | {r['text_s']:.2f} | {base['text_s'] / r['text_s']:.2f}x | "
                     f"{r['image_s']:.2f} | {base['image_s'] / r['image_s']:.2f}x | {r['peak_rss_mb']:.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        with open(args.write, "a") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
