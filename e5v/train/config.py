"""Hyper-parameters of one training run, with the paper's values as defaults where they fit a CPU."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class TrainConfig:
    """Everything that defines a run. Defaults follow DESIGN.md §3 (except batch size: 768 needs GPUs)."""

    model: str  # LLaVA-NeXT checkpoint (directory or HF id)
    data: str  # CSV/TSV/JSONL of pairs or triplets
    output: str  # adapter + manifest + checkpoints + train_log.jsonl go here
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    epochs: float = 2.0
    batch_size: int = 32  # rows per micro-batch, over all processes (paper: global batch 768)
    grad_accum: int = 1  # micro-batches per optimizer step (global batch = batch_size * grad_accum)
    lr: float = 4e-4
    warmup_steps: int = 100  # linear warm-up, then linear decay to 0 at the last step
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # gradient clipping (0 disables)
    temperature: float = 0.05
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    max_length: int = 32  # sentence tokens kept inside the prompt's text slot
    seed: int = 42
    precision: str = "fp32"  # fp32, or bf16 (bf16 base weights + CPU/GPU autocast)
    gradient_checkpointing: bool = True
    device: str | None = None  # cpu / cuda / cuda:N (default: cuda if available); launchers set it per rank
    instruction: str | None = None  # replaces the one-word instruction (must match at inference)
    anchor_column: str = "sent0"
    positive_column: str = "sent1"
    negative_column: str | None = "hard_neg"  # used when present in the file
    negative_column_given: bool = False  # True: the column must exist (the user named it)
    save_every: int = 500  # checkpoint interval in optimizer steps (the last step is always saved)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk (0 keeps all)
    resume: bool = False  # continue from the newest checkpoint in output/checkpoints
    show_progress: bool = True

    def validate(self) -> None:
        checks = [
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (self.epochs > 0, "epochs must be > 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.grad_accum >= 1, "grad_accum must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.temperature > 0, "temperature must be > 0"),
            (self.lora_r >= 1 and self.lora_alpha > 0, "lora_r must be >= 1 and lora_alpha > 0"),
            (0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
            (self.max_length >= 1, "max_length must be >= 1"),
            (self.save_every >= 1, "save_every must be >= 1"),
            (self.keep_checkpoints >= 0, "keep_checkpoints must be >= 0"),
            (self.precision in ("fp32", "bf16"), "precision must be fp32 or bf16"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def hyperparameters(self) -> dict:
        """What shapes the result (recorded in the manifest; resume refuses to change it)."""
        skip = {"model", "data", "output", "resume", "show_progress", "save_every", "keep_checkpoints",
                "negative_column_given", "max_steps", "epochs", "device"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def to_dict(self) -> dict:
        return asdict(self)
