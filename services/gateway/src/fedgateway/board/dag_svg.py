"""The DAG's drawing: components in columns by layer (longest path from a source), edges as
curves from an upstream's right side to a downstream's left side. Pure: numbers for the SVG
template (templates/_dag.html), which adds the state as text as well as colour."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fedgateway.api.board_data import DagPublic

NODE_W, NODE_H = 180, 56
GAP_X, GAP_Y = 56, 20
PAD = 12


def layout(dag: DagPublic) -> dict[str, Any]:
    columns: dict[int, list[str]] = defaultdict(list)
    for node in dag.nodes:
        columns[node.layer].append(node.name)
    where: dict[str, tuple[int, int]] = {}
    for layer, names in columns.items():
        for row, name in enumerate(names):
            where[name] = (PAD + layer * (NODE_W + GAP_X), PAD + row * (NODE_H + GAP_Y))
    nodes = [
        {
            "name": n.name,
            "type": n.type,
            "state": n.state,
            "x": where[n.name][0],
            "y": where[n.name][1],
            "parties": ", ".join(f"{t.party_id} {t.state}" for t in n.tasks),
        }
        for n in dag.nodes
    ]
    edges = []
    for up, down in dag.edges:
        if up not in where or down not in where:
            continue
        x1, y1 = where[up][0] + NODE_W, where[up][1] + NODE_H // 2
        x2, y2 = where[down][0], where[down][1] + NODE_H // 2
        mid = (x1 + x2) // 2
        edges.append({"from": up, "to": down, "d": f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"})
    width = PAD * 2 + (max(columns, default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max((len(v) for v in columns.values()), default=1) * (NODE_H + GAP_Y) - GAP_Y
    return {
        "width": width,
        "height": height,
        "nodes": nodes,
        "edges": edges,
        "w": NODE_W,
        "h": NODE_H,
    }
