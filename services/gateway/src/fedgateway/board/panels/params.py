"""The component's parameters as the pipeline wrote them (common, per role, per party)."""

from __future__ import annotations

import json
from typing import Any

from fedgateway.board.registry import Panel


def build(ctx: dict[str, Any]) -> dict[str, Any] | None:
    node = ctx["node"]
    if not node.params and not node.inputs:
        return None
    return {
        "inputs": node.inputs,
        "sections": {k: json.dumps(v, indent=2, sort_keys=True) for k, v in node.params.items()},
    }


PANEL = Panel(
    slug="params", title="Parameters", template="panel_params.html", build=build, order=10
)
