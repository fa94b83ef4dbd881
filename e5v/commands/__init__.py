"""CLI subcommands, one module per concern; see e5v.cli.COMMANDS."""
