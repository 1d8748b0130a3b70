"""The `fedmq` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedmq.audit_cli import audit_app
from fedmq.data_cli import data_app
from fedmq.job_cli import job_app
from fedmq.local import local_app
from fedmq.pki_cli import pki_app
from fedmq.serving_cli import model_app, serving_app
from fedmq.site_cli import site_app
from fedmq.standalone_cli import standalone_app

app = typer.Typer(help="fedmq: federated learning over message brokers.", no_args_is_help=True)
app.add_typer(pki_app, name="pki")
app.add_typer(local_app, name="local")
app.add_typer(standalone_app, name="standalone")
app.add_typer(data_app, name="data")
app.add_typer(job_app, name="job")
app.add_typer(site_app, name="site")
app.add_typer(audit_app, name="audit")
app.add_typer(model_app, name="model")
app.add_typer(serving_app, name="serving")


@app.callback()
def main() -> None:
    """fedmq: federated learning over message brokers."""


@app.command()
def version() -> None:
    """Print fedmq's version."""
    from importlib.metadata import version as pkg_version

    typer.echo(pkg_version("fedmq"))


REPO_ROOT = Path(__file__).resolve().parents[2]


@app.command()
def demo(
    dataset: Annotated[str, typer.Option(help="breast or default_credit")] = "default_credit",
    key_bits: Annotated[int, typer.Option(help="Paillier key bits (>= 2048 outside tests)")] = 2048,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="hetero_lr epochs (default: the example pipeline's)")
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="folder with <dataset>_hetero_*.csv")] = REPO_ROOT
    / "examples"
    / "data",
    workdir: Annotated[Path, typer.Option(help="where the parties' SQLite files go")] = Path(
        ".fedmq/demo"
    ),
    log_level: Annotated[str, typer.Option(help="log level of the services (stderr)")] = "WARNING",
) -> None:
    """Run the standalone two-party exchange (guest + host in one process, in-memory brokers)."""
    import sys

    from fedcommon.logging import configure_logging
    from rich.console import Console

    configure_logging("fedmq-demo", level=log_level, json=False, stream=sys.stderr)

    from fedmq.demo import print_result, run_demo
    from fedmq.tables import TableError

    console = Console()
    try:
        result = run_demo(
            data_dir, workdir, dataset=dataset, key_bits=key_bits, epochs=epochs, console=console
        )
    except (TableError, FileNotFoundError) as exc:
        console.print(f"[red]cannot read the example data:[/red] {exc}")
        raise typer.Exit(2) from None
    print_result(result, console)
    if result.max_abs_error > 1e-6:
        console.print("[red]the federated result does not match the plaintext computation[/red]")
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
