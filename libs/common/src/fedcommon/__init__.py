"""fedcommon: logging, tracing and settings shared by every fedmq process.

Nothing here connects or reads the environment at import time; a service's `main.py` calls
`configure_logging` and `configure_tracing` once with values from its `ServiceSettings` --
through `fedcommon.service.run_service`, the shell every service runs in. Also here, imported
by name only: `fedcommon.service_registry` (the one list of services) and `fedcommon.migrations`
(each package's Alembic history).
"""

from fedcommon.logging import bind_message_context, configure_logging, get_logger
from fedcommon.settings import ServiceSettings
from fedcommon.tracing import configure_tracing, extract_context, inject_traceparent

__all__ = [
    "ServiceSettings",
    "bind_message_context",
    "configure_logging",
    "configure_tracing",
    "extract_context",
    "get_logger",
    "inject_traceparent",
]
