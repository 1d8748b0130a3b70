"""fedcommon.service.lifecycle_status: what a service's /healthz says while it starts and stops."""

from __future__ import annotations

import threading

from fedcommon.service import lifecycle_status


def test_status_goes_starting_ok_stopping() -> None:
    started, stopping = threading.Event(), threading.Event()
    assert lifecycle_status(started, stopping) == "starting"

    started.set()
    assert lifecycle_status(started, stopping) == "ok"

    stopping.set()
    assert lifecycle_status(started, stopping) == "stopping"


def test_a_service_stopped_before_it_finished_starting_says_stopping() -> None:
    started, stopping = threading.Event(), threading.Event()
    stopping.set()
    assert lifecycle_status(started, stopping) == "stopping"
