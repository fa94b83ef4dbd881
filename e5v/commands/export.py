"""`e5v export`: convert a LLaVA-NeXT / E5-V checkpoint to OpenVINO IR parts (thin shell over export_openvino)."""

from __future__ import annotations

import click

from .common import friendly_errors


@click.command()
@click.option("--model", "-m", default="royokong/e5-v", show_default=True,
              help="Hugging Face id or local directory of the checkpoint to export.")
@click.option("--format", "fmt", type=click.Choice(["openvino"]), default="openvino", show_default=True)
@click.option("--weights", type=click.Choice(["fp32", "int8", "int4"]), default="int8", show_default=True,
              help="fp32: exact; int8: NNCF INT8 per channel; int4: language model INT4_ASYM (vision int8).")
@click.option("--group-size", default=64, show_default=True, help="int4 group size.")
@click.option("--ratio", default=1.0, show_default=True,
              help="int4 only: share of the language model's matmuls in 4 bit (the rest int8).")
@click.option("--calibration", metavar="builtin|FILE", default=None,
              help="int4 only: data-aware compression (GPTQ) on e5v's built-in set (16 texts and one anyres "
                   "image) or on a JSONL file of {\"text\"}/{\"image\"} items. Better int4 accuracy; much "
                   "slower, and needs several times the fp32 model's RAM (12 GB for a 2-layer E5-V-width model: "
                   "not for the 8B on 24 GB; docs/openvino.md).")
@click.option("--load-dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="Precision the source is loaded in. bf16 halves export RAM (int8/int4 only): use it for "
                   "the 8B model on machines under ~40 GB.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--overwrite", is_flag=True, help="Allow a non-empty output directory that is not an earlier export.")
@click.option("--verify", is_flag=True, help="Re-hash every written file against the manifest.")
@friendly_errors
def export(model, fmt, weights, group_size, ratio, calibration, load_dtype, output, overwrite, verify) -> None:
    """Export MODEL to OpenVINO IR (vision, language model without lm_head, token table) plus a manifest.

    Load the result with E5V.from_pretrained(OUTPUT) or `e5v embed --model OUTPUT`.
    """
    from ..export import export_openvino

    if group_size <= 0:
        raise click.BadParameter("must be positive", param_hint="--group-size")
    try:
        export_openvino(model, output, weights=weights, group_size=group_size, ratio=ratio, load_dtype=load_dtype,
                        overwrite=overwrite, calibration=calibration,
                        verify=verify, log=lambda msg: click.echo(msg, err=True))
    except (FileExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
