"""The scheduler tells its own gateway when a job attempt ends (gateway.job_ended on
svc.gateway), so the gateway's replay guard learns it from a message, not an operator route."""

from __future__ import annotations

from collections.abc import Callable

from fedbus import Delivery
from fedschemas import decode_envelope, decode_payload, topics
from fedschemas.payloads import JobEnded

from .conftest import GUEST, HOST, PSI_EVAL, Federation, wait_for


def test_every_party_tells_its_gateway_that_the_job_attempt_ended(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: what each party's gateway would consume.
    fed = federation_factory()
    seen: dict[str, list[tuple[str, JobEnded]]] = {GUEST: [], HOST: []}

    def collect(party: str) -> Callable[[Delivery], None]:
        def on(delivery: Delivery) -> None:
            envelope = decode_envelope(delivery.body)
            seen[party].append((envelope.source.party_id, decode_payload(envelope, JobEnded)))

        return on

    for party in (GUEST, HOST):
        fed.buses[party].declare(topics.GATEWAY)
        fed.buses[party].subscribe(topics.GATEWAY, collect(party))

    # Execute
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-told")
    fed.wait_state(GUEST, "job-told", "success")
    fed.wait_state(HOST, "job-told", "success")
    wait_for(lambda: seen[GUEST] and seen[HOST], 10, "gateway.job_ended at both parties")

    # Assert: each party's own gateway hears it, from its own party, once per attempt.
    for party in (GUEST, HOST):
        assert seen[party] == [(party, JobEnded(job_id="job-told", attempt=0, state="success"))]
