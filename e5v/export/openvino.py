"""Export a LLaVA-NeXT (E5-V) checkpoint to OpenVINO IR parts with fp32 / int8 / int4 weights.

Why a direct ``openvino.convert_model`` of torch sub-modules rather than optimum-intel: optimum exports
the *generative* model (lm_head, a stateful KV cache, beam-search plumbing) and its LLaVA-NeXT split puts
the anyres packing in Python of its own. An embedding needs none of that: three stateless parts with
exactly the encoder's inputs (``parts.py``), a padding-safe mask we control (DESIGN.md §2.7), no lm_head
(a 128256 x 4096 matrix, ~7% of the compute and 2 GB fp32) and the packing done by transformers' own
code at run time. The graphs are smaller and faster, and there is one less dependency.

Memory: the model is loaded once, then each part is converted, compressed, saved and freed before the
next (the token table first, then the vision tower, then the language model). When the checkpoint's
safetensors already hold the load dtype (bf16 for published E5-V weights with ``load_dtype="bf16"``), the
weights are memory-mapped rather than copied (``mmap_load.py``): they stay reclaimable page cache and the
export's own RAM is about the compressed language weights; otherwise the peak is about the loaded model
plus the one part being compressed.
"""

from __future__ import annotations

import gc
import resource
import shutil
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import ModelLoadError, require
from .manifest import MANIFEST, WEIGHTS, Manifest, file_entries, write_manifest
from .parts import LanguagePart, VisionPart

PARTS = {"vision": "vision.xml", "language": "language.xml", "embeddings": "embed_tokens.npy",
         "image_newline": "image_newline.npy"}
#: Files copied from the source so ``load_components`` works on the export dir (no weights).
_COPY_SUFFIXES = (".json", ".txt", ".model", ".jinja")
#: CPU compile properties stored in the manifest. Dynamic activation quantization is what turns int8/int4
#: *storage* into int8 *compute* (DESIGN.md §2.6: without it int8 weights ran slower than fp32). Its group
#: (activation values sharing one scale) is 128, capped at the int4 weight group: on a VNNI CPU without AMX
#: a 2355-token prefill took 6.43 s with groups of 32, 5.00 s with 128 (int8); int4 g64 5.54 s with 64 but
#: 8.17 s with 128, a group larger than the weight group (bench/results/openvino.md). AMX CPUs ran all sizes
#: at the same speed.
DYNAMIC_QUANT_GROUP = 128


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compression_plan(weights: str, group_size: int, ratio: float, calibration: str | None = None) -> dict:
    """NNCF settings per part. The vision tower (~300M params in E5-V) gets int8 in both int modes: it is a
    small share of the bytes, and 4-bit error there would reach every image token. ``calibration`` ("builtin"
    or a file path) makes the int4 language compression data-aware (GPTQ, ``calibration.py``)."""
    if weights == "fp32":
        return {"vision": None, "language": None}
    int8 = {"mode": "int8_sym"}  # per-output-channel scales
    if weights == "int8":
        return {"vision": int8, "language": int8}
    language = {"mode": "int4_asym", "group_size": group_size, "ratio": ratio}
    if calibration is not None:
        language["gptq"] = calibration
    return {"vision": int8, "language": language}


def dynamic_quant_group(weights: str, group_size: int = 64) -> int:
    """Activation group for the CPU plugin's dynamic quantization: ``DYNAMIC_QUANT_GROUP``, no larger than
    the int4 weight group (a larger one made the int4 kernels 1.5x slower)."""
    if weights == "int4" and group_size > 0:
        return min(DYNAMIC_QUANT_GROUP, group_size)
    return DYNAMIC_QUANT_GROUP


def runtime_config(weights: str, group_size: int = 64) -> dict:
    """fp32 exports pin f32 inference (parity with torch); int modes let the CPU plugin pick (bf16 on
    avx512_bf16/AMX machines) and quantize activations dynamically so matmuls run on int8 units."""
    if weights == "fp32":
        return {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    return {"DYNAMIC_QUANTIZATION_GROUP_SIZE": str(dynamic_quant_group(weights, group_size)),
            "PERFORMANCE_HINT": "LATENCY"}


def _compress(ov_model, plan: dict | None, calibration_inputs: list | None = None):
    if plan is None:
        return ov_model
    nncf = require("nncf", "openvino")
    if plan["mode"] == "int8_sym":
        return nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_SYM)
    data_aware = {}
    if calibration_inputs:
        data_aware = {"dataset": nncf.Dataset(calibration_inputs), "gptq": True,
                      "subset_size": len(calibration_inputs)}  # all of them (NNCF's default takes 128)
    return nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=plan["group_size"],
                                 ratio=plan["ratio"], **data_aware)


def _prepare_output(output: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty directory that is not an earlier export (unless overwrite)."""
    if output.exists() and any(output.iterdir()):
        earlier = any((output / name).is_file() for name in (MANIFEST, *PARTS.values()))  # incl. interrupted
        if not (overwrite or earlier):
            raise FileExistsError(f"{output} is not empty and holds no e5v export; choose another --output "
                                  "or pass --overwrite")
        (output / MANIFEST).unlink(missing_ok=True)  # from here on the dir reads as partial until we finish
    output.mkdir(parents=True, exist_ok=True)


def _copy_processor_files(source: Path, output: Path) -> None:
    for path in source.iterdir():
        if path.is_file() and path.suffix in _COPY_SUFFIXES and not path.name.endswith(".index.json") \
                and path.name != MANIFEST:
            shutil.copy2(path, output / path.name)


def _load_base(source: Path, config, dtype: torch.dtype, memory_map: bool, log) -> torch.nn.Module:
    """LlavaNextModel without lm_head: memory-mapped when the stored dtype is ``dtype``, else copied.

    The memory-mapped route is what lets an 8B export fit a 16-24 GB machine: the weights stay file-backed
    page cache (reclaimable) instead of 16 GB of anonymous memory (see ``mmap_load.py``, docs/openvino.md).
    """
    from transformers import LlavaNextForConditionalGeneration
    from transformers.utils import logging as hf_logging

    from ..checkpoint import load_checked, stored_dtypes
    from .mmap_load import load_base_mmap

    stored = stored_dtypes(source)
    name = str(dtype).replace("torch.", "")
    if memory_map and stored == {dtype}:
        log(f"loading {source} memory-mapped ({name} on disk, no copy)")
        return load_base_mmap(source, config)
    if memory_map:
        on_disk = ", ".join(sorted(str(d).replace("torch.", "") for d in stored)) or "no safetensors"
        log(f"loading {source} with from_pretrained (weights copied into RAM): checkpoint holds {on_disk}, "
            f"export loads {name}; a {name} safetensors checkpoint would be memory-mapped")
    else:
        log(f"loading {source} with from_pretrained")
    hf_logging.disable_progress_bar()
    full = load_checked(LlavaNextForConditionalGeneration, source, dtype)  # refuses missing/mis-shaped tensors
    base = full.model
    full.lm_head = None  # never exported: embeddings need no logits
    del full
    return base.eval().requires_grad_(False)


def _save_table(table: torch.Tensor, path: Path, dtype, rows: int = 8192) -> None:
    """Write the (V, D) token table as ``dtype`` .npy in row chunks: no full-size fp32 temporary (2 GB for 8B)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(table.shape))
    for start in range(0, table.shape[0], rows):
        out[start:start + rows] = table[start:start + rows].float().numpy()  # (rows, D)
    out.flush()
    del out


def export_openvino(model: str, output: str | Path, *, weights: str = "int8", group_size: int = 64,
                    ratio: float = 1.0, load_dtype: str = "fp32", overwrite: bool = False, verify: bool = False,
                    memory_map: bool = True, calibration: str | Path | None = None, log=print) -> Path:
    """Convert ``model`` (HF id or directory) into OpenVINO parts in ``output``; returns ``output``.

    Args:
        weights: "fp32" (no compression), "int8" (NNCF INT8_SYM per channel) or "int4" (language model NNCF
            INT4_ASYM with ``group_size``; ``ratio`` of its matmuls in 4 bit, the rest int8; vision int8).
        overwrite: allow writing into a non-empty directory that is not an earlier export.
        load_dtype: "fp32" or "bf16". bf16 halves the loaded model (16 GB instead of 32 GB for 8B): the
            bf16 weights are kept and compressed directly, while the language graph computes in f32
            (``parts.UpcastLinear``). With a bf16
            safetensors checkpoint (as published) the weights are memory-mapped, not copied, so an int4
            export of the 8B needs a few GB of RAM of its own (docs/openvino.md). fp32 exports need fp32
            (bf16 weights would not be fp32-exact).
        verify: re-read every written file and check it against the manifest's SHA-256.
        calibration: int4 only: "builtin" (texts, anyres images and composed items made here) or a JSONL
            file of ``{"text"}`` / ``{"image"}`` items. The language model's inputs for them are recorded
            through ``E5V.encode`` and NNCF's GPTQ compresses with them (``calibration.py``): better int4
            accuracy, much slower export (minutes per layer at E5-V's width); it runs the uncompressed
            language model and holds a Hessian per matmul input, so it needs several times the fp32 model's
            RAM (measured 12.3 GB for the 2-layer bench model; not for the 8B on a 24 GB machine).
        memory_map: when the checkpoint's safetensors already hold ``load_dtype`` weights, view them
            memory-mapped instead of copying them into RAM (``mmap_load.py``); False forces
            ``from_pretrained`` (kept to compare the two routes).
    """
    ov = require("openvino", "openvino")
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; choose one of {WEIGHTS}")
    if load_dtype not in ("fp32", "bf16"):
        raise ValueError(f"load_dtype must be fp32 or bf16, got {load_dtype!r}")
    if load_dtype == "bf16" and weights == "fp32":
        raise ValueError("an fp32 export needs load_dtype='fp32' (bf16 weights are not fp32-exact)")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if calibration is not None and weights != "int4":
        raise ValueError("calibration applies to int4 exports only (int8 per-channel needs no data)")
    if weights != "fp32":
        require("nncf", "openvino")
    calibration_items = None
    if calibration is not None:
        from .calibration import default_calibration_items, read_calibration_file

        calibration_items = (default_calibration_items() if str(calibration) == "builtin"
                             else read_calibration_file(calibration))  # bad files fail before any loading
    from ..families import family_for
    from ..loading import prompt_family, read_config, resolve_model_path

    source, revision = resolve_model_path(model)
    config = read_config(source)  # ModelLoadError for anything e5v cannot load at all
    if "openvino" not in family_for(config, path=source).backends:
        raise ModelLoadError(f"{model} is a {getattr(config, 'model_type', '?')} model; `e5v export --format "
                             "openvino` supports LLaVA-NeXT (E5-V) checkpoints only (use the torch backend)")
    output = Path(output)
    _prepare_output(output, overwrite)
    plan = compression_plan(weights, group_size, ratio, None if calibration is None else str(calibration))

    base = _load_base(source, config, torch.bfloat16 if load_dtype == "bf16" else torch.float32, memory_map, log)
    calibration_inputs = None
    if calibration_items is not None:  # needs the whole model: before the parts are taken apart below
        from .calibration import record_language_inputs

        log(f"recording the language model's inputs for {len(calibration_items)} calibration items")
        calibration_inputs = record_language_inputs(base, source, calibration_items)

    # 1. token table: a plain array, gathered with numpy at run time (a Gather IR would only copy it)
    table = base.language_model.embed_tokens.weight.detach()
    _save_table(table, output / PARTS["embeddings"], np.float32 if weights == "fp32" else np.float16)
    np.save(output / PARTS["image_newline"], base.image_newline.detach().float().numpy())
    base.language_model.embed_tokens = None  # the language part takes inputs_embeds
    del table
    gc.collect()

    with torch.inference_mode():
        # 2. vision tower (cut at the feature layer) + projector
        log("converting the vision tower")
        vision = VisionPart(base, config).float().eval()  # small (~300M params for CLIP-L): always fp32
        size = int(config.vision_config.image_size)  # static: CLIP's position table fixes the view size
        ov_vision = ov.convert_model(vision, example_input=torch.zeros(1, 3, size, size),
                                     input=[("pixel_values", [-1, 3, size, size])])
        ov_vision.outputs[0].get_tensor().set_names({"features"})
        ov.save_model(_compress(ov_vision, plan["vision"]), output / PARTS["vision"], compress_to_fp16=False)
        del ov_vision, vision
        base.vision_tower = None
        base.multi_modal_projector = None
        gc.collect()

        # 3. language model, left-padded example so the traced mask path is the padded one
        log("converting the language model")
        language = LanguagePart(base.language_model).eval()
        dim = int(config.text_config.hidden_size)
        example = (torch.zeros(2, 5, dim), torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]),
                   torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]))
        ov_language = ov.convert_model(language, example_input=example,
                                       input=[("inputs_embeds", [-1, -1, dim]), ("attention_mask", [-1, -1]),
                                              ("position_ids", [-1, -1])])
        ov_language.outputs[0].get_tensor().set_names({"last_hidden_state"})
        log(f"compressing the language model ({weights}{', GPTQ' if calibration_inputs else ''})")
        ov.save_model(_compress(ov_language, plan["language"], calibration_inputs), output / PARTS["language"],
                      compress_to_fp16=False)
        # Only now: the converted graph's constants share memory with the torch weights (no copy, which is
        # what keeps the peak near one model size); freeing the torch module earlier corrupts them (seen
        # as NaN outputs with bf16 weights).
        del ov_language, base, language, calibration_inputs
        gc.collect()

    _copy_processor_files(source, output)
    part_files = [PARTS["embeddings"], PARTS["image_newline"]]
    for role in ("vision", "language"):
        part_files += [PARTS[role], PARTS[role].replace(".xml", ".bin")]
    import transformers

    versions = {"openvino": ov.__version__, "torch": torch.__version__, "transformers": transformers.__version__}
    if weights != "fp32":
        versions["nncf"] = require("nncf", "openvino").__version__

    manifest = Manifest(
        e5v_version=__version__, source_model=str(model), source_revision=revision, weights=weights,
        prompt_family=prompt_family(config), compression=plan, runtime=runtime_config(weights, group_size),
        parts=PARTS,
        files=file_entries(output, part_files),
        versions=versions,
        export_peak_rss_mb=round(peak_rss_mb(), 1),
    )
    write_manifest(output, manifest)
    if verify:
        from .manifest import verify_manifest

        verify_manifest(output, __version__, checksums=True)
    log(f"wrote {output} ({weights}); export peak RSS {manifest.export_peak_rss_mb:.0f} MB")
    return output
