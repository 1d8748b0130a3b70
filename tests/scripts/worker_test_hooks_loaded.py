"""Builds a worker in a fresh interpreter and prints whether its test-only code was imported.

argv: database URL, "true" or "false" (the test_hooks setting). Prints "loaded" or "not loaded"
(whether fedworker.testing is in sys.modules once the worker is wired and started).
"""

from __future__ import annotations

import sys
import uuid

from fedworker.main import Worker
from fedworker.settings import WorkerSettings
from pydantic import SecretStr

worker = Worker(
    WorkerSettings(
        party_id="10000",
        bus_url=SecretStr(f"memory://hooks-{uuid.uuid4().hex[:8]}"),
        database_url=SecretStr(sys.argv[1]),
        test_hooks=sys.argv[2] == "true",
    )
)
worker.start()
worker.stop()
print("loaded" if "fedworker.testing" in sys.modules else "not loaded")
