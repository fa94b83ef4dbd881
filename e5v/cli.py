"""The ``e5v`` command: one group, subcommands loaded lazily so ``e5v --help`` stays instant.

Each subcommand lives in ``e5v/commands/<name>.py`` as a click command and is a thin shell over
``E5V.encode`` (or the store/server/trainer built on it). Register a new one in ``COMMANDS``.
"""

from __future__ import annotations

import importlib

import click

from . import __version__

#: subcommand -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "embed": "e5v.commands.embed:embed",
    "similarity": "e5v.commands.embed:similarity",
    "demo": "e5v.commands.demo:demo",
    "export": "e5v.commands.export:export",
    "index": "e5v.commands.store:index",
    "search": "e5v.commands.store:search",
    "serve": "e5v.commands.serve:serve",
    "train": "e5v.commands.train:train",
    "merge": "e5v.commands.train:merge",
    "eval": "e5v.commands.eval:eval_group",
    "info": "e5v.commands.info:info",
}

_HELP = {
    "embed": "Embed texts, images or image+text pairs to .npy/.jsonl/.parquet.",
    "similarity": "Print the cosine similarity of inputs against each other.",
    "demo": "Offline demo on a generated tiny model (random weights).",
    "export": "Export to OpenVINO IR with fp32/int8/int4 weights.",
    "index": "Embed files into a persistent vector store.",
    "search": "Search a vector store by text, image or image+text.",
    "serve": "OpenAI-compatible embedding server.",
    "train": "Text-only contrastive LoRA training (the paper's recipe).",
    "merge": "Merge a LoRA adapter into a full checkpoint.",
    "eval": "The paper's evaluation protocols.",
    "info": "What a model load chose and why (family, route, memory).",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            message = f"`e5v {name}` is not available: {exc}"

            @click.command(name=name, help=_HELP.get(name, ""))
            def unavailable() -> None:
                raise click.ClickException(message)

            return unavailable

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="e5v")
def cli() -> None:
    """e5v: universal multimodal embeddings with E5-V."""


def main() -> None:
    cli(prog_name="e5v")  # the same name in usage and errors for `e5v` and `python -m e5v`


if __name__ == "__main__":  # pragma: no cover
    main()
