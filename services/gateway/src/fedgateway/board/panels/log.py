"""The component's events as this party's scheduler recorded them (start, end, reason)."""

from __future__ import annotations

from typing import Any

from fedgateway.board.registry import Panel


def build(ctx: dict[str, Any]) -> dict[str, Any] | None:
    name = ctx["node"].name
    rows = [e for e in ctx["logs"] if e.get("component") == name]
    return {"rows": rows} if rows else None


PANEL = Panel(slug="log", title="Log", template="panel_log.html", build=build, order=20)
