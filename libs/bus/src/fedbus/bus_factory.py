"""`connect(url)`: pick a bus adapter by URL scheme from one alias table.

Adapters are imported only when their scheme is used, so memory:// works without pika or
pulsar-client installed, and nothing connects at import time.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import unquote, urlsplit

from fedbus.bus import Bus

# scheme -> "module:Class"; every class offers `from_url(url, **options) -> Bus`.
ALIASES: dict[str, str] = {
    "memory": "fedbus.in_memory_bus:InMemoryBus",
    "amqp": "fedbus.amqp_bus:AmqpBus",
    "amqps": "fedbus.amqp_bus:AmqpBus",
    "pulsar": "fedbus.pulsar_bus:PulsarBus",
    "pulsar+ssl": "fedbus.pulsar_bus:PulsarBus",
}


def adapter_for(url: str) -> type[Bus]:
    scheme = urlsplit(url).scheme.lower()
    target = ALIASES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in ALIASES)
        raise ValueError(f"unknown bus URL scheme {scheme!r}; known: {known}")
    module_name, class_name = target.split(":")
    cls: type[Bus] = getattr(importlib.import_module(module_name), class_name)
    return cls


def connect(url: str, **options: Any) -> Bus:
    """A connected Bus for `url` (memory://NAME, amqp[s]://..., pulsar[+ssl]://...).

    `options` go to the adapter (e.g. max_frame_bytes, reassembly_timeout, chunk_store)."""
    bus: Bus = adapter_for(url).from_url(url, **options)  # type: ignore[attr-defined]
    return bus


def url_identity(url: str) -> str | None:
    """The identity a bus URL connects as (amqp://USER:...@host, memory://USER@NAME), None
    when it names none."""
    try:
        user = urlsplit(url).username
    except ValueError:
        return None
    return unquote(user) if user else None
