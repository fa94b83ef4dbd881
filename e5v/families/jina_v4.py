"""jina-embeddings-v4 (``jinaai/jina-embeddings-v4``): Qwen2.5-VL-3B with task LoRA adapters, mean pooling.

Its model card's recipe (``modeling_jina_embeddings_v4.py``, single-vector embeddings), reproduced here:

* texts: no chat template, ``"Query: {text}"`` (the card's default ``prompt_name="query"``) or
  ``"Passage: {text}"`` (``prompt="passage"``); with the text-matching task both are ``"Query: "``;
  cut at 32768 tokens;
* images: ``<|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>Describe the image.<|im_end|>\\n``
  through the checkpoint's Qwen2.5-VL processor; files are opened with ``convert("RGB")`` (transparency
  dropped); an image and a text together is not an input the card embeds (refused);
* pooling: the mean of the final-norm states over the vision span (``<|vision_start|>`` to ``<|vision_end|>``,
  both included) for images, over all tokens for texts; L2-normalised (the ``span_mean`` pooler);
* task adapters: the checkpoint's ``adapters/`` holds one LoRA per task ("retrieval", "text-matching",
  "code"; each linear layer's ``lora_A.<task>``/``lora_B.<task>``, scaled by ``lora_alpha / r``); e5v merges
  the chosen one (``task=``, default "retrieval") into the weights at load. Checkpoints with the adapter
  already merged (``jina-embeddings-v4-vllm-retrieval`` etc., plain Qwen2.5-VL configs) load with
  ``family="jina_v4"`` and no task.

The card runs bf16 autocast; e5v's default is its usual CPU dtype. Matryoshka truncation and the 128-d
multi-vector projector are not provided yet.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError
from ..prompts import IMAGE, SENT, ChatFormat, PromptSet
from .qwen2_vl import Qwen2VL

if TYPE_CHECKING:  # torch is imported where the adapter merges and the pooler runs (the CLI lists families)
    import torch

JINA_RAW = ChatFormat("jina_v4", "{}", "<|vision_start|><|image_pad|><|vision_end|>")
IMAGE_PROMPT = f"<|im_start|>user\n{IMAGE}Describe the image.<|im_end|>\n"
TASKS = ("retrieval", "text-matching", "code")
ADAPTERS = "adapters"
#: module paths of the card's (transformers 4) Qwen2.5-VL -> today's transformers
_LAYOUT = ((re.compile(r"^model\.(?!language_model\.|visual\.)"), "model.language_model."),
           (re.compile(r"^visual\."), "model.visual."))
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])\.(?P<task>[^.]+)\.weight$")
_UNUSED = ("multi_vector_projector", "single_vector_projector")  # heads e5v's single-vector recipe does not run


class JinaV4(Qwen2VL):
    name = "jina_v4"
    model_types = ("qwen2_5_vl",)
    default_for_config = False  # chosen by its config's architecture, its marker file or by name
    architectures = ("JinaEmbeddingsV4Model",)
    marker_architectures = ("JinaEmbeddingsV4Model",)
    marker_files = ("modeling_jina_embeddings_v4.py",)
    kinds = ("text", "image")
    poolers = ("span_mean",)
    default_pooling = "span_mean"
    alpha = "drop"
    max_tokens = 32768
    tasks = TASKS

    def chat_format(self, config: Any) -> ChatFormat:
        return JINA_RAW

    def default_prompts(self) -> PromptSet:
        return self.named_prompts()["query"]

    def named_prompts(self, task: str | None = None) -> dict[str, PromptSet]:
        query = PromptSet(text=f"Query: {SENT}", image=IMAGE_PROMPT, composed=IMAGE_PROMPT + SENT)
        passage = query if task == "text-matching" else PromptSet(text=f"Passage: {SENT}", image=IMAGE_PROMPT,
                                                                  composed=IMAGE_PROMPT + SENT)
        return {"query": query, "passage": passage}

    def apply_instruction(self, prompts: PromptSet, instruction: str | None) -> PromptSet:
        if instruction is not None:
            raise ValueError("jina-embeddings-v4 takes no instruction: use prompt='query' or prompt='passage' and "
                             "the task adapter (task='retrieval', 'text-matching' or 'code')")
        return prompts

    def pooler(self, name: str) -> Any:
        return SpanMeanPooler() if name == "span_mean" else super().pooler(name)

    def task_for(self, path: Path, task: str | None) -> str | None:
        if task is not None and task not in TASKS:
            raise ValueError(f"unknown task {task!r} for jina-embeddings-v4; choose one of {list(TASKS)}")
        if (Path(path) / ADAPTERS / "adapter_config.json").is_file():
            return task or TASKS[0]
        if task is not None:
            raise ValueError(f"{path} has no {ADAPTERS}/ directory: it is a single-task checkpoint (adapter already "
                             "merged); load it without task=")
        return None

    def adapt_weights(self, model: Any, components: Any) -> None:
        if components.task is not None:
            merge_task_adapter(model, Path(components.path) / ADAPTERS, components.task)


class SpanMeanPooler:
    """The card's single-vector pooling: the mean over the vision span (the image features and the vision
    start/end markers around them) for rows with an image, over all real tokens for the others."""

    name = "span_mean"
    multi_vector = False

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor, image_mask: torch.Tensor | None = None) -> torch.Tensor:
        import torch

        weights = mask.to(hidden.device, torch.bool)  # (B, L)
        if image_mask is not None and bool(image_mask.any()):
            span = image_mask.to(hidden.device, torch.bool)
            span = span | torch.roll(span, 1, dims=1) | torch.roll(span, -1, dims=1)  # + the markers either side
            has_image = image_mask.any(dim=1, keepdim=True).to(hidden.device)
            weights = torch.where(has_image, span & weights, weights)
        w = weights.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
        return (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1)  # (B, D)


def merge_task_adapter(model: torch.nn.Module, adapter_dir: Path, task: str) -> None:
    """Add ``scale * B @ A`` of ``task``'s LoRA to every linear layer it targets, in place.

    Every adapted module must exist in the model with matching shapes, and the task must have weights:
    anything else is refused (a partly merged adapter would give silently wrong vectors)."""
    import torch
    from safetensors.torch import load_file

    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
        rank, alpha = int(config["r"]), float(config["lora_alpha"])
        files = sorted(adapter_dir.glob("*.safetensors"))
        weights = {k: v for f in files for k, v in load_file(f).items()}
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot read the task adapters in {adapter_dir}: {exc}") from exc
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():
        match = _LORA_KEY.match(key)
        if match is None:
            raise ModelLoadError(f"unexpected tensor {key!r} in the task adapters in {adapter_dir}")
        if match["task"] == task:
            pairs.setdefault(match["module"], {})[match["part"]] = tensor
    if not pairs:
        raise ModelLoadError(f"the adapters in {adapter_dir} have no weights for task {task!r}")
    modules = dict(model.named_modules())
    for module, parts in sorted(pairs.items()):
        if module.startswith(_UNUSED):
            continue
        target = modules.get(_current_path(module))
        if target is None or "A" not in parts or "B" not in parts:
            raise ModelLoadError(f"the {task} adapter in {adapter_dir} does not fit the model: {module!r} "
                                 + ("is not one of its layers" if target is None else "lacks lora_A or lora_B"))
        delta = scale * (parts["B"].float() @ parts["A"].float())
        if tuple(delta.shape) != tuple(target.weight.shape):
            raise ModelLoadError(f"the {task} adapter for {module!r} is {tuple(delta.shape)}, the layer is "
                                 f"{tuple(target.weight.shape)}")
        with torch.no_grad():
            target.weight.copy_((target.weight.float() + delta).to(target.weight.dtype))


def _current_path(module: str) -> str:
    for pattern, replacement in _LAYOUT:
        if pattern.match(module):
            return pattern.sub(replacement, module, count=1)
    return module
