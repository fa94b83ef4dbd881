"""`e5v train` and `e5v merge`: thin shells over e5v.train (the paper's text-only LoRA recipe)."""

from __future__ import annotations

import click

from .common import friendly_errors


@click.command()
@click.option("--model", "-m", default="royokong/e5-v", show_default=True,
              help="LLaVA-NeXT checkpoint (directory or Hugging Face id); only its language model is loaded.")
@click.option("--data", "-d", required=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV/TSV/JSONL of triplets (sent0, sent1, hard_neg) or pairs (sent0, sent1).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Output directory: peft adapter, e5v_train_manifest.json, train_log.jsonl, checkpoints/.")
@click.option("--max-steps", type=int, default=None, help="Optimizer steps (overrides --epochs).")
@click.option("--epochs", type=float, default=2.0, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True,
              help="Rows per micro-batch, over all processes (a multiple of the process count).")
@click.option("--grad-accum", type=int, default=1, show_default=True,
              help="Micro-batches per optimizer step (gradients accumulate; negatives stay per micro-batch).")
@click.option("--lr", type=float, default=4e-4, show_default=True)
@click.option("--warmup-steps", type=int, default=100, show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--max-grad-norm", type=float, default=1.0, show_default=True, help="Gradient clipping (0: off).")
@click.option("--temperature", type=float, default=0.05, show_default=True)
@click.option("--lora-r", type=int, default=64, show_default=True)
@click.option("--lora-alpha", type=int, default=16, show_default=True)
@click.option("--lora-dropout", type=float, default=0.05, show_default=True)
@click.option("--max-length", type=int, default=32, show_default=True, help="Sentence tokens kept in the prompt.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="bf16: bf16 base weights + autocast (halves memory; slow on CPUs without native bf16).")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=True, show_default=True)
@click.option("--device", default=None, help="cpu, cuda or cuda:N [default: cuda when available]; under "
              "`accelerate launch` each process takes its LOCAL_RANK's GPU.")
@click.option("--instruction", default=None,
              help="Train with this one-word instruction (pass the same --instruction at inference).")
@click.option("--anchor-column", default="sent0", show_default=True)
@click.option("--positive-column", default="sent1", show_default=True)
@click.option("--negative-column", default=None,
              help="Hard-negative column [default: hard_neg when the file has it, else pairs].")
@click.option("--no-negatives", is_flag=True, help="Ignore any hard-negative column (in-batch negatives only).")
@click.option("--save-every", type=int, default=500, show_default=True, help="Checkpoint every N steps.")
@click.option("--keep-checkpoints", type=int, default=2, show_default=True, help="Newest checkpoints kept (0: all).")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in OUTPUT/checkpoints.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@friendly_errors
def train(model, data, output, max_steps, epochs, batch_size, grad_accum, lr, warmup_steps, weight_decay,
          max_grad_norm, temperature, lora_r, lora_alpha, lora_dropout, max_length, seed, precision,
          gradient_checkpointing, device, instruction, anchor_column, positive_column, negative_column, no_negatives,
          save_every, keep_checkpoints, resume, quiet) -> None:
    """Train a LoRA adapter on text pairs/triplets with the inference text prompt (E5-V's recipe).

    Use the result with E5V.from_pretrained(MODEL, lora=OUTPUT), `--lora OUTPUT` on any command, or
    bake it in with `e5v merge`.
    """
    from ..train import TrainConfig
    from ..train.trainer import train as run

    if no_negatives and negative_column:
        raise click.UsageError("--no-negatives and --negative-column exclude each other")
    config = TrainConfig(
        model=model, data=data, output=output, max_steps=max_steps, epochs=epochs, batch_size=batch_size,
        grad_accum=grad_accum, lr=lr, warmup_steps=warmup_steps, weight_decay=weight_decay,
        max_grad_norm=max_grad_norm, temperature=temperature, lora_r=lora_r, lora_alpha=lora_alpha,
        lora_dropout=lora_dropout, max_length=max_length, seed=seed, precision=precision,
        gradient_checkpointing=gradient_checkpointing, device=device, instruction=instruction,
        anchor_column=anchor_column,
        positive_column=positive_column, negative_column=None if no_negatives else (negative_column or "hard_neg"),
        negative_column_given=negative_column is not None, save_every=save_every,
        keep_checkpoints=keep_checkpoints, resume=resume, show_progress=not quiet,
    )
    try:
        manifest = run(config)
    except ValueError as exc:  # option values (InputError/DataError are E5VErrors, handled by friendly_errors)
        raise click.ClickException(str(exc)) from None
    click.echo(f"trained {manifest['steps']} steps, final loss {manifest['final_loss']:.4f}; adapter in {output}",
               err=True)


@click.command()
@click.option("--model", "-m", default="royokong/e5-v", show_default=True, help="Base LLaVA-NeXT checkpoint.")
@click.option("--lora", required=True, type=click.Path(exists=True, file_okay=False),
              help="Adapter directory from `e5v train` (or one of its checkpoints).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="New checkpoint directory.")
@friendly_errors
def merge(model, lora, output) -> None:
    """Write a full LLaVA-NeXT checkpoint with the adapter merged into its language model.

    Vision tower and projector are copied unchanged; tokenizer and processor files are copied.
    """
    from ..train.merge import merge_lora

    path = merge_lora(model, lora, output)
    click.echo(f"merged checkpoint written to {path}", err=True)
