"""The `fedmq` command line."""

from __future__ import annotations

import typer

app = typer.Typer(help="fedmq: federated learning over message brokers.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """fedmq: federated learning over message brokers."""


@app.command()
def version() -> None:
    """Print fedmq's version."""
    from importlib.metadata import version as pkg_version

    typer.echo(pkg_version("fedmq"))
