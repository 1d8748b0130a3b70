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
from rich.markup import escape
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
        out: dict[tuple[str, str], list[SpanLine]] = defaultdict(list)
        for span in self.spans:
            if span.parent_span_id:
                out[(span.trace_id, span.parent_span_id)].append(span)
        return out


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"


def _label(span: SpanLine) -> str:
    style = "red" if span.status == "ERROR" else "bold"
    where = f"{span.service}@{span.party}" if span.party else span.service
    return (
        f"[{style}]{escape(span.name)}[/{style}]  [cyan]{escape(where)}[/cyan]  "
        f"[green]{_duration(span.seconds)}[/green]"
    )


def render(job: JobTrace, *, limit: int = 0) -> Tree:
    """The span tree (roots in start order, children under their parent); with `limit` > 0,
    at most that many spans, and a last line saying how many were left out."""
    tree = Tree(
        f"job [bold]{escape(job.job_id)}[/bold]: {len(job.spans)} spans in {job.traces} "
        f"traces; parties {', '.join(job.parties) or '-'}; "
        f"services {', '.join(job.services) or '-'}"
    )
    children = job.children()
    shown = 0
    stack: list[tuple[Tree, SpanLine]] = [(tree, root) for root in reversed(job.roots())]
    while stack and (limit <= 0 or shown < limit):
        parent, span = stack.pop()
        node = parent.add(_label(span))
        shown += 1
        for child in reversed(children.get((span.trace_id, span.span_id), [])):
            stack.append((node, child))
    if shown < len(job.spans):
        tree.add(f"[dim]... {len(job.spans) - shown} more spans (--limit 0 shows all)[/dim]")
    return tree
