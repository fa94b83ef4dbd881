"""e5v against the peers a CPU user would run instead (../shared/PEERS.md): the reference recipe in fp32 and bf16,
and vLLM's CPU build (its own venv, bench/peers/setup_vllm.sh), side by side in one run, one configuration at a
time, each in a fresh process.

Same model (the E5-V-shaped bench model, e5v.testing.make_bench_model), same inputs (16 mixed texts, two
640x480 anyres images), same protocol (a warm-up pass, then ``--passes`` timed passes: all texts in one call,
images one call each; best and range). Every row's vectors are compared with the **unpadded** reference: the
recipe run one item at a time in fp32 (its padded batches put a pad token at ``[:, -1]``). Peak RSS of each
configuration's process tree.

    python bench/peers.py [--passes 2] [--configs ...] [--vllm-python bench/peers/vllm-venv/bin/python]
                          [--output bench/results/peers.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import BENCH_MODEL, emit, machine_note, peak_rss_mb  # noqa: E402
from throughput import images as make_images  # noqa: E402
from throughput import texts as make_texts  # noqa: E402

# bench/openvino.py would shadow the openvino package: drop bench/ (the script's own dir too) after its imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

HERE = Path(__file__).resolve().parent
VLLM_PYTHON = HERE / "peers" / "vllm-venv" / "bin" / "python"
CONFIGS = "reference-fp32,reference-bf16,e5v-default,e5v-torch,e5v-fp32,vllm-bf16,vllm-fp32"


def inputs(n_texts: int, n_images: int, folder: Path) -> tuple[list[str], list[Path]]:
    paths = []
    for i, image in enumerate(make_images(n_images * 4)[::4][:n_images]):  # the 640x480 ones
        paths.append(folder / f"image{i}.png")
        image.save(paths[-1])
    return make_texts(n_texts), paths


def prompts(texts: list[str]) -> tuple[list[str], str]:
    """The exact strings e5v feeds its tokenizer (E5-V's prompts in the Llama-3 wrapper)."""
    from e5v.prompts import LLAMA3, PromptSet, render

    return [render("text", PromptSet(), LLAMA3, text=t) for t in texts], render("image", PromptSet(), LLAMA3)


def _passes(run, passes: int) -> list[float]:
    import time

    out = []
    for _ in range(passes):
        start = time.perf_counter()
        run()
        out.append(time.perf_counter() - start)
    return out


def worker(config: str, texts: list[str], paths: list[Path], passes: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths]
    if config.startswith("reference"):
        from reference import IMAGE, TEXT, Reference

        ref = Reference(BENCH_MODEL, dtype=torch.bfloat16 if config.endswith("bf16") else torch.float32)
        ref.processor.tokenizer.pad_token = ref.processor.tokenizer.eos_token

        def batch_texts():  # the recipe as published: one processor batch (right-padded), full model
            inputs = ref.processor(text=[TEXT.replace("<sent>", t) for t in texts], return_tensors="pt", padding=True)
            with torch.no_grad():
                ref.model(**inputs, output_hidden_states=True, return_dict=True)

        def one_image(image):
            inputs = ref.processor(text=[IMAGE], images=[image], return_tensors="pt")
            with torch.no_grad():
                return ref.model(**inputs, output_hidden_states=True, return_dict=True).hidden_states[-1][0, -1]

        def one_text(text):
            inputs = ref.processor(text=[TEXT.replace("<sent>", text)], return_tensors="pt")
            with torch.no_grad():
                return ref.model(**inputs, output_hidden_states=True, return_dict=True).hidden_states[-1][0, -1]

        vectors = [one_text(t) for t in texts] + [one_image(i) for i in images]  # unpadded, one at a time
        vectors = [torch.nn.functional.normalize(v.float(), dim=-1).numpy() for v in vectors]
        batch_texts()
        text_s = _passes(batch_texts, passes)
        image_s = [t / len(images) for t in _passes(lambda: [one_image(i) for i in images], passes)]
    else:
        from e5v import E5V

        os.environ.pop("E5V_DTYPE", None)
        os.environ.pop("E5V_BACKEND", None)
        if config == "e5v-default":  # what a user gets: the route table (the cached export is built before timing)
            model = E5V.from_pretrained(BENCH_MODEL)
        elif config == "e5v-torch":  # the torch leg of the route table (bf16 where the CPU has it)
            model = E5V.from_pretrained(BENCH_MODEL, backend="torch")
        else:
            model = E5V.from_pretrained(BENCH_MODEL, dtype={"e5v-fp32": "fp32", "e5v-bf16": "bf16"}[config])
        vectors = list(model.encode(texts)) + [model.encode([i])[0] for i in images]
        text_s = _passes(lambda: model.encode(texts), passes)
        image_s = [t / len(images) for t in _passes(lambda: [model.encode([i]) for i in images], passes)]
        config = f"{config} ({model.route.split(' (')[0]})"
    return {"config": config, "text_s": text_s, "image_s": image_s, "peak_mb": peak_rss_mb(),
            "vectors": [np.asarray(v, dtype=np.float32).tolist() for v in vectors]}


def hub_layout_copy(folder: Path) -> Path:
    """The bench model with vLLM 0.32's expected LLaVA-NeXT keys (``vision_tower.vision_model.*``), same tensors."""
    import shutil

    from safetensors.torch import load_file, save_file

    target = folder / "hub-layout"
    if (target / "model.safetensors").exists():
        return target
    target.mkdir(parents=True)
    for f in BENCH_MODEL.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, target / f.name)
    weights = load_file(str(BENCH_MODEL / "model.safetensors"))
    renamed = {("vision_tower.vision_model." + k[len("vision_tower."):]
                if k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model.") else k): v
               for k, v in weights.items()}
    save_file(renamed, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


def run_config(config: str, args, texts, paths, folder: Path) -> dict:
    if config.startswith("vllm"):
        python = Path(args.vllm_python)
        if not python.exists():
            return {"config": config, "skipped": f"no vLLM venv at {python} (bash bench/peers/setup_vllm.sh)"}
        text_prompts, image_prompt = prompts(texts)
        job = folder / f"{config}.json"
        job.write_text(json.dumps({"model": str(hub_layout_copy(folder)), "dtype": config.split("-")[1].replace(
            "bf16", "bfloat16").replace("fp32", "float32"), "texts": text_prompts, "image_prompt": image_prompt,
            "images": [str(p) for p in paths], "passes": args.passes}))
        out = subprocess.run([str(python), str(HERE / "peers" / "vllm_worker.py"), str(job)], capture_output=True,
                             text=True, env={**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"})
    else:
        job = folder / "inputs.json"
        job.write_text(json.dumps({"texts": texts, "images": [str(p) for p in paths]}))
        out = subprocess.run([sys.executable, __file__, "--worker", config, "--job", str(job), "--passes",
                              str(args.passes)], capture_output=True, text=True)
    if out.returncode != 0:
        return {"config": config, "skipped": "failed: " + out.stderr.strip().splitlines()[-1][:300]
                if out.stderr.strip() else f"exit {out.returncode}"}
    # the worker's result is its one JSON line; vLLM logs its shutdown to stdout after it
    result = json.loads(next(line for line in reversed(out.stdout.splitlines()) if line.startswith("{")))
    result.setdefault("config", config)
    return result


def table(results: list[dict], passes: int) -> str:
    import numpy as np

    base = next(r for r in results if r["config"] == "reference-fp32")
    ref = np.asarray(base["vectors"], dtype=np.float32)
    vllm_bf16 = next((r for r in results if r["config"] == "vllm-bf16" and "skipped" not in r), None)
    lines = ["| config | 16 texts (s) | per image (s) | vs vLLM bf16 (texts / image) | peak RSS (MB) | "
             "min cos vs unpadded fp32 reference |", "|---|---|---|---|---|---|"]

    def span(values):
        return f"{min(values):.2f}" + (f" (–{max(values):.2f})" if max(values) > min(values) * 1.05 else "")

    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['config']} | skipped: {r['skipped']} | | | | |")
            continue
        vectors = np.asarray(r["vectors"], dtype=np.float32)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        cos = float((vectors * ref).sum(axis=1).min())
        ratio = (f"{min(vllm_bf16['text_s']) / min(r['text_s']):.2f}x / {min(vllm_bf16['image_s']) / min(r['image_s']):.2f}x"
                 if vllm_bf16 else "–")
        lines.append(f"| {r['config']} | {span(r['text_s'])} | {span(r['image_s'])} | {ratio} | {r['peak_mb']:.0f} | "
                     f"{'(reference)' if r is base else f'{cos:.5f}'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker")
    parser.add_argument("--job")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--texts", type=int, default=16)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--configs", default=CONFIGS)
    parser.add_argument("--vllm-python", default=str(VLLM_PYTHON))
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(Path(args.job).read_text())
        print(json.dumps(worker(args.worker, job["texts"], [Path(p) for p in job["images"]], args.passes)))
        return
    from e5v.testing import make_bench_model

    make_bench_model(BENCH_MODEL)
    note = machine_note()
    folder = Path(tempfile.mkdtemp(prefix="e5v-peers-"))
    texts, paths = inputs(args.texts, args.images, folder)
    configs = args.configs.split(",")
    if "reference-fp32" not in configs:
        configs.insert(0, "reference-fp32")
    results = []
    for config in configs:
        results.append(run_config(config, args, texts, paths, folder))
        print(f"{config}: " + (results[-1].get("skipped") or f"texts {min(results[-1]['text_s']):.2f} s, image "
                               f"{min(results[-1]['image_s']):.2f} s"), file=sys.stderr, flush=True)
    header = (f"### Run ({note})\n\n`python bench/peers.py --passes {args.passes}`; {args.texts} mixed texts, "
              f"{args.images} 640x480 anyres images, a warm-up then {args.passes} passes (best, range), one "
              "configuration at a time in a fresh process; e5v rows name the route the load chose.\n")
    emit(header + "\n" + table(results, args.passes) + "\n", args.output)


if __name__ == "__main__":
    main()
