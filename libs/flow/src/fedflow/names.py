"""Name rules shared by the light descriptors and the runtime (no imports beyond typing)."""

from __future__ import annotations

from typing import Final

TABLE_NAME_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,128}$"
"""A party table's name (reader params, the table store, the scheduler's table API)."""
