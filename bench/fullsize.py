"""Full-size check: E5-V's exact 8B shapes (random bf16 weights) -> int4 OpenVINO export -> encode, with RAM.

Each stage runs in its own subprocess; this parent samples the child's /proc/<pid>/status every 0.2 s
(peak RssAnon, peak RssFile) and reads its VmHWM (peak RSS) at the end, and kills it if anonymous memory
passes --abort-anon-gb or the machine's MemAvailable falls under --min-available-gb (never OOM a shared box).

Why two memory figures: VmHWM/ru_maxrss count resident *file-backed* pages too (the memory-mapped
checkpoint, the mmap-ed IR .bin); the kernel drops those under pressure and re-reads them. RssAnon is the
memory the process owns and cannot give back without swap: what a user's machine must actually have.

    flock /tmp/e5v-heavy.lock .venv/bin/python bench/fullsize.py --write bench/results/fullsize.md

Stages (``--stages``): gen (write the checkpoint if missing), export (new memory-mapped route),
export-old (from_pretrained route, guarded), encode (8 texts + anyres images on the int4 export), default
(the same encode from the plain checkpoint directory with no flag: the route ``backend="auto"`` picks for this
CPU, building its cached export on the first load; name it twice to time the warm load too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# bench/ holds a script named openvino.py: with bench/ on sys.path, `import openvino` would import it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def _status(pid: int) -> dict[str, int]:
    """kB fields of /proc/<pid>/status (VmRSS, VmHWM, RssAnon, RssFile, ...)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def _available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024 ** 2
    return float("inf")


def run_stage(stage: str, args: argparse.Namespace) -> dict:
    """Run one stage in a child process, sampling its memory; returns the child's JSON plus the peaks."""
    cmd = [sys.executable, __file__, "--worker", stage, "--checkpoint", args.checkpoint, "--export-dir",
           args.export_dir if stage != "export-old" else args.export_dir + "-old", "--group-size",
           str(args.group_size), "--ratio", str(args.ratio), "--image-mode", args.image_mode]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
    peaks = {"anon": 0, "file": 0, "hwm": 0}
    aborted = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            status = _status(child.pid)
            peaks["anon"] = max(peaks["anon"], status.get("RssAnon", 0))
            peaks["file"] = max(peaks["file"], status.get("RssFile", 0))
            peaks["hwm"] = max(peaks["hwm"], status.get("VmHWM", 0))
            if status.get("RssAnon", 0) / 1024 ** 2 > args.abort_anon_gb or _available_gb() < args.min_available_gb:
                aborted.append(f"RssAnon {status.get('RssAnon', 0) / 1024 ** 2:.1f} GB, "
                               f"MemAvailable {_available_gb():.1f} GB")
                child.kill()
                return
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    thread.start()
    output, _ = child.communicate()
    done.set()
    thread.join()
    result = {"stage": stage, "wall_s": round(time.perf_counter() - started, 1),
              "peak_rss_gb": peaks["hwm"] / 1024 ** 2, "peak_anon_gb": peaks["anon"] / 1024 ** 2,
              "peak_file_gb": peaks["file"] / 1024 ** 2, "returncode": child.returncode}
    if aborted:
        result["aborted"] = aborted[0]
    lines = [line for line in (output or "").splitlines() if line.startswith("{")]
    if lines:
        result.update(json.loads(lines[-1]))
    print(json.dumps(result), flush=True)
    return result


# ---- workers (run in the child) -------------------------------------------------------------------------


def worker_gen(args) -> dict:
    from e5v.testing_fullsize import make_random_checkpoint

    path = Path(args.checkpoint)
    if (path / "model.safetensors.index.json").is_file():
        return {"skipped": "checkpoint exists"}
    make_random_checkpoint(path, text_layers=args.text_layers)
    return {"disk_gb": sum(f.stat().st_size for f in path.iterdir()) / 1024 ** 3}


def worker_export(args, memory_map: bool) -> dict:
    from e5v.export import export_openvino

    times, phase = {}, ["start", time.perf_counter()]

    def log(message: str) -> None:  # a phase lasts from its log line to the next one
        now = time.perf_counter()
        times[phase[0]] = round(now - phase[1], 1)
        phase[:] = [message.split(" (")[0].replace(args.checkpoint, "").strip()[:40], now]
        print(message, file=sys.stderr, flush=True)

    out = Path(args.export_dir)
    export_openvino(args.checkpoint, out, weights="int4", group_size=args.group_size, ratio=args.ratio,
                    load_dtype="bf16", overwrite=True, memory_map=memory_map, log=log)
    times.pop("start", None)  # imports
    sizes = {p.name: round(p.stat().st_size / 1024 ** 3, 2) for p in out.iterdir() if p.suffix in (".bin", ".npy")}
    return {"phase_s": times, "export_gb": sizes}


def worker_encode(args, source: str | None = None) -> dict:
    """Load ``source`` (the export directory by default) and time 8 texts and two anyres images."""
    import numpy as np
    from PIL import Image

    from e5v import E5V
    from e5v.testing import sample_images

    started = time.perf_counter()
    model = E5V.from_pretrained(source or args.export_dir, image_mode=args.image_mode)
    result = {"image_mode": args.image_mode, "backend": model.backend.name, "weights": model.backend.weights,
              "route": model.route, "load_s": time.perf_counter() - started}
    result["after_load_anon_gb"] = _status(os.getpid()).get("RssAnon", 0) / 1024 ** 2
    words = "the quick brown fox jumps over the lazy dog while a red car waits at the corner".split()
    texts = [" ".join(words[: 2 + 2 * i]) for i in range(8)]  # 2..16 words: a left-padded batch
    started = time.perf_counter()
    text_vectors = model.encode(texts, batch_size=8)
    result["texts_s"] = time.perf_counter() - started
    wide = sample_images()["green wide"]  # 1008x336
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))
    image_vectors = []
    for name, image in (("image_1008x336", wide), ("image_640x480", photo)):
        started = time.perf_counter()
        details = model.encode_with_details([image], batch_size=1, raise_on_error=True)
        result[f"{name}_s"] = time.perf_counter() - started
        result[f"{name}_tokens"] = int(details.token_counts[0])
        image_vectors.append(details.vectors)
    vectors = np.concatenate([text_vectors, *image_vectors])
    result["finite"] = bool(np.isfinite(vectors).all())
    result["norm_min_max"] = [float(np.linalg.norm(vectors, axis=1).min()), float(np.linalg.norm(vectors, axis=1).max())]
    result["max_cos_between_texts"] = float(np.max(text_vectors @ text_vectors.T - 2 * np.eye(8)))
    return result


WORKERS = {"gen": worker_gen, "export": lambda a: worker_export(a, True),
           "export-old": lambda a: worker_export(a, False), "encode": worker_encode,
           "default": lambda a: worker_encode(a, a.checkpoint)}


# ---- report ----------------------------------------------------------------------------------------------


def table(results: list[dict]) -> str:
    """One row per stage; export rows carry ratios to the from_pretrained route when it ran in the same run."""
    rows = ["| stage | wall s | peak RSS (VmHWM) GB | peak RssAnon GB | peak RssFile GB | vs export-old (wall, RssAnon) "
            "| notes |", "|---|---|---|---|---|---|---|"]
    old = next((r for r in results if r["stage"] == "export-old" and r.get("returncode") == 0), None)
    for r in results:
        ratio = f"{r['wall_s'] / old['wall_s']:.2f}x, {r['peak_anon_gb'] / old['peak_anon_gb']:.2f}x" \
            if old and r["stage"].startswith("export") else "-"
        notes = r.get("aborted") and f"ABORTED: {r['aborted']}" or r.get("skipped", "")
        if r["stage"].startswith("export") and "phase_s" in r:
            notes = "phases s: " + ", ".join(f"{k}: {v}" for k, v in r["phase_s"].items())
        if r["stage"] in ("encode", "default") and "texts_s" in r:
            notes = (f"{r['route']}; image_mode {r['image_mode']}; "
                     f"load {r['load_s']:.1f} s (RssAnon after load {r['after_load_anon_gb']:.2f} GB); 8 texts "
                     f"{r['texts_s']:.1f} s; 1008x336 ({r['image_1008x336_tokens']} tok) {r['image_1008x336_s']:.1f} s; "
                     f"640x480 ({r['image_640x480_tokens']} tok) {r['image_640x480_s']:.1f} s; finite {r['finite']}, "
                     f"norms {r['norm_min_max'][0]:.4f}-{r['norm_min_max'][1]:.4f}")
        if r.get("returncode") not in (0, None) and not r.get("aborted"):
            notes += f" (exit {r['returncode']})"
        rows.append(f"| {r['stage']} | {r['wall_s']} | {r['peak_rss_gb']:.2f} | {r['peak_anon_gb']:.2f} | "
                    f"{r['peak_file_gb']:.2f} | {ratio} | {notes} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="/tmp/e5v-8b-random")
    parser.add_argument("--export-dir", default="/tmp/e5v-8b-int4")
    parser.add_argument("--text-layers", type=int, default=32, help="only for generating (32 = E5-V)")
    parser.add_argument("--stages", default="gen,export,encode")
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--ratio", type=float, default=1.0)
    parser.add_argument("--image-mode", default="anyres", choices=["anyres", "base"], help="encode stage")
    parser.add_argument("--abort-anon-gb", type=float, default=19.0, help="kill a stage past this RssAnon")
    parser.add_argument("--min-available-gb", type=float, default=2.0, help="kill a stage under this MemAvailable")
    parser.add_argument("--write", help="append the table to this markdown file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)), flush=True)
        return
    load = os.getloadavg()[0]
    results = [run_stage(stage, args) for stage in args.stages.split(",")]
    text = (f"\nCommand: `{' '.join([Path(sys.executable).name, *sys.argv])}` (load average at start {load:.1f}, "
            f"{os.cpu_count()} cores)\n\n{table(results)}\n")
    print(text)
    if args.write:
        with open(args.write, "a") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
