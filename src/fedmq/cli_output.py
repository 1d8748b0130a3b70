"""Terminal output the fedmq commands share: rich tables of rows, per-task progress bars."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable


def rich_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    right: Collection[str] = (),
) -> RichTable:
    """A table of already formatted cells; the columns named in `right` (numbers) align right."""
    table = RichTable(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left")
    for row in rows:
        table.add_row(*row)
    return table


def task_progress(console: Console) -> Progress:
    """Bars for a job's tasks: description, bar, percentage, a `state` field, time elapsed."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


# The summary of what crossed between the parties (`fedmq run` and `fedmq demo`).
CROSSED_TITLE = "What crossed between the parties (signed, verified, recorded)"
CROSSED_COLUMNS = ("from", "to", "tag", "kind", "messages", "bytes")
