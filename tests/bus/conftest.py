"""Makes `tests.bus.contract` importable however pytest is started (`pytest` or `python -m
pytest`): the per-adapter suites and the dedupe contract import the base classes from it."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
