"""`e5v info`: what a model load chose and why (family, backend route, memory, CPU), as JSON."""

from __future__ import annotations

import json

import click

from .common import load_model, model_options


@click.command()
@model_options
def info(**model_kw) -> None:
    """Load the model and print its family, route, embedding config and the machine facts behind the route."""
    from ..backends.cpu_features import cpu_flags, has_int8_dot_product
    from ..backends.memory import memory_budget

    model = load_model(**model_kw)
    flags = cpu_flags() or set()
    budget = memory_budget(model_kw.get("max_memory"))
    click.echo(json.dumps({
        "model": model.components.model_id,
        "family": model.components.spec.name,
        "route": model.route,
        "embedding_config": model.embedding_config(),
        "machine": {"int8_dot_product": has_int8_dot_product(flags or None),
                    "native_bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
                    "memory_budget_bytes": budget},
    }, indent=2, default=str))
