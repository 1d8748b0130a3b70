"""A plain, blocking AMQP 0-9-1 client for tests that look at RabbitMQ behind fedbus's back.

Tests use it to check what the adapter built (re-declaring a queue with exact arguments),
to read a queue's depth, and to publish or get raw messages without fedbus. It runs aiormq
(the library fedbus's adapter already uses) on a private event-loop thread and keeps the call
shapes of the pika BlockingChannel these tests were first written with.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any, TypeVar

import aiormq
from aiormq.abc import DeliveredMessage

T = TypeVar("T")

BasicProperties = aiormq.spec.Basic.Properties
"""Message properties (delivery_mode, message_id, headers, ...), as in pika."""


class RawAmqp:
    """One connection and channel; a channel the broker closed is reopened on the next call."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._connection: aiormq.abc.AbstractConnection = self._run(aiormq.connect(url))
        self._channel: aiormq.abc.AbstractChannel | None = None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    async def _open(self) -> aiormq.abc.AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel()
        return self._channel

    def channel(self) -> RawAmqp:
        """pika's `connection.channel()`: this client is its own channel."""
        return self

    def queue_declare(
        self,
        queue: str,
        *,
        passive: bool = False,
        durable: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> SimpleNamespace:
        """Raises aiormq's ChannelPreconditionFailed when the queue exists with other
        arguments (ChannelNotFoundEntity for a passive declare of a missing queue)."""

        async def go() -> Any:
            channel = await self._open()
            return await channel.queue_declare(
                queue, passive=passive, durable=durable, arguments=arguments
            )

        return SimpleNamespace(method=self._run(go()))

    def basic_publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: aiormq.spec.Basic.Properties | None = None,
    ) -> None:
        async def go() -> None:
            channel = await self._open()
            await channel.basic_publish(
                body, exchange=exchange, routing_key=routing_key, properties=properties
            )

        self._run(go())

    def basic_get(self, queue: str, auto_ack: bool = False) -> tuple[Any, Any, bytes | None]:
        """(method with delivery_tag, properties, body), or (None, None, None) when empty."""

        async def go() -> DeliveredMessage:
            channel = await self._open()
            return await channel.basic_get(queue, no_ack=auto_ack)

        got = self._run(go())
        if not isinstance(got.delivery, aiormq.spec.Basic.GetOk):
            return None, None, None
        return got.delivery, got.header.properties, got.body

    def basic_nack(self, delivery_tag: int, requeue: bool = True) -> None:
        async def go() -> None:
            channel = await self._open()
            await channel.basic_nack(delivery_tag, requeue=requeue)

        self._run(go())

    def close(self) -> None:
        try:
            self._run(self._connection.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
