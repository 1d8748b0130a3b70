"""The confusion matrix of a binary evaluation at its threshold, from its tp/fp/tn/fn metrics."""

from __future__ import annotations

from typing import Any

from fedgateway.board.registry import Panel

CELLS = ("tp", "fp", "tn", "fn")


def build(ctx: dict[str, Any]) -> dict[str, Any] | None:
    name = ctx["node"].name
    by_party: dict[str, dict[str, float | None]] = {}
    for m in ctx["metrics"]["data"]:
        if m["component"] == name and m["step"] < 0 and m["name"] in (*CELLS, "threshold"):
            by_party.setdefault(m["party_id"], {})[m["name"]] = m["value"]
    matrices = {
        party: cells for party, cells in sorted(by_party.items()) if all(c in cells for c in CELLS)
    }
    return {"matrices": matrices} if matrices else None


PANEL = Panel(
    slug="confusion",
    title="Confusion matrix",
    template="panel_confusion.html",
    build=build,
    order=35,
)
