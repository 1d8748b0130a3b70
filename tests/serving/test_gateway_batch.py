"""The gateway's REST predictions reach the serving service coalesced (fedgateway.api.
serving_batch): concurrent requests of one service go as one `predict_many` message, each gets
its own answer. The serving side is the real guest Serving of test_coalesce's in-process stack
(a host behind a wire, real Redis); the bus hop between gateway and serving is a function that
takes `delay` seconds and hands the body to `Serving.local` (on a thread, as the serving
service's consumer does), awaited like the gateway's `Bus.arequest`."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fedbus import RequestTimeout
from fedgateway.api.serving_batch import PredictBatcher, ServingSilent
from fedserving.handlers import Serving

from tests.serving.test_coalesce import GOOD, ROWS, stack


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


class Hop:
    """svc.serving.rpc in one process: each message `delay` s, recorded by its op and size."""

    def __init__(self, serving: Serving, delay: float) -> None:
        self.serving, self.delay = serving, delay
        self.messages: list[tuple[str, int]] = []
        self.broken = False
        self._lock = threading.Lock()

    async def send(self, body: bytes, timeout: float) -> bytes:
        request = json.loads(body)
        with self._lock:
            self.messages.append((request["op"], len(request["args"].get("requests") or [1])))
        await asyncio.sleep(self.delay)
        if self.broken:
            raise RequestTimeout("no reply on svc.serving.rpc")
        answer = await asyncio.to_thread(self.serving.local, request)
        return json.dumps(answer).encode()


def ask(row_id: str, timeout_s: float = 5.0) -> dict[str, Any]:
    return {"rows": [{"id": row_id, "features": GOOD}], "caller": "c", "timeout_s": timeout_s}


def concurrently(batcher: PredictBatcher, requests: list[tuple[dict[str, Any], float]]) -> Any:
    async def main() -> list[Any]:
        try:
            return list(
                await asyncio.gather(
                    *(batcher.predict("s", r, wait) for r, wait in requests),
                    return_exceptions=True,
                )
            )
        finally:
            batcher.close()

    return asyncio.run(main())


def test_concurrent_requests_go_as_few_messages_and_each_gets_its_own_score(
    tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    _, guest = stack(tmp_path, client, delay=0.0, concurrency=2)
    alone = {i: guest.local({"op": "predict", "args": {"service_id": "s", **ask(i)}}) for i in ROWS}
    hop = Hop(guest, delay=0.1)
    ids = [list(ROWS)[n % len(ROWS)] for n in range(30)]

    answers = concurrently(PredictBatcher(hop.send, concurrency=2), [(ask(i), 5.0) for i in ids])

    assert [a["data"]["results"] for a in answers] == [alone[i]["data"]["results"] for i in ids]
    # Two go at once, alone; the 28 that queued behind them go as one or two more messages.
    assert hop.messages[:2] == [("predict", 1), ("predict", 1)]
    assert 3 <= len(hop.messages) <= 4 and sum(n for _, n in hop.messages) == 30, hop.messages


def test_a_refused_request_does_not_fail_the_others_of_its_message(
    tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    _, guest = stack(tmp_path, client, delay=0.0, concurrency=2)
    hop = Hop(guest, delay=0.1)
    ids = ["r1", "r2", "r3", "zz", "r4"]

    answers = concurrently(PredictBatcher(hop.send, concurrency=1), [(ask(i), 5.0) for i in ids])

    assert [a.get("status") for a in answers] == [None, None, None, 404, None]
    assert "has no features for id 'zz'" in answers[3]["error"]
    assert hop.messages == [("predict", 1), ("predict_many", 4)]


def test_a_request_whose_deadline_passes_stops_waiting_alone(
    tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    _, guest = stack(tmp_path, client, delay=0.0, concurrency=2)
    hop = Hop(guest, delay=0.3)

    answers = concurrently(
        PredictBatcher(hop.send, concurrency=1), [(ask("r1"), 5.0), (ask("r2"), 0.1)]
    )

    assert answers[0]["ok"]
    assert isinstance(answers[1], ServingSilent)
    assert hop.messages == [("predict", 1)]  # r2 gave up while queued: never sent


def test_a_serving_service_without_predict_many_gets_the_requests_one_by_one(
    tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    _, guest = stack(tmp_path, client, delay=0.0, concurrency=2)
    # a serving service older than the gateway: no predict_many
    guest._LOCAL_OPS = {k: v for k, v in Serving._LOCAL_OPS.items() if k != "predict_many"}  # type: ignore[misc]
    hop = Hop(guest, delay=0.1)

    answers = concurrently(
        PredictBatcher(hop.send, concurrency=1), [(ask(i), 5.0) for i in ("r1", "r2", "r3")]
    )

    assert all(a["ok"] for a in answers)
    assert hop.messages == [("predict", 1), ("predict_many", 2), ("predict", 1), ("predict", 1)]


def test_a_silent_serving_service_fails_every_request_of_the_message(
    tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    _, guest = stack(tmp_path, client, delay=0.0, concurrency=2)
    hop = Hop(guest, delay=0.05)
    hop.broken = True

    answers = concurrently(PredictBatcher(hop.send, concurrency=1), [(ask("r1"), 5.0)] * 4)

    assert all(isinstance(a, ServingSilent) for a in answers)
    assert all(isinstance(a.__cause__, RequestTimeout) for a in answers)
    assert len(hop.messages) == 2


def test_each_event_loop_gets_its_own_batcher() -> None:
    # A message in flight on a closed loop would hold its slot for ever (test clients may
    # run each request on a loop of their own).
    from types import SimpleNamespace

    from fedgateway.api.serving import batcher_of

    request: Any = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace()))

    async def twice() -> tuple[PredictBatcher, PredictBatcher]:
        return batcher_of(request, None), batcher_of(request, None)  # type: ignore[arg-type]

    first, again = asyncio.run(twice())
    other, _ = asyncio.run(twice())

    assert first is again and other is not first
    other.close()
