"""Options and helpers shared by subcommands (model loading, errors), so each command stays thin."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

from ..backends import BACKENDS
from ..errors import E5VError
from ..families import family_names, pooler_names


def model_options(f: Callable) -> Callable:
    """--model/--backend/--device/--image-mode/--instruction/--lora, the same on every command."""
    options = [
        click.option("--model", "-m", default="royokong/e5-v", show_default=True,
                     help="Hugging Face id or local directory (checkpoint or `e5v export` output)."),
        click.option("--backend", type=click.Choice(sorted(BACKENDS) + ["auto"]), default=None,
                     help="Default (E5V_BACKEND, else auto): the route table - OpenVINO for an exported "
                     "directory; OpenVINO int8 from a cached export (built once) on CPUs with int8 units; torch "
                     "elsewhere, or when --dtype/--lora/--device is given (docs/routes.md)."),
        click.option("--device", default=None, help="torch device (default: cpu, or cuda when available)."),
        click.option("--dtype", default=None, help="torch dtype (implies torch): fp32 (exact), bf16, fp16 (CUDA default); default: the CPU's (docs/routes.md)."),
        click.option("--image-mode", type=click.Choice(["anyres", "base"]), default="anyres", show_default=True,
                     help="anyres: faithful (base view + tiles); base: one 336 px view, ~5x fewer image tokens."),
        click.option("--instruction", default=None, help="Replace the one-word instruction of text/image prompts."),
        click.option("--lora", default=None, type=click.Path(exists=True, file_okay=False),
                     help="LoRA adapter directory from `e5v train`."),
        click.option("--pooling", type=click.Choice(pooler_names()), default=None,
                     help="last: E5-V's last-token state; mean / vision_mean: averages; tokens: one vector per "
                     "token (multi-vector; `e5v embed` to .jsonl/.parquet only); span_mean: jina-embeddings-v4's. "
                     "Default: the model family's."),
        click.option("--max-memory", default=None, metavar="SIZE",
                     help="Most memory the model load may use (e.g. 6GB; env E5V_MAX_MEMORY). A load estimated to "
                     "need more is refused before reading weights, naming the routes that fit."),
        click.option("--family", type=click.Choice(family_names()), default=None,
                     help="Model family recipe (e.g. gme for a GME checkpoint: its config is a plain Qwen2-VL's). "
                     "Default: from the model config and marker files."),
        click.option("--task", default=None,
                     help="Task adapter of checkpoints that carry several (jina-embeddings-v4: retrieval, "
                     "text-matching, code). Default: the family's."),
        click.option("--prompt", "prompt_name", default=None, metavar="NAME",
                     help="A named prompt set: e5v's (e5v, cirr-original, cirr-target) or the family's "
                     "(jina-embeddings-v4: query, passage). Default: the family's."),
        click.option("--image-formats", "image_formats", default=None, metavar="PNG,JPEG,...",
                     help="Image formats that may be decoded (Pillow ids, comma-separated). Default: "
                     "PNG,JPEG,WEBP,GIF,BMP,TIFF; others are refused from their header."),
        click.option("--qwen-min-pixels", "qwen_min_pixels", type=int, default=None,
                     help="Qwen2-VL only: lower bound of its dynamic image resolution (pixels after resizing)."),
        click.option("--qwen-max-pixels", "qwen_max_pixels", type=int, default=None,
                     help="Qwen2-VL only: upper bound of its dynamic image resolution (pixels after resizing)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def load_model(model: str, backend: str | None, device: str | None, dtype: str | None, image_mode: str,
               instruction: str | None, lora: str | None, pooling: str | None = None,
               qwen_min_pixels: int | None = None, qwen_max_pixels: int | None = None,
               image_formats: str | None = None, family: str | None = None, max_memory: str | None = None,
               task: str | None = None, prompt_name: str | None = None, **_: Any):
    """Load E5V from the shared options; turn e5v errors (and invalid option combinations) into CLI errors."""
    from ..encoder import E5V

    try:
        return E5V.from_pretrained(model, backend=backend, device=device, dtype=dtype, image_mode=image_mode,
                                   instruction=instruction, lora=lora, pooling=pooling,
                                   min_image_pixels=qwen_min_pixels, max_image_pixels=qwen_max_pixels, family=family,
                                   max_memory=max_memory, task=task, prompt=prompt_name,
                                   image_formats=[f.strip() for f in image_formats.split(",") if f.strip()]
                                   if image_formats else None)
    except (E5VError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def friendly_errors(f: Callable) -> Callable:
    """Show e5v errors as one-line CLI errors instead of tracebacks."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except E5VError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper
