"""CSV files as spreadsheets write them: both parsers (read_table, the streaming import behind
uploads) skip a UTF-8 byte order mark and take CRLF line ends, and refuse a file that is not
UTF-8, or that csv cannot read, with a TableError naming it (not a UnicodeDecodeError or
csv.Error from deep inside)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedflow.csv_import import import_csv
from fedflow.tables import Table, TableError, read_table

TEXT = "id,y,x0,x1\r\n7,1,0.5,\r\n8,0,-1.25,3\r\n"


def _imported(path: Path) -> Table:
    target = path.with_suffix(".npz")
    import_csv(path, target)
    return Table.from_bytes(target.read_bytes())


@pytest.mark.parametrize("parse", [read_table, _imported], ids=["read_table", "import_csv"])
def test_a_byte_order_mark_and_crlf_line_ends_read_as_a_plain_csv(
    tmp_path: Path, parse: object
) -> None:
    # Prepare: what Excel's "CSV UTF-8" writes, and the same table without BOM and CR.
    excel = tmp_path / "excel.csv"
    excel.write_bytes(b"\xef\xbb\xbf" + TEXT.encode())
    plain = tmp_path / "plain.csv"
    plain.write_bytes(TEXT.replace("\r\n", "\n").encode())

    # Execute
    got, want = parse(excel), parse(plain)  # type: ignore[operator]

    # Assert: the id column is found (not read as "\ufeffid") and every value matches.
    assert got.ids.tolist() == want.ids.tolist() == ["7", "8"]
    assert got.feature_names == want.feature_names == ["x0", "x1"]
    assert got.labels.tolist() == [1.0, 0.0]
    np.testing.assert_array_equal(got.features, want.features)
    assert np.isnan(got.features[0, 1])


@pytest.mark.parametrize("parse", [read_table, _imported], ids=["read_table", "import_csv"])
def test_a_file_that_is_not_utf8_is_refused_by_name(tmp_path: Path, parse: object) -> None:
    # Prepare: a Latin-1 export (é in a column name).
    path = tmp_path / "latin.csv"
    path.write_bytes("id,y,caf\xe9\n1,0,2\n".encode("latin-1"))

    # Execute
    with pytest.raises(TableError) as caught:
        parse(path)  # type: ignore[operator]

    # Assert
    assert str(caught.value) == (
        f"{path}: not UTF-8 text (byte 0xe9 cannot be decoded): save the CSV as UTF-8"
    )
    assert caught.value.problems == [(0, "not UTF-8")]
    assert not path.with_suffix(".npz").exists()


@pytest.mark.parametrize("parse", [read_table, _imported], ids=["read_table", "import_csv"])
def test_a_field_over_the_csv_modules_limit_is_a_table_error_at_its_line(
    tmp_path: Path, parse: object
) -> None:
    # Prepare: line 3 holds a 200 kB field (csv's limit is 128 kB: a runaway quote looks so).
    path = tmp_path / "big.csv"
    path.write_text("id,y,x\n1,0,2\n2,1," + "9" * 200_000 + "\n")

    # Execute
    with pytest.raises(TableError) as caught:
        parse(path)  # type: ignore[operator]

    # Assert
    assert str(caught.value) == (
        f"{path}:3: not readable as CSV (field larger than field limit (131072))"
    )
    assert caught.value.problems == [(3, "not CSV")]
