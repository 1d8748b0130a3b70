"""The site link between the two parties' gateways cut or made flaky in the middle of a job
(a FaultProxy in front of each party's link port, tests/fault_proxy.py): the job ends as if
nothing had happened.

- partition: nothing passes either way; both gateways see their outbound link down
  (fedmq_gateway_link_up 0), the parties' messages wait on their own brokers, and when the
  link heals the unacked frames are resent and deduplicated. By default the cut lasts until
  both gateways saw it (their liveness check) and a few seconds more; FEDMQ_FAULTS_FULL=1 holds
  it 60 s (well under the schedulers' 120 s party timeout, which is what a longer cut meets).
- flaky: 20 ms on every chunk, every connection reset every 1.5 s, and one byte flipped: TLS
  refuses the altered record, the connection drops and the frames are resent.
"""

from __future__ import annotations

import time
import urllib.request

import pytest

from tests.faults.conftest import (
    FULL,
    Result,
    assert_as_undisturbed,
    dead_letters,
    log_lines,
    run_with_fault,
)
from tests.faults.stack import PARTIES, FaultStack
from tests.local_stack import GUEST, HOST
from tests.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

TLS_REFUSED = ("SSLError",)
"""What a gateway logs when TLS refuses a record (bad MAC, or a broken record header)."""
PARTITION_S = 60.0 if FULL else 0.0
"""How long the cut lasts after both gateways saw it (0: it heals once they have)."""


def link_up(stack: FaultStack, party: str) -> float | None:
    """fedmq_gateway_link_up of `party`'s outbound link to its peer (None: not exported)."""
    peer = HOST if party == GUEST else GUEST
    url = f"http://127.0.0.1:{stack.http_port(party, 'gateway')}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("fedmq_gateway_link_up{") and f'peer="{peer}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_link_partition_mid_job_loses_nothing_and_applies_nothing_twice(
    stack: FaultStack, undisturbed: Result
) -> None:
    # Execute: cut the link both ways a few rounds in; heal it once both gateways noticed
    # (and, with FEDMQ_FAULTS_FULL=1, 60 s later)
    seen_down: dict[str, float] = {}

    def partition() -> None:
        cut_at = time.monotonic()
        stack.partition()
        for party in PARTIES:
            wait_until(
                lambda party=party: link_up(stack, party) == 0,
                timeout=60,
                interval=0.5,
                what=f"party {party}'s gateway to see its link down",
                retry_on=(OSError,),
            )
            seen_down[party] = time.monotonic() - cut_at
        if PARTITION_S:
            time.sleep(max(PARTITION_S - (time.monotonic() - cut_at), 0.0))
        stack.heal_link()

    run = run_with_fault(stack, partition, label="partition")

    # Assert: both gateways saw the cut; the job is the undisturbed one; the link came back
    assert set(seen_down) == set(PARTIES)
    assert_as_undisturbed(stack, run, undisturbed)
    for party in PARTIES:
        assert link_up(stack, party) == 1
    assert dead_letters(stack, run.job_id) == {}


def test_a_flaky_link_with_latency_resets_and_a_flipped_byte_loses_nothing(
    stack: FaultStack, undisturbed: Result
) -> None:
    # Prepare: from the job's start, 20 ms on every chunk and every connection reset each 1.5 s
    refused_before = len(log_lines(stack, TLS_REFUSED))
    for proxy in stack.proxies.values():
        proxy.latency_s = 0.02
        proxy.reset_every(1.5)

    # Execute: two rounds in, one byte of the host's data to the guest is flipped
    run = run_with_fault(stack, stack.proxies[GUEST].flip_next_byte, label="flaky", at_round=2)
    resets = sum(p.resets for p in stack.proxies.values())

    # Assert: the faults happened, TLS refused the altered record, the job is the undisturbed one
    assert stack.proxies[GUEST].flips == 1
    assert resets >= 2, f"only {resets} connection resets in a {run.seconds:.0f} s job"
    refused = log_lines(stack, TLS_REFUSED)[refused_before:]
    assert refused, "no gateway logged the TLS record the flipped byte broke"
    assert_as_undisturbed(stack, run, undisturbed)
    assert dead_letters(stack, run.job_id) == {}
