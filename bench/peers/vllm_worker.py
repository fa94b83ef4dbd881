"""One vLLM CPU configuration, run with the peer venv's python (bench/peers/setup_vllm.sh), driven by bench/peers.py.

Reads a JSON job (model dir in the hub key layout, dtype, the exact e5v prompt strings, image files), starts
vLLM as a pooling model with LAST pooling and normalisation, caches off (prefix cache and multimodal processor
cache: repeats must recompute), warms up once, then times ``passes`` passes. Prints one JSON line: times,
vectors, and the peak RSS of its whole process tree (vLLM runs an engine process beside this one).
"""

import json
import os
import sys
import threading
import time


def tree_peak_mb(stop, out):
    import psutil

    me = psutil.Process()
    peak = 0
    while not stop.is_set():
        try:
            procs = [me] + me.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except Exception:  # noqa: BLE001 - a child exiting between listing and reading
            pass
        time.sleep(0.2)
    out.append(peak / 2**20)


def main():
    job = json.loads(open(sys.argv[1]).read())
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(job.get("kv_cache_gib", 1)))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", job.get("bind", "0-1"))
    stop, peak = threading.Event(), []
    sampler = threading.Thread(target=tree_peak_mb, args=(stop, peak), daemon=True)
    sampler.start()
    from PIL import Image
    from vllm import LLM
    from vllm.config import PoolerConfig

    llm = LLM(model=job["model"], runner="pooling", convert="embed", dtype=job["dtype"], max_model_len=4096,
              enforce_eager=True, limit_mm_per_prompt={"image": 1}, seed=0,
              pooler_config=PoolerConfig(pooling_type="LAST", use_activation=True),
              mm_processor_kwargs={"backend": "pil"}, enable_prefix_caching=False, mm_processor_cache_gb=0)
    images = [Image.open(p).convert("RGB") for p in job["images"]]
    texts = job["texts"]

    def run_texts():
        return [o.outputs.embedding for o in llm.embed(texts, use_tqdm=False)]

    def run_image(i):
        prompt = {"prompt": job["image_prompt"], "multi_modal_data": {"image": images[i]}}
        return llm.embed([prompt], use_tqdm=False)[0].outputs.embedding

    text_vectors = run_texts()  # warm-up, also the vectors compared
    image_vectors = [run_image(i) for i in range(len(images))]
    text_s, image_s = [], []
    for _ in range(job["passes"]):
        start = time.perf_counter()
        run_texts()
        text_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(len(images)):
            run_image(i)
        image_s.append((time.perf_counter() - start) / max(1, len(images)))
    stop.set()
    sampler.join()
    print(json.dumps({"text_s": text_s, "image_s": image_s, "peak_mb": peak[0],
                      "vectors": [list(map(float, v)) for v in text_vectors + image_vectors]}))


if __name__ == "__main__":  # vLLM starts workers with spawn
    main()
