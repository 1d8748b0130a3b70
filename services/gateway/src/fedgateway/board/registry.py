"""The board's page and panel registry: a page or a job panel is one module that declares itself.

A page is a module in `fedgateway.board.pages` with `PAGE = Page(...)`: its router (mounted under
/board), its title and where it sits in the navigation. A job panel is a module in
`fedgateway.board.panels` with `PANEL = Panel(...)`: a section of the job page, drawn for each
component it applies to (or once per job). Both are found by listing their package, so an issue
that adds a page (serving, models) or a panel (SecureBoost trees, binning tables) adds one file
and touches no other page.

`available(view)` lets a page hide itself where its data does not exist at this party (e.g. the
serving page before the serving API is there).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from fastapi import APIRouter


@dataclass(frozen=True)
class Page:
    slug: str
    """Its path under /board and its id in the navigation."""
    title: str
    router: APIRouter
    order: int = 100
    """Position in the navigation (smaller first)."""
    nav: bool = True
    available: Callable[[Any], bool] = field(default=lambda app: True)
    """Whether the page exists at this party (called with the FastAPI app)."""


@dataclass(frozen=True)
class Panel:
    """A section of the job page.

    `build(ctx)` returns the template's variables, or None when the panel has nothing to show
    for this component (e.g. no curves); `ctx` has `job`, `dag`, `node` (None for a per-job
    panel), `charts`, `logs`, `crossed`, `metrics`."""

    slug: str
    title: str
    template: str
    build: Callable[[dict[str, Any]], dict[str, Any] | None]
    order: int = 100
    per_component: bool = True


def _modules(package: str) -> list[ModuleType]:
    pkg = importlib.import_module(package)
    return [
        importlib.import_module(f"{package}.{info.name}")
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name)
        if not info.name.startswith("_")
    ]


def pages() -> list[Page]:
    found = [m.PAGE for m in _modules("fedgateway.board.pages") if hasattr(m, "PAGE")]
    return sorted(found, key=lambda p: (p.order, p.slug))


def panels() -> list[Panel]:
    found = [m.PANEL for m in _modules("fedgateway.board.panels") if hasattr(m, "PANEL")]
    return sorted(found, key=lambda p: (p.order, p.slug))
