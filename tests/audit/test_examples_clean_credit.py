"""The three examples on default of credit card (hetero_lr, scorecard_credit, scorecard_woe) run
clean under both parties' audits by default too, on the tables' first ROWS rows: the full
30,000 take ~100 s each and run only with FEDMQ_AUDIT_EXAMPLES_FULL=1
(tests/audit/test_examples_clean.py), but what the audit judges (message forms, orders, keys,
ciphertexts, decrypted bounds, profiles) does not depend on the row count, so the default run
no longer leaves these pipelines unaudited. Same shortening as there: 1024-bit keys, 2 epochs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.audit.test_examples_clean import (
    DATA,
    EXAMPLES,
    FULL_ONLY,
    assert_clean,
    run_audited,
    shortened,
)

ROWS = 600
"""Rows kept of each default_credit table (the same first ids at both parties)."""


@pytest.fixture(scope="module")
def credit_tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/data's default_credit tables, each cut to its header and first ROWS rows."""
    folder = tmp_path_factory.mktemp("credit")
    for table in DATA.glob("default_credit_hetero_*.csv"):
        with table.open() as source:
            lines = [next(source) for _ in range(ROWS + 1)]
        (folder / table.name).write_text("".join(lines))
    return folder


def test_both_parties_tables_keep_the_same_ids(credit_tables: Path) -> None:
    ids = {
        name: [line.split(",", 1)[0] for line in (credit_tables / name).read_text().splitlines()]
        for name in ("default_credit_hetero_guest.csv", "default_credit_hetero_host.csv")
    }
    guest, host = ids.values()
    assert len(guest) == ROWS + 1 and guest == host


@pytest.mark.parametrize("example", sorted(FULL_ONLY))
def test_a_default_credit_example_runs_clean_on_its_first_rows(
    example: str, credit_tables: Path, tmp_path: Path
) -> None:
    # Prepare
    text = shortened((EXAMPLES / f"{example}.yaml").read_text())

    # Execute
    result, audited = run_audited(text, credit_tables, tmp_path)

    # Assert
    assert_clean(result, audited)
