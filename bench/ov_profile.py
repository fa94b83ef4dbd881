"""Where an OpenVINO export's prefill time goes, per compile setting: one language-IR call, per-op profile.

Compiles ``DIR/language.xml`` with the export's own runtime properties plus each ``--dq`` group size (one
fresh process per setting, so peak RSS is its own), runs a prefill of ``--tokens`` random embeddings (best
of 2 after one warm-up), and prints wall time, the matmul kernels the CPU plugin picked (``brgemm_avx2_f32``
means weights are decompressed to f32: no int8 compute on that CPU; ``..._avx512_bf16``/``amx`` with
dynamic quantization means int8 units run) and the slowest op types. It scripts the profile behind the
dynamic-quantization group table in docs/openvino.md. Compare it with torch on the same graph through
``bench/openvino.py`` (ratios to the reference recipe live there).

    .venv/bin/python bench/ov_profile.py /tmp/e5v-bench-ov/int8 --dq 0,32,64,128,256
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import common as _common  # noqa: E402  (bench/ is on sys.path as this script's directory)

# bench/ also holds a script named openvino.py: with bench/ on sys.path, `import openvino` would import it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def profile_worker(directory: str, dq: str, tokens: int) -> dict:
    import numpy as np
    import openvino as ov

    manifest = json.loads((Path(directory) / "e5v_manifest.json").read_text())
    properties = {**manifest["runtime"], "PERF_COUNT": "YES"}
    if dq != "export":
        properties["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = dq
    core = ov.Core()
    model = core.read_model(Path(directory) / "language.xml")
    dim = int(model.input("inputs_embeds").get_partial_shape()[2].get_length())
    start = time.perf_counter()
    compiled = core.compile_model(model, "CPU", properties)
    compile_s = time.perf_counter() - start
    inputs = {"inputs_embeds": np.random.default_rng(0).standard_normal((1, tokens, dim), dtype=np.float32) * 0.02,
              "attention_mask": np.ones((1, tokens), np.int64),
              "position_ids": np.arange(tokens, dtype=np.int64)[None]}
    request = compiled.create_infer_request()
    request.infer(inputs)  # warm-up: buffers, kernel creation
    best = _common.timed(lambda: request.infer(inputs), repeat=2)
    by_type: dict[str, float] = collections.defaultdict(float)
    kernels: collections.Counter = collections.Counter()
    for node in request.profiling_info:
        by_type[node.node_type] += node.real_time.total_seconds()
        if node.node_type.startswith("FullyConnected"):
            kernels[node.exec_type] += 1
    top = sorted(by_type.items(), key=lambda kv: -kv[1])[:3]
    return {"dq": str(compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")), "compile_s": compile_s,
            "wall_s": best, "precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "kernels": dict(kernels), "top": top, "peak_rss_mb": _common.peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", help="an `e5v export --format openvino` directory")
    parser.add_argument("--dq", default="export", help="comma list of DQ group sizes; 'export' = the manifest's")
    parser.add_argument("--tokens", type=int, default=2355, help="2355 = one 1008x336 anyres image prompt")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(profile_worker(args.directory, args.worker, args.tokens)))
        return
    weights = json.loads((Path(args.directory) / "e5v_manifest.json").read_text())["weights"]
    lines = [f"Machine: {_common.machine_note()}. Export: {args.directory} ({weights}); one language-IR call "
             f"of {args.tokens} tokens, best of 2 after a warm-up; own process per row.", "",
             "| DQ group | wall s | inference precision | matmul kernels | slowest op types (s) | peak RSS MB |",
             "|---|---|---|---|---|---|"]
    for dq in args.dq.split(","):
        got = _common.run_worker(__file__, dq, args.directory, "--tokens", str(args.tokens))
        kernels = ", ".join(f"{name} x{count}" for name, count in got["kernels"].items())
        top = ", ".join(f"{name} {seconds:.2f}" for name, seconds in got["top"])
        lines.append(f"| {got['dq']} | {got['wall_s']:.2f} | {got['precision']} | {kernels} | {top} | "
                     f"{got['peak_rss_mb']:.0f} |")
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
