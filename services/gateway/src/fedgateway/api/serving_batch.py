"""Concurrent single-row predictions of one service reach the serving service as one message
(issue #15, hop 1 of docs/serving.md "Latency").

Every request/reply on `svc.serving.rpc` costs the gateway a thread hand-off, a publish, a
consume and a reply, and the serving service a message and its handler, nearly whatever it
carries. So the REST route does not send one message per request when requests come
together: per service at most `concurrency` messages are in flight; the requests that arrive
meanwhile queue, and when a message is answered everything queued (up to `max_rows` rows)
goes as the next one, `{"op": "predict_many", "args": {"service_id", "requests": [...]}}`,
answered with one answer per request (fedserving.handlers.Serving._predict_many). No timer: a
request that finds a free slot goes at once, so one client sees no added latency; under load
the messages grow instead of queueing one behind another.

All of it runs on the API's event loop (no lock): a route awaits its own future, and a
message's bus request is awaited on the loop too (`Bus.arequest`: the reply wakes the loop
once; no thread hand-off on the way out or back).
Each request keeps its own deadline (the message waits for the latest of its members'); one
whose deadline passes stops waiting alone. A serving service that does not know
`predict_many` (older than this gateway) gets the message's requests one by one as
`predict`, so gateways and serving services can be upgraded in either order.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Send = Callable[[bytes, float], Awaitable[bytes]]
"""(request body, timeout in seconds) -> awaits the serving service's reply body; raises when
it does not answer (the bus's errors)."""
Answer = dict[str, Any]
"""{"ok": true, "data": ...} or {"ok": false, "status": ..., "error": ...}."""


class ServingSilent(Exception):
    """The serving service did not answer within the request's deadline (or the bus failed:
    the cause is chained)."""


@dataclass(eq=False)
class _Pending:
    request: dict[str, Any]
    rows: int
    deadline: float  # the loop's time()
    future: asyncio.Future[Answer]


@dataclass(eq=False)
class _Lane:
    queue: deque[_Pending] = field(default_factory=deque)
    inflight: int = 0


class PredictBatcher:
    """Predict requests to the party's serving service, coalesced per service id. Use from one
    event loop."""

    def __init__(
        self,
        send: Send,
        *,
        concurrency: int = 2,
        max_rows: int = 10_000,
        on_message: Callable[[int], None] | None = None,
    ) -> None:
        """`on_message(requests)` is told about every message sent (tests, metrics)."""
        self._send = send
        self.concurrency = max(concurrency, 1)
        self.max_rows = max_rows
        self._on_message = on_message
        self._lanes: dict[str, _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # messages in flight, kept until done
        self._closed = False

    def close(self) -> None:
        """Stop the messages in flight (their callers get ServingSilent) and send no more."""
        self._closed = True
        for task in list(self._tasks):
            loop = task.get_loop()  # maybe another thread's, maybe closed (a test client's)
            if not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)

    async def predict(self, service_id: str, request: dict[str, Any], wait: float) -> Answer:
        """The serving service's answer to one predict request (`{rows, caller, timeout_s}`);
        ServingSilent when none came within `wait` seconds."""
        loop = asyncio.get_running_loop()
        me = _Pending(request, len(request["rows"]), loop.time() + wait, loop.create_future())
        lane = self._lanes.setdefault(service_id, _Lane())
        lane.queue.append(me)
        self._pump(service_id, lane)
        try:
            return await asyncio.wait_for(asyncio.shield(me.future), wait)
        except TimeoutError as exc:
            me.future.cancel()  # still queued: nobody sends it now
            raise ServingSilent(f"no answer within {wait:.3f} s") from exc

    def _pump(self, service_id: str, lane: _Lane) -> None:
        """Send what is queued while a slot is free."""
        while not self._closed and lane.inflight < self.concurrency:
            batch = self._take(lane)
            if not batch:
                return
            lane.inflight += 1
            task = asyncio.get_running_loop().create_task(self._run(service_id, lane, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self, lane: _Lane) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        while lane.queue:
            head = lane.queue[0]
            if head.future.done():  # its caller stopped waiting
                lane.queue.popleft()
                continue
            if batch and rows + head.rows > self.max_rows:
                break
            batch.append(lane.queue.popleft())
            rows += head.rows
        return batch

    async def _run(self, service_id: str, lane: _Lane, batch: list[_Pending]) -> None:
        try:
            answers = await self._ask(service_id, batch)
            for pending, answer in zip(batch, answers, strict=True):
                if not pending.future.done():
                    pending.future.set_result(answer)
        except (Exception, asyncio.CancelledError) as exc:
            for pending in batch:
                if not pending.future.done():
                    failed = ServingSilent(str(exc) or type(exc).__name__)
                    failed.__cause__ = exc
                    pending.future.set_exception(failed)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            lane.inflight -= 1
            self._pump(service_id, lane)

    async def _ask(self, service_id: str, batch: list[_Pending]) -> list[Answer]:
        """One answer per member: one `predict_many` message (one `predict` for a lone
        request: the same answer, and what every serving service knows)."""
        if len(batch) == 1:
            one = batch[0]
            return [
                await self._call("predict", {"service_id": service_id, **one.request}, one.deadline)
            ]
        answer = await self._call(
            "predict_many",
            {"service_id": service_id, "requests": [p.request for p in batch]},
            max(p.deadline for p in batch),
        )
        if answer.get("ok"):
            answers: list[Answer] = answer["data"]["answers"]
            if len(answers) != len(batch):
                raise ServingSilent(f"{len(answers)} answers to {len(batch)} requests")
            return answers
        if answer.get("status") == 400 and "unknown op 'predict_many'" in str(answer.get("error")):
            return list(
                await asyncio.gather(
                    *(
                        self._call("predict", {"service_id": service_id, **p.request}, p.deadline)
                        for p in batch
                    )
                )
            )
        return [answer] * len(batch)  # the message's refusal (no such service) is everyone's

    async def _call(self, op: str, args: dict[str, Any], deadline: float) -> Answer:
        loop = asyncio.get_running_loop()
        timeout = max(deadline - loop.time(), 0.001)
        body = json.dumps({"op": op, "args": args}).encode()
        if self._on_message is not None:
            self._on_message(len(args.get("requests") or [args]))
        reply = await self._send(body, timeout)
        answer: Answer = json.loads(reply)
        return answer
