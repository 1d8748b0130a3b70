"""fedcommon.metrics.decade_buckets: the 1-2.5-5 bucket bounds every metrics module uses."""

from __future__ import annotations

import pytest
from fedbus.metrics import HANDLER_BUCKETS
from fedcommon.http import REQUEST_BUCKETS
from fedcommon.metrics import decade_buckets


def test_bounds_are_the_exact_floats_the_literals_would_be() -> None:
    assert decade_buckets(0.0001, 0.01) == (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01)
    assert decade_buckets(1.0, 100.0) == (1, 2.5, 5, 10, 25, 50, 100)


def test_the_published_histograms_keep_their_bucket_bounds() -> None:
    # The series dashboards and alerts were written against (docs/metrics.md).
    assert HANDLER_BUCKETS == (
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
    )  # fmt: skip
    assert REQUEST_BUCKETS == (
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0
    )  # fmt: skip


@pytest.mark.parametrize(("low", "high"), [(0.003, 1.0), (0.001, 0.3), (1.0, 0.5), (0.0, 1.0)])
def test_ends_off_the_series_or_out_of_order_are_refused(low: float, high: float) -> None:
    with pytest.raises(ValueError):
        decade_buckets(low, high)
