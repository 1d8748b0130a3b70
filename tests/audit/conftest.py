"""The audit tests reuse the scheduler tests' in-process federation (memory buses, SQLite,
real Schedulers, fake workers)."""

from tests.scheduler.conftest import federation_factory

__all__ = ["federation_factory"]
