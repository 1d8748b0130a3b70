"""A job's spans as a tree, from trace files (`fedmq job trace`): no Jaeger needed.

Spans come from the JSON-lines files the services append to (FEDMQ_<SERVICE>_TRACE_FILE;
`fedmq local up` sets <dir>/<party>/traces/<service>.jsonl) or from an OpenTelemetry
Collector's file exporter (fedcommon.tracing.read_span_file reads both). A job's spans are the
traces in which some span carries `fedmq.job_id` = the job (the bus runtime stamps it on every
publish and handler span); within them a span hangs under its parent, and a span whose parent
is not in the files (another party's collector, or a trace started by a message) is a root.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fedcommon.tracing import SpanLine, read_span_file
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

JOB_ATTRIBUTE = "fedmq.job_id"


def trace_files(directory: Path) -> list[Path]:
    """The trace files under a `fedmq local` folder (<dir>/<party>/traces/*.jsonl)."""
    return sorted(directory.glob("*/traces/*.jsonl"))


def read_spans(paths: Iterable[Path]) -> list[SpanLine]:
    spans: list[SpanLine] = []
    for path in paths:
        with path.open(encoding="utf-8") as lines:
            try:
                spans.extend(read_span_file(lines))
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
    return spans


def job_spans(spans: Iterable[SpanLine], job_id: str) -> list[SpanLine]:
    """Every span of the traces that touch `job_id`, once each, in start order."""
    spans = list(spans)
    traces = {s.trace_id for s in spans if s.attributes.get(JOB_ATTRIBUTE) == job_id}
    unique = {(s.trace_id, s.span_id): s for s in spans if s.trace_id in traces}
    return sorted(unique.values(), key=lambda s: (s.start_ns, s.span_id))


@dataclass(frozen=True)
class JobTrace:
    job_id: str
    spans: list[SpanLine]

    @property
    def traces(self) -> int:
        return len({s.trace_id for s in self.spans})

    @property
    def parties(self) -> list[str]:
        return sorted({s.party for s in self.spans if s.party})

    @property
    def services(self) -> list[str]:
        return sorted({s.service for s in self.spans if s.service})

    def roots(self) -> list[SpanLine]:
        known = {(s.trace_id, s.span_id) for s in self.spans}
        return [s for s in self.spans if (s.trace_id, s.parent_span_id) not in known]

    def children(self) -> dict[tuple[str, str], list[SpanLine]]:
        """Each span's children (by trace and span id), in start order."""
        out: dict[tuple[str, str], list[SpanLine]] = defaultdict(list)
        for span in self.spans:
            if span.parent_span_id:
                out[(span.trace_id, span.parent_span_id)].append(span)
        return out


MAX_INDENT = 12
"""Levels of indentation the table shows; deeper spans say their depth instead (a job's trace
nests a message's hops 20 to 30 levels deep)."""


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"


def _where(span: SpanLine) -> str:
    return f"{span.service}@{span.party}" if span.party else span.service


def _name(span: SpanLine) -> str:
    style = "red" if span.status == "ERROR" else "bold"
    return f"[{style}]{escape(span.name)}[/{style}]"


def _walk(job: JobTrace, limit: int) -> tuple[list[tuple[int, SpanLine]], int]:
    """(depth, span) in tree order (roots by start, children under their parent by start),
    at most `limit` (0: all); and how many were left out."""
    children = job.children()
    out: list[tuple[int, SpanLine]] = []
    stack = [(0, root) for root in reversed(job.roots())]
    while stack and (limit <= 0 or len(out) < limit):
        depth, span = stack.pop()
        out.append((depth, span))
        for child in reversed(children.get((span.trace_id, span.span_id), [])):
            stack.append((depth + 1, child))
    return out, len(job.spans) - len(out)


def _title(job: JobTrace) -> str:
    return (
        f"job [bold]{escape(job.job_id)}[/bold]: {len(job.spans)} spans in {job.traces} "
        f"trace{'' if job.traces == 1 else 's'}; parties {', '.join(job.parties) or '-'}; "
        f"services {', '.join(job.services) or '-'}"
    )


def render(job: JobTrace, *, limit: int = 0) -> Group:
    """The span tree as a table: start (after the job's first span), duration, service@party,
    and the span's name indented by its depth; with `limit` > 0, at most that many spans and a
    last row saying how many were left out."""
    table = Table(box=None, pad_edge=False)
    table.add_column("start", justify="right", style="dim")
    table.add_column("duration", justify="right", style="green")
    table.add_column("where", style="cyan")
    table.add_column("span")
    first = job.spans[0].start_ns if job.spans else 0
    rows, left_out = _walk(job, limit)
    for depth, span in rows:
        indent = "  " * min(depth, MAX_INDENT) + (
            f"[dim]{depth}>[/dim] " if depth > MAX_INDENT else ""
        )
        table.add_row(
            f"+{_duration((span.start_ns - first) / 1e9)}",
            _duration(span.seconds),
            escape(_where(span)),
            indent + _name(span),
        )
    if left_out:
        table.add_row("", "", "", f"[dim]... {left_out} more spans (--limit 0 shows all)[/dim]")
    return Group(_title(job), table)


def render_tree(job: JobTrace, *, limit: int = 0) -> Tree:
    """The same as a rich Tree (readable for shallow traces)."""
    tree = Tree(_title(job))
    nodes: list[Tree] = [tree]
    rows, left_out = _walk(job, limit)
    for depth, span in rows:
        del nodes[depth + 1 :]
        where, took = escape(_where(span)), _duration(span.seconds)
        nodes.append(
            nodes[depth].add(f"{_name(span)}  [cyan]{where}[/cyan]  [green]{took}[/green]")
        )
    if left_out:
        tree.add(f"[dim]... {left_out} more spans (--limit 0 shows all)[/dim]")
    return tree
