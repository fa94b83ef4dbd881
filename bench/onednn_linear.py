"""fp32 linear throughput on this CPU: PyTorch's default (MKL sgemm) against oneDNN with the weight packed once
(``e5v.backends.onednn_linear.PackedLinear``), and bf16 for scale, at the bench model's widths.

    .venv/bin/python bench/onednn_linear.py [--tokens 1024] [--output bench/results/onednn_linear.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, machine_note  # noqa: E402


def gflops(fn, flops: float, repeats: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return flops * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    import torch

    from e5v.backends.onednn_linear import PackedLinear

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--output")
    args = parser.parse_args()
    rows = ["| shape (tokens x in -> out) | MKL fp32 GFLOP/s | oneDNN packed fp32 GFLOP/s | oneDNN / MKL | bf16 GFLOP/s |",
            "|---|---|---|---|---|"]
    torch.manual_seed(0)
    with torch.inference_mode():
        for k, n in ((4096, 4096), (4096, 14336), (14336, 4096)):  # attention projections, MLP up and down
            linear = torch.nn.Linear(k, n, bias=False)
            packed, bf16 = PackedLinear(linear), torch.nn.Linear(k, n, bias=False).bfloat16()
            x = torch.randn(args.tokens, k)
            flops = 2.0 * args.tokens * k * n
            mkl, dnn = gflops(lambda: linear(x), flops), gflops(lambda: packed(x), flops)
            half = gflops(lambda: bf16(x.bfloat16()), flops)
            rows.append(f"| {args.tokens} x {k} -> {n} | {mkl:.0f} | {dnn:.0f} | {dnn / mkl:.2f}x | {half:.0f} |")
    emit(f"\n### {machine_note()}, torch {torch.__version__}, {torch.get_num_threads()} threads\n\n"
         f"`python bench/onednn_linear.py --tokens {args.tokens}`\n\n" + "\n".join(rows) + "\n", args.output)


if __name__ == "__main__":
    main()
