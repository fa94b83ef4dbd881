"""Rebuild BENCHMARKS.md from bench/results/*.md (each results file carries the command that produced it).

    .venv/bin/python bench/assemble.py
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["throughput", "batch_memory", "load_memory", "openvino", "fullsize", "store", "server", "image_bombs", "spark", "train", "eval"]

HEADER = """# Benchmarks

All numbers were measured on this project's machines (2 cores, 24 GiB RAM, no GPU: a Xeon with AMX and AVX-512
for most sections, an AMD EPYC Zen 4 with AVX-512 VNNI but no AMX, an AMD EPYC Zen 3 and a Zen 2 (family 23 model 49) with AVX2 only, where a
section says so) by the scripts in `bench/`, each comparing against its baseline **side by side in the same run**. The
command that produced each table is given with it. Weights are random (the real model cannot be downloaded here):
speed and memory match a real model of the same shape; no quality numbers are claimed.

**Benchmark model** (`e5v.testing.make_bench_model`): E5-V's real layer shapes everywhere — Llama-3-8B widths
(hidden 4096, MLP 14336, 32 heads / 8 KV heads) and the CLIP ViT-L/14-336 tower (hidden 1024, MLP 4096, 16
heads) — with every depth scaled by the same factor (2 of 32 decoder layers, 2 of 24 vision layers) and the
vocabulary scaled to 8192 so the lm_head keeps its ~7% share of the compute. Each part's share of the compute
therefore matches the 8B model's.

**Caveat on conditions.** Most runs happened while several engineers' test suites and benchmarks shared the same
2 cores (load averages are given per run). Ratios within a run are meaningful; absolute times are noisy.
The Xeon and the Zen 4 EPYC run bf16 natively (AMX-BF16, avx512_bf16), so torch bf16 is *faster* than fp32 on
them (DESIGN.md's "bf16 is slow" was measured on CPUs without it); the Zen 3 EPYC has no bf16 (and no int8)
instructions, and there the bf16 reference is ~6x slower than fp32. Targets phrased against the bf16 reference
are assessed with that in mind.

Regenerate this file: `.venv/bin/python bench/assemble.py` (sections come from `bench/results/*.md`).
"""


def demote(text: str) -> str:
    """Shift markdown headings one level down so each results file becomes a section."""
    out = []
    for line in text.splitlines():
        out.append("#" + line if line.startswith("#") else line)
    return "\n".join(out)


def main() -> None:
    results = ROOT / "bench" / "results"
    names = [n for n in ORDER if (results / f"{n}.md").exists()]
    names += sorted(p.stem for p in results.glob("*.md") if p.stem not in ORDER)
    parts = [HEADER] + [demote((results / f"{n}.md").read_text().strip()) for n in names]
    (ROOT / "BENCHMARKS.md").write_text("\n\n".join(parts) + "\n")
    print(f"BENCHMARKS.md: {', '.join(names)}")


if __name__ == "__main__":
    main()
