"""The component's single-value metrics at this party (AUC, KS, intersection size...)."""

from __future__ import annotations

from typing import Any

from fedgateway.board.registry import Panel


def build(ctx: dict[str, Any]) -> dict[str, Any] | None:
    name = ctx["node"].name
    rows = [m for m in ctx["metrics"]["data"] if m["component"] == name and m["step"] < 0]
    return {"rows": sorted(rows, key=lambda m: (m["party_id"], m["name"]))} if rows else None


PANEL = Panel(slug="metrics", title="Metrics", template="panel_metrics.html", build=build, order=30)
