"""The audit alerts (infra/prometheus/audit.yml) by promtool's rule unit tests
(infra/prometheus/tests/audit_test.yml): a critical finding pages, a warning warns, a lagging
audit is reported after five minutes and a spike is not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "infra" / "prometheus"


def promtool(tests_dir: Path, test_file: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool is not installed (scripts/setup installs Debian's prometheus)")
    return subprocess.run(
        [exe, "test", "rules", test_file],
        cwd=tests_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_audit_alerts_fire_as_their_unit_tests_say() -> None:
    result = promtool(PROMETHEUS_DIR / "tests", "audit_test.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_catch_a_lag_alert_without_its_grace_period(tmp_path: Path) -> None:
    # Prepare: the rules with the lag alert's `for: 5m` dropped (a spike would page)
    rules = (PROMETHEUS_DIR / "audit.yml").read_text()
    (tmp_path / "audit.yml").write_text(rules.replace("        for: 5m\n", "", 1))
    (tmp_path / "tests").mkdir()
    tests = (PROMETHEUS_DIR / "tests" / "audit_test.yml").read_text()
    (tmp_path / "tests" / "audit_test.yml").write_text(tests)

    result = promtool(tmp_path / "tests", "audit_test.yml")

    assert result.returncode != 0
    assert "FedmqAuditLagging" in result.stdout + result.stderr
