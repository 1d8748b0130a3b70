"""Concurrent partial-score calls to one host share one call (micro-batching, issue #15).

Every call to a host crosses two bus hops, both gateways (sign, link, verify) and the host's
serving service: the cost is per call, nearly regardless of how many ids it carries. So the
guest does not send one call per request when requests come together: per (host, model,
version) at most `concurrency` calls are in flight, and the requests that arrive meanwhile
wait in a queue; when a call returns, everything queued (up to `max_rows` ids) goes out as the
next call, sent by the first waiting request's own thread. A request that finds a free slot
goes at once, alone: when requests do not overlap nothing waits (no timer, no added latency);
under load the calls grow instead of queueing up behind each other.

Each request keeps its own deadline: the call carries the latest deadline of its members, a
member whose own deadline passes first stops waiting and times out alone. A refusal of the
whole call (503, 429, 409) is every member's; a host that lacks some ids (404 with the ids it
lacks) gives 404 to the members that asked for them, and the others' ids are asked again
(one more call, only on that error path). With `concurrency` 0 every request makes its own
call (the path before this module; bench/serving compares the two).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedbus.remote import RemoteCallError, RemoteTimeout

Send = Callable[[str, bytes, float], bytes]
"""(host party, request body, timeout in seconds) -> the host's reply body."""
Answer = dict[str, Any]
"""The host's decoded answer: {"ok": true, "data": {"scores": [...]}} or a refusal."""


@dataclass(eq=False)
class _Waiter:
    ids: list[str]
    deadline: float  # time.monotonic()
    wake: threading.Event = field(default_factory=threading.Event)
    lead: list[_Waiter] | None = None  # a batch this waiter's thread is to send
    answer: Answer | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass(eq=False)
class _Lane:
    queue: deque[_Waiter] = field(default_factory=deque)
    inflight: int = 0


class HostCalls:
    """Partial-score calls to hosts, coalesced per (host, model name, version)."""

    def __init__(
        self,
        send: Send,
        *,
        concurrency: int = 2,
        max_rows: int = 10_000,
        on_call: Callable[[str, int], None] | None = None,
    ) -> None:
        """`on_call(host, rows)` is told about every call actually sent (metrics)."""
        self._send = send
        self.concurrency = concurrency
        self.max_rows = max_rows
        self._on_call = on_call
        self._lock = threading.Lock()
        self._lanes: dict[tuple[str, str, int], _Lane] = {}

    def partial(self, host: str, name: str, version: int, ids: list[str], timeout: float) -> Answer:
        """The host's answer for `ids` (scores in their order, or its refusal); raises what
        the call raised (fedbus.remote's RemoteCallError family), RemoteTimeout when no
        answer came within `timeout`."""
        if self.concurrency <= 0:
            return self._call(host, name, version, ids, timeout)
        key = (host, name, version)
        me = _Waiter(ids, time.monotonic() + timeout)
        with self._lock:
            lane = self._lanes.setdefault(key, _Lane())
            lane.queue.append(me)
            batch = self._take(lane)
        if batch is not None:
            self._run(key, lane, batch)
        while True:
            remaining = me.deadline - time.monotonic()
            woken = me.wake.wait(max(remaining, 0.0))
            with self._lock:
                lead, me.lead = me.lead, None
                if not woken and lead is None and not me.done and me in lane.queue:
                    lane.queue.remove(me)  # still queued: nobody will send it now
                me.wake.clear()
            if lead is not None:
                self._run(key, lane, lead)  # the others in it wait on this thread
                continue
            if me.done:
                if me.error is not None:
                    # Each member raises its own instance (one exception object raised in
                    # several threads at once would share one traceback).
                    if isinstance(me.error, RemoteCallError):
                        raise type(me.error)(*me.error.args)
                    raise me.error
                assert me.answer is not None
                return me.answer
            if not woken:
                raise RemoteTimeout(
                    f"no reply from party {host} (partial scores of {name} v{version}) "
                    f"within {timeout:.3f} s"
                )

    # -- under self._lock ----------------------------------------------------------------

    def _take(self, lane: _Lane) -> list[_Waiter] | None:
        """The next call's members, if a slot is free and someone waits (takes the slot)."""
        if not lane.queue or lane.inflight >= self.concurrency:
            return None
        batch = [lane.queue.popleft()]
        rows = len(batch[0].ids)
        while lane.queue and rows + len(lane.queue[0].ids) <= self.max_rows:
            rows += len(lane.queue[0].ids)
            batch.append(lane.queue.popleft())
        lane.inflight += 1
        return batch

    # -- sending -------------------------------------------------------------------------

    def _run(self, key: tuple[str, str, int], lane: _Lane, batch: list[_Waiter]) -> None:
        host, name, version = key
        try:
            self._settle(host, name, version, batch)
        except BaseException as exc:  # every member gets it; the lane must move on
            for waiter in batch:
                if not waiter.done:
                    waiter.error, waiter.done = exc, True
        finally:
            with self._lock:
                lane.inflight -= 1
                for waiter in batch:
                    waiter.wake.set()
                following = self._take(lane)
                if following is not None:
                    following[0].lead = following
                    following[0].wake.set()

    def _settle(self, host: str, name: str, version: int, batch: list[_Waiter]) -> None:
        """Send `batch` as one call and give each member its part (repeat for the members a
        404 did not concern)."""
        while batch:
            timeout = max(w.deadline for w in batch) - time.monotonic()
            if timeout <= 0:
                raise RemoteTimeout(f"no reply from party {host}: the deadline passed")
            ids = [i for w in batch for i in w.ids]
            answer = self._call(host, name, version, ids, timeout)
            batch = self._split(answer, batch)

    def _split(self, answer: Answer, batch: list[_Waiter]) -> list[_Waiter]:
        """Give each member its share of `answer`; the members to ask again."""
        if len(batch) == 1 or (not answer.get("ok") and answer.get("status") != 404):
            for waiter in batch:
                waiter.answer, waiter.done = answer, True
            return []
        if answer.get("ok"):
            scores = answer["data"]["scores"]
            at = 0
            for waiter in batch:
                part = scores[at : at + len(waiter.ids)]
                at += len(waiter.ids)
                waiter.answer, waiter.done = {"ok": True, "data": {"scores": part}}, True
            return []
        lacking = {str(i) for i in answer.get("ids") or ()}
        again: list[_Waiter] = []
        for waiter in batch:
            mine = [i for i in waiter.ids if i in lacking]
            if not mine:
                again.append(waiter)
                continue
            more = f" (and {len(mine) - 1} more)" if len(mine) > 1 else ""
            waiter.answer = {
                **answer,
                "error": str(answer.get("error", "")).split(" has no features for id ")[0]
                + f" has no features for id {mine[0]!r}{more}",
                "ids": mine[:100],
            }
            waiter.done = True
        if len(again) == len(batch):  # the answer named none of them: it is everyone's
            for waiter in batch:
                waiter.answer, waiter.done = answer, True
            return []
        return again

    def _call(self, host: str, name: str, version: int, ids: list[str], timeout: float) -> Answer:
        body = json.dumps({"op": "partial", "name": name, "version": version, "ids": ids})
        if self._on_call is not None:
            self._on_call(host, len(ids))
        answer: Answer = json.loads(self._send(host, body.encode(), timeout))
        return answer
