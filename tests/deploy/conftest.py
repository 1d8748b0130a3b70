"""Fixtures of the deployment tests (helpers: tests/deploy/helpers.py)."""

from __future__ import annotations

import pytest

from tests.deploy.helpers import ENV_EXAMPLE, read_env_file


@pytest.fixture
def example_env() -> dict[str, str]:
    """.env.example as compose reads it (placeholder secrets)."""
    return read_env_file(ENV_EXAMPLE)
