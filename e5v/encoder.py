"""``E5V``: load a model once, then embed text, images and image+text into one space.

One data path for everything (CLI, server, store, Spark, eval), run by ``pipeline.Pipeline``:
inputs -> prompts -> tokens -> length-sorted batches -> backend -> pooler -> head -> input order.
``encode_iter`` streams it chunk by chunk; ``encode`` and ``encode_with_details`` are one chunk.
"""

from __future__ import annotations

import itertools
import os
import warnings
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from . import __version__
from .backends import backend_class
from .errors import InputError
from .families import family_for
from .head import Head
from .inputs import ImageLimits, Item
from .loading import DEFAULT_MODEL, Components, load_components
from .pipeline import EncodeResult, Pipeline, Request, progress_bar
from .preprocess import MAX_BATCH_TOKENS
from .prompts import PromptSet

IMAGE_MODES = ("anyres", "base")
ON_ERROR = ("raise", "skip")


class E5V:
    """A universal multimodal embedding model (E5-V).

    Example:
        >>> m = E5V.from_pretrained("royokong/e5-v")           # or a local directory
        >>> v = m.encode(["a dog", Path("cat.jpg"), {"image": img, "text": "make it red"}])
        >>> m.similarity(v[:1], v[1:])
    """

    #: LoRA adapter directory applied at load (None: none); merged into the weights, so recorded here for
    #: caches of derived vectors (e5v eval) that must tell an adapter's vectors from the base model's.
    lora: str | None = None
    #: Padded tokens one forward pass may hold (``preprocess.MAX_BATCH_TOKENS``): bounds activation memory
    #: whatever ``batch_size`` is; raise it on a machine with memory to spare.
    max_batch_tokens: int = MAX_BATCH_TOKENS

    def __init__(self, components: Components, backend: Any, *, image_mode: str = "anyres",
                 prompt: str | PromptSet | None = None, instruction: str | None = None, pooling: str | None = None,
                 image_limits: ImageLimits = ImageLimits()):
        if image_mode not in IMAGE_MODES:
            raise ValueError(f"unknown image_mode {image_mode!r}; choose one of {IMAGE_MODES}")
        self.components = components
        self.backend = backend
        self.image_mode = image_mode
        self.prompt = prompt
        self.instruction = instruction
        family = components.spec
        self.prompts = self._resolve(prompt, instruction)
        self.pooler = family.checked_pooler(pooling or family.default_pooling)
        self.image_limits = image_limits
        self.pipeline = Pipeline(components, backend)

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike = DEFAULT_MODEL, *, backend: str | None = None,
                        device: str | None = None, dtype: str | torch.dtype | None = None,
                        image_mode: str = "anyres", prompt: str | PromptSet | None = None,
                        instruction: str | None = None, pooling: str | None = None, revision: str | None = None,
                        lora: str | os.PathLike | None = None, max_pixels: int | None = None,
                        image_formats: Iterable[str] | None = None, family: str | None = None,
                        max_memory: str | int | None = None, min_image_pixels: int | None = None,
                        max_image_pixels: int | None = None, task: str | None = None) -> "E5V":
        """Load an E5-V model from a Hugging Face id or a local directory.

        Args:
            model: HF id (default ``royokong/e5-v``) or a directory (a checkpoint or an ``e5v export``).
            backend: "torch", "openvino" or "auto". None (the default) is ``E5V_BACKEND`` if set, else "auto": the
                route table (docs/routes.md) - an export directory runs on OpenVINO; a checkpoint on a CPU with int8
                units (AVX-512 VNNI, AMX) runs an OpenVINO int8 export built once into a cache; torch elsewhere,
                and always when a ``dtype`` (or ``E5V_DTYPE``), a ``lora`` or a non-CPU ``device`` is asked for.
            device, dtype: torch backend only; the CPU dtype follows the CPU (bf16 where native, else fp32), CUDA
                fp16. ``dtype="fp32"`` (or ``E5V_DTYPE=fp32``) is the exact route.
            image_mode: "anyres" (faithful: base view + up to 4 tiles) or "base" (one 336 px view, ~5x cheaper).
            prompt: a named prompt set (see ``e5v.prompts.NAMED_PROMPTS``) or a ``PromptSet``.
            instruction: replaces the one-word instruction of the text and image prompts.
            lora: a LoRA adapter directory from ``e5v train``, applied for inference.
            max_pixels: refuse images with more pixels (decompression-bomb guard), read from the header.
            max_memory: torch on CPU: the most memory the load may use ("6GB"; also ``E5V_MAX_MEMORY``), below what
                the machine reports; a load estimated (from the safetensors headers) to need more is refused before
                any weight is read, naming the routes that fit; the default fp32 falls back to bf16 if only that fits.
            family: the model family's recipe by name (``e5v.families.family_names()``: e.g. "gme" for a GME
                checkpoint, which has a plain Qwen2-VL config); None picks it from the config (and marker files).
            image_formats: Pillow format ids that may be decoded (default PNG, JPEG, WEBP, GIF, BMP, TIFF);
                anything else is refused from its header (e.g. EPS, which Pillow would render with Ghostscript).
            min_image_pixels, max_image_pixels: Qwen2-VL only: bounds of its dynamic resolution (pixels after
                resizing; the processor's ``min_pixels``/``max_pixels``). Fewer pixels, fewer image tokens.
            task: the task adapter of checkpoints that carry several (jina-embeddings-v4: "retrieval",
                "text-matching", "code"); None: the family's default. Part of the vector space.
        """
        components = load_components(model, revision, min_pixels=min_image_pixels, max_pixels=max_image_pixels,
                                     family=family, task=task)
        if image_mode not in components.spec.image_modes:
            raise ValueError(f"image_mode {image_mode!r} is not available for {components.spec.name} models; "
                             f"choose one of {components.spec.image_modes}")
        backend = backend or os.environ.get("E5V_BACKEND") or "auto"
        name, why = backend, None
        if backend == "auto":  # the route table picks the backend (and builds a cached export once)
            from .backends.export_cache import auto_backend

            torch_wanted = _torch_asked(dtype, lora, device)
            if detect_backend(components.path) == "openvino":  # an export (a partial one is refused by its loader)
                name, export, why = "openvino", None, "auto: an e5v export directory"
            elif torch_wanted:
                name, export, why = "torch", None, f"auto: {torch_wanted}"
            else:
                name, export, why = auto_backend(components)
            if export is not None:
                components = load_components(export, family=family, task=task)
                components.model_id = str(model)
        backend_obj = backend_class(name, components.spec).load(components, device=device, dtype=dtype,
                                                                lora=str(lora) if lora is not None else None,
                                                                max_memory=max_memory)
        if why is not None:
            backend_obj.route = f"{getattr(backend_obj, 'route', name)}; {why}"
        limits = ImageLimits(**{k: v for k, v in (("max_pixels", max_pixels),
                                                  ("formats", tuple(image_formats or ()))) if v})
        loaded = cls(components, backend_obj, image_mode=image_mode, prompt=prompt, instruction=instruction,
                     pooling=pooling, image_limits=limits)
        loaded.lora = str(lora) if lora is not None else None
        return loaded

    # ----------------------------------------------------------------- encoding
    def encode(self, inputs: Any, *, batch_size: int = 8, normalize: bool = True, instruction: str | None = None,
               prompt: str | PromptSet | None = None, image_mode: str | None = None,
               show_progress_bar: bool | None = None, on_error: str = "raise",
               pooling: str | None = None) -> np.ndarray | list:
        """Embed a list of items; returns float32 (N, D), rows in input order.

        Items: ``str`` -> text; ``PIL.Image`` / ``Path`` / ``bytes`` -> image; ``{"image", "text"}`` -> composed.
        ``on_error="raise"`` (default) raises InputError naming the first bad item; ``"skip"`` returns
        NaN rows for bad items and emits one warning listing them (use ``encode_with_details`` for the
        messages). ``pooling`` overrides the model's pooler for this call; ``"tokens"`` returns a list of
        (T_i, D) arrays (None for failed items) instead of one matrix.
        """
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}")
        result = self.encode_with_details(inputs, batch_size=batch_size, normalize=normalize,
                                          instruction=instruction, prompt=prompt, image_mode=image_mode,
                                          show_progress_bar=show_progress_bar, raise_on_error=on_error == "raise",
                                          pooling=pooling)
        if result.errors:
            listing = "; ".join(f"input {i}: {m}" for i, m in sorted(result.errors.items())[:5])
            warnings.warn(f"{len(result.errors)} input(s) could not be embedded (NaN rows): {listing}", stacklevel=2)
        return result.vectors

    def encode_with_details(self, inputs: Any, *, batch_size: int = 8, normalize: bool = True,
                            instruction: str | None = None, prompt: str | PromptSet | None = None,
                            image_mode: str | None = None, show_progress_bar: bool | None = None,
                            raise_on_error: bool = False, pooling: str | None = None) -> EncodeResult:
        """Like ``encode`` but never stops at a bad item (unless asked): returns vectors, errors, token counts."""
        raw = _as_list(inputs)
        request = self._request(batch_size, normalize, instruction, prompt, image_mode, pooling, raise_on_error)
        bar = progress_bar(show_progress_bar, len(raw), -(-len(raw) // batch_size))
        try:
            return self.pipeline.run(raw, request, self.embedding_dim, bar)
        finally:
            if bar is not None:
                bar.close()

    def encode_iter(self, inputs: Iterable[Any], *, chunk_size: int = 256, batch_size: int = 8,
                    normalize: bool = True, instruction: str | None = None, prompt: str | PromptSet | None = None,
                    image_mode: str | None = None, show_progress_bar: bool | None = None,
                    raise_on_error: bool = False, pooling: str | None = None) -> Iterator[EncodeResult]:
        """Stream ``inputs`` (any iterable, read lazily) and yield one ``EncodeResult`` per ``chunk_size`` items,
        in input order (``result.offset`` is the chunk's first input index; errors and token counts are keyed
        by position in the chunk). Memory holds one chunk of inputs (images probed, not decoded) and one batch
        of decoded images, however long the stream. Batches are length-sorted within a chunk, so a larger
        chunk batches better; vectors do not depend on it.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        request = self._request(batch_size, normalize, instruction, prompt, image_mode, pooling, raise_on_error)
        total = len(inputs) if hasattr(inputs, "__len__") else None
        bar = progress_bar(show_progress_bar, total, None if total is None else -(-total // batch_size))
        offset = 0
        try:
            for chunk in _chunks(inputs, chunk_size):
                try:
                    result = self.pipeline.run(chunk, request, self.embedding_dim, bar)
                except InputError as exc:  # raise_on_error: name the input by its position in the stream
                    raise InputError(exc.reason, offset + exc.index if exc.index is not None else None) from None
                result.offset = offset
                offset += len(chunk)
                yield result
        finally:
            if bar is not None:
                bar.close()

    def _request(self, batch_size: int, normalize: bool, instruction: str | None, prompt: str | PromptSet | None,
                 image_mode: str | None, pooling: str | None, raise_on_error: bool) -> Request:
        """Resolve one call's options (validated before any input is read)."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        mode = image_mode or self.image_mode
        if mode not in IMAGE_MODES or mode not in self.components.spec.image_modes:
            raise ValueError(f"unknown image_mode {mode!r}; choose one of {self.components.spec.image_modes}")
        prompts = self.prompts if instruction is None and prompt is None else self._resolve(
            prompt if prompt is not None else self.prompt, instruction if instruction is not None else self.instruction)
        pooler = self.pooler if pooling is None else self.components.spec.checked_pooler(pooling)
        return Request(prompts=prompts, mode=mode, pooler=pooler, head=Head(normalize=normalize),
                       batch_size=batch_size, raise_on_error=raise_on_error,
                       max_batch_tokens=self.max_batch_tokens, image_limits=self.image_limits)

    def encode_text(self, texts: Iterable[str], **kwargs) -> np.ndarray:
        """Embed texts with the text prompt. Each element must be a string."""
        texts = _as_list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputError(f"encode_text expects strings, got {type(t).__name__}", i)
        return self.encode(texts, **kwargs)

    def encode_image(self, images: Iterable[Any], **kwargs) -> np.ndarray:
        """Embed images (PIL images, paths or bytes; str is read as a path) with the image prompt."""
        return self.encode([{"image": _path_or(x)} for x in _as_list(images)], **kwargs)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity matrix (N, M) between two sets of vectors."""
        a = np.atleast_2d(np.asarray(a, dtype=np.float32))
        b = np.atleast_2d(np.asarray(b, dtype=np.float32))
        a = a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-12, None)
        b = b / np.clip(np.linalg.norm(b, axis=1, keepdims=True), 1e-12, None)
        return a @ b.T

    # ----------------------------------------------------------------- facts
    @property
    def embedding_dim(self) -> int:
        return int(self.components.config.text_config.hidden_size)

    @property
    def route(self) -> str:
        """What was loaded and why (backend, dtype, and the memory estimate against the budget)."""
        return getattr(self.backend, "route", f"{self.backend.name} {self.backend.weights}")

    @property
    def tokenizer(self):
        return self.components.tokenizer

    @property
    def processor(self):
        """The repaired LlavaNextProcessor (patch_size etc. filled in), for users who need it."""
        return self.components.processor

    def embedding_config(self, instruction: str | None = None, image_mode: str | None = None,
                         pooling: str | None = None) -> dict:
        """What determines the vector space; stores and servers refuse to mix vectors across configs."""
        prompts = self._resolve(self.prompt, instruction) if instruction is not None else self.prompts
        return {
            "model": self.components.model_id,
            "revision": self.components.revision,
            "backend": self.backend.name,
            "weights": self.backend.weights,
            "prompt_family": self.components.family,
            "prompts": {"text": prompts.text, "image": prompts.image, "composed": prompts.composed,
                        **({"system": prompts.system} if prompts.system is not None else {})},
            "image_mode": image_mode or self.image_mode,
            "pooling": pooling or self.pooler.name,
            "dim": self.embedding_dim,
            "e5v_version": __version__,
            # a family chosen by name or marker file (GME on a Qwen2-VL config) is part of the space; the
            # default family of a config is implied by the model, so E5-V configs are as they always were
            **({"family": self.components.spec.name} if self.components.spec is not
               family_for(self.components.config) else {}),
            **({"task": self.components.task} if self.components.task is not None else {}),
        }

    def _resolve(self, prompt: str | PromptSet | None, instruction: str | None) -> PromptSet:
        return self.components.spec.prompt_set(prompt, instruction, self.components.task)

    def __repr__(self) -> str:
        return (f"E5V(model={self.components.model_id!r}, backend={self.backend.name!r}, "
                f"weights={self.backend.weights!r}, image_mode={self.image_mode!r}, dim={self.embedding_dim})")


def _torch_asked(dtype: Any, lora: Any, device: Any) -> str | None:
    """Why the caller's options mean torch whatever the CPU (dtypes, LoRA adapters and devices are torch's)."""
    if dtype is not None:
        return f"dtype={dtype!r} asked for: torch"
    if os.environ.get("E5V_DTYPE", "auto") != "auto":
        return f"E5V_DTYPE={os.environ['E5V_DTYPE']} set: torch"
    if lora is not None:
        return "a LoRA adapter is applied on torch"
    if device not in (None, "cpu"):
        return f"device={device!r}: torch"
    return None


def detect_backend(path) -> str:
    """An ``e5v export`` directory (it has an ``e5v_manifest.json``) uses OpenVINO; anything else torch.

    A directory with IR parts but no manifest is an interrupted export: routed to OpenVINO too, whose
    manifest check then says so (instead of torch complaining about missing weights).
    """
    from pathlib import Path

    path = Path(path)
    exported = (path / "e5v_manifest.json").is_file() or (path / "language.xml").is_file()
    return "openvino" if exported else "torch"


def _as_list(inputs: Any) -> list:
    from pathlib import Path

    from PIL import Image

    if isinstance(inputs, (str, bytes, Path, Image.Image, dict, Item)):
        return [inputs]
    try:
        return list(inputs)
    except TypeError:
        raise InputError(f"expected a list of inputs, got {type(inputs).__name__}") from None


def _path_or(x: Any) -> Any:
    from pathlib import Path

    return Path(x) if isinstance(x, str) else x


def _chunks(inputs: Iterable[Any], size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter), read lazily from any iterable."""
    if isinstance(inputs, (str, bytes, dict, Item)) or not hasattr(inputs, "__iter__"):
        inputs = _as_list(inputs)
    iterator = iter(inputs)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
