"""The paper's text-only contrastive LoRA training (``e5v train``) and adapter merging (``e5v merge``).

Heavy imports (torch, transformers, peft) stay inside the submodules.
"""

from .config import TrainConfig

__all__ = ["TrainConfig", "train", "merge_lora", "read_examples"]


def __getattr__(name: str):
    if name == "train":
        from .trainer import train

        return train
    if name == "merge_lora":
        from .merge import merge_lora

        return merge_lora
    if name == "read_examples":
        from .data import read_examples

        return read_examples
    raise AttributeError(name)
