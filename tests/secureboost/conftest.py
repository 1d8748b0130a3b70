"""secureboost test fixtures: the worker-process launcher of tests/worker."""

from tests.worker.conftest import start_worker  # noqa: F401  (fixture of the RabbitMQ test)
