"""What a model family is: everything that differs between multimodal LLMs, in one object.

A family covers one architecture (LLaVA-NeXT, Qwen2-VL, ...) and answers every architecture question the
rest of e5v asks: which processor files to load and how to repair and check them, which token marks an
image and how many features an image becomes, which chat format its prompts use and which prompts are its
defaults, which processor output carries the batch geometry, whether positions depend on the token layout
(M-RoPE), which torch backend runs it and which backends, image modes and poolers it supports, and whether
e5v can train or export it. Loading, batching, prompts, export and training ask it (capability flags), and
never compare names. A new family is one module in ``e5v/families/`` (found there, no list to edit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..prompts import ChatFormat, PromptSet


class Family:
    """Base class; each family module subclasses it. Class attributes are the family's capabilities."""

    name: str = ""  # the family's name (family=, --family), recorded in embedding configs when not the default
    model_types: tuple[str, ...] = ()  # config.model_type values this family covers
    default_for_config: bool = True  # the family a config of these model_types gets unless another is chosen
    architectures: tuple[str, ...] = ()  # for error messages
    torch_backend: str = "e5v.backends.torch_backend:TorchBackend"  # "module:Class"
    backends: tuple[str, ...] = ("torch",)  # backend names that support this family
    image_modes: tuple[str, ...] = ("anyres",)  # accepted image_mode values
    poolers: tuple[str, ...] = ("last", "mean", "vision_mean", "tokens")  # pooler names that make sense here
    default_pooling: str = "last"
    image_token: str = "<image>"  # the tokenizer's image placeholder token
    geometry_key: str = "image_sizes"  # image-processor output holding each image's geometry
    mrope: bool = False  # positions depend on the token layout (the backend computes them)
    trainable: bool = False  # `e5v train` supports it (text-only LoRA on its language model)
    alpha: str = "white"  # transparency: composited on white (transformers) or "drop"ped (PIL convert)
    max_tokens: int | None = None  # the recipe's sequence limit, when below the model's positions
    max_text_tokens: int | None = None  # the recipe's lower limit for text-only items, if it has one
    marker_files: tuple[str, ...] = ()  # files in a checkpoint directory that select this family
    marker_architectures: tuple[str, ...] = ()  # config.architectures entries that select this family
    kinds: tuple[str, ...] = ("text", "image", "composed")  # item kinds the recipe embeds
    tasks: tuple[str, ...] = ()  # task adapters the family's checkpoints may carry (``task=``); () for none

    def named_prompts(self, task: str | None = None) -> dict[str, PromptSet]:
        """The family's own named prompt sets (``prompt="query"``), looked up before e5v's
        (``prompts.NAMED_PROMPTS``); ``task`` is the loaded task adapter, for recipes whose prompts follow it."""
        return {}

    def task_for(self, path: Path, task: str | None) -> str | None:
        """The task adapter to merge from the checkpoint in ``path`` (None: none); refuses a task the family or
        the checkpoint does not have."""
        if task is not None:
            raise ValueError(f"task {task!r} is not available for {self.name} models (they have no task adapters)")
        return None

    def prompt_set(self, prompt: Any, instruction: str | None, task: str | None = None) -> PromptSet:
        """The prompts of a call: the caller's PromptSet, a named set (the family's own first, then e5v's) or the
        family's default, with ``instruction`` placed where the recipe puts it (E5-V: the one-word instruction;
        GME: the system turn)."""
        from ..prompts import resolve_prompts

        if prompt is None:
            prompt = self.default_prompts()
        elif isinstance(prompt, str):
            prompt = self.named_prompts(task).get(prompt, prompt)
        return self.apply_instruction(resolve_prompts(prompt), instruction)

    def checked_pooler(self, name: str) -> Any:
        """``pooler(name)``, refusing a pooler this family does not offer."""
        if name not in self.poolers:
            raise ValueError(f"pooling {name!r} is not available for {self.name} models; choose one of "
                             f"{list(self.poolers)}")
        return self.pooler(name)

    def pooler(self, name: str) -> Any:
        """The pooler called ``name`` (e5v's, unless the recipe pools its own way)."""
        from ..pooling import get_pooler

        return get_pooler(name)

    def adapt_weights(self, model: Any, components: Any) -> None:
        """Change the loaded full model in place before e5v keeps its base (e.g. merge a task adapter)."""

    def prepare_image(self, image: Any) -> Any:
        """The recipe's own image step after decoding (e.g. a resize), before the image processor."""
        return image

    def apply_instruction(self, prompts: PromptSet, instruction: str | None) -> PromptSet:
        """Where a caller's ``instruction=`` goes: E5-V replaces the one-word instruction of the text and image
        prompts (``prompts.with_instruction``)."""
        from ..prompts import with_instruction

        return with_instruction(prompts, instruction)

    def chat_format(self, config: Any) -> ChatFormat:
        """The chat format the language model expects, from its config."""
        raise NotImplementedError

    def default_prompts(self) -> PromptSet:
        """The prompts used when the caller names none (E5-V's one-word prompts by default)."""
        return PromptSet()

    def load_processors(self, path: Path, config: Any, tokenizer: Any, options: dict) -> tuple[Any, Any]:
        """(image processor, full processor or None), repaired for this family; ``options`` holds the
        family's own loading options (e.g. Qwen2-VL's min/max pixels)."""
        raise NotImplementedError

    def validate(self, components: Any) -> None:
        """Refuse processor/model disagreements e5v cannot repair (ModelLoadError)."""

    def count_image_tokens(self, size: tuple[int, int], mode: str, components: Any) -> int:
        """Image features an image of ``size`` (width, height) becomes; used to plan batches."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<family {self.name}>"
