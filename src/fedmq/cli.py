"""The `fedmq` command line."""

from __future__ import annotations

import typer

from fedmq.local import local_app
from fedmq.pki_cli import pki_app

app = typer.Typer(help="fedmq: federated learning over message brokers.", no_args_is_help=True)
app.add_typer(pki_app, name="pki")
app.add_typer(local_app, name="local")


@app.callback()
def main() -> None:
    """fedmq: federated learning over message brokers."""


@app.command()
def version() -> None:
    """Print fedmq's version."""
    from importlib.metadata import version as pkg_version

    typer.echo(pkg_version("fedmq"))
