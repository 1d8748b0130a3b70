"""The site-link alerts in infra/prometheus/alerts.yml, by promtool's rule unit tests at the real
scrape interval (infra/prometheus/tests/link_alerts_test.yml): a cut link fires within 30 s of
being seen down, a peer's quick restart and an idle link never fire, three reconnects in 15
minutes fire the flapping alert."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "infra" / "prometheus"
LINK_TESTS = PROMETHEUS_DIR / "tests" / "link_alerts_test.yml"


def promtool_test(tests_dir: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool is not installed (scripts/setup installs Debian's prometheus)")
    return subprocess.run(
        [exe, "test", "rules", LINK_TESTS.name],
        cwd=tests_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_link_alerts_fire_on_a_cut_or_flapping_link_and_not_on_a_restart() -> None:
    # Execute
    result = promtool_test(LINK_TESTS.parent)

    # Assert
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_link_alert_tests_catch_a_link_down_alert_that_waits_a_minute(tmp_path: Path) -> None:
    # Prepare: the rule as it was before link_up told the truth (for: 1m)
    rules = (PROMETHEUS_DIR / "alerts.yml").read_text()
    start = rules.index("alert: FedmqPeerLinkDown")
    doctored = rules[:start] + rules[start:].replace("for: 30s", "for: 1m", 1)
    assert doctored != rules
    (tmp_path / "alerts.yml").write_text(doctored)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / LINK_TESTS.name).write_text(LINK_TESTS.read_text())

    # Execute
    result = promtool_test(tmp_path / "tests")

    # Assert: too late at 60 s
    assert result.returncode != 0
    assert "FedmqPeerLinkDown" in result.stdout + result.stderr
