"""The audit tests reuse the scheduler tests' in-process federation (memory buses, SQLite,
real Schedulers, fake workers)."""

from collections.abc import Iterator

import pytest
from fedaudit import test_hooks

from tests.scheduler.conftest import federation_factory

__all__ = ["federation_factory"]


@pytest.fixture(autouse=True)
def _audit_test_hooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The malicious-party harness (fedaudit.test_hooks) is on in the audit's tests only."""
    monkeypatch.setenv(test_hooks.ENABLE_VARIABLE, "1")
    yield
