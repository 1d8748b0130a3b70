"""homo_feature_scale and homo_feature_binning honour min_summed_updates (issue #16): a client
refuses, before it sends anything, a fit in which the aggregator would learn its statistics
summed with too few other clients' (homo_lr's check_summed), standalone over loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.standalone import StandaloneError
from fedflow.tables import Table

from tests.flow.test_homo_preprocessing import (
    ARBITER,
    GUEST,
    HOSTS,
    PARTIES,
    binning_pipeline,
    model_of,
    raw_breast_clients,
    run,
    scale_pipeline,
    steps,
)


def two_clients(tmp_path: Path) -> list[Table]:
    """The guest and one host (10000), each with its rows."""
    tables, _ = raw_breast_clients(tmp_path)
    return tables[:2]


def only_one_host(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` with the guest aggregating for host 10000 alone."""
    spec["parties"].update(host=HOSTS[:1], arbiter=None)
    return spec


@pytest.mark.parametrize("make", [scale_pipeline, binning_pipeline])
def test_a_host_asking_for_two_refuses_the_guest_aggregating_for_it_alone_naming_the_param(
    tmp_path: Path, make: Any
) -> None:
    # Prepare: the guest aggregates for one host, whose own params ask for 2 summed
    two_clients(tmp_path)
    spec = only_one_host(make({"round_timeout_s": 2.0}))
    spec["components"][1]["params"][HOSTS[0]] = {"min_summed_updates": 2}

    # Execute / Assert: the host fails before it sends anything, naming the param and the way
    # out (the guest's step then times out waiting for it)
    with pytest.raises(
        StandaloneError, match=rf"{HOSTS[0]}.*min_summed_updates is 2.*learn 1 .*name an arbiter"
    ):
        run(spec, tmp_path, [GUEST, HOSTS[0]])


def test_with_an_arbiter_and_three_clients_asking_for_two_the_fit_runs(tmp_path: Path) -> None:
    # Prepare: every client asks for 2; the arbiter learns three clients' sums
    tables, _ = raw_breast_clients(tmp_path)
    pooled = np.vstack([t.features for t in tables])

    # Execute
    result = run(scale_pipeline({"min_summed_updates": 2}, ARBITER), tmp_path, [*PARTIES, ARBITER])

    # Assert: the pooled mean at every client, three clients summed at each step
    assert steps(result, "clients", ARBITER) == {0: 3.0, 1: 3.0}
    for party, role in zip(PARTIES, ["guest", "host", "host"], strict=True):
        center = model_of(result, party, role).arrays["center"]
        np.testing.assert_allclose(center, np.nanmean(pooled, axis=0), rtol=1e-12, atol=0)
