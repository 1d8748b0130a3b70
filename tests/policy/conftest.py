"""Policies and pipelines the policy tests share, and the scheduler federation of
tests/scheduler (a real Scheduler per party on memory brokers, fake workers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedflow.policy import SecurityPolicy, policy_yaml

from tests.scheduler.conftest import federation_factory  # noqa: F401  (fixture)

HETERO_LR_TEMPLATE = """\
name: lr-policy
parties:
  guest: "9999"
  host: ["10000"]
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: breast_hetero_guest}}
      host: {{table: breast_hetero_host}}
  - name: psi_0
    type: psi
    inputs: {{data: reader_0.data}}
  - name: lr_0
    type: hetero_lr
    inputs: {{data: psi_0.data}}
    params:
      common: {{epochs: 1, batch_size: 128, learning_rate: 0.5, seed: 1{extra}}}
"""

SHORT_KEYS = ", key_bits: 256, insecure_short_keys: true"
REVEAL = ", reveal_host_scores: true"


def hetero_lr_pipeline(extra: str = "") -> str:
    """The breast pipeline with `extra` appended to hetero_lr's common params."""
    return HETERO_LR_TEMPLATE.format(extra=extra)


PERMISSIVE = SecurityPolicy.model_validate(
    {
        "min_key_bits": 256,
        "allow_insecure_short_keys": True,
        "components": {"hetero_lr": {"allow_revealing": ["reveal_host_scores"]}},
    }
)
"""What a test party sets explicitly to run short keys and the revealing mode (never the
default)."""


@pytest.fixture
def permissive_policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "permissive-policy.yaml"
    path.write_text(policy_yaml(PERMISSIVE), encoding="utf-8")
    return path
