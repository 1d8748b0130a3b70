"""The streaming CSV import (fedflow.csv_import, what the data service stores uploads with)
gives what the whole-file parse gave (fedflow.tables.read_table): the same arrays, the same
missing-value counts and the same refusal, every bad row with its line, whatever the chunking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedflow.csv_import import import_csv
from fedflow.tables import Table, TableError, read_table

ROOT = Path(__file__).resolve().parents[2]
GUEST = ROOT / "examples" / "data" / "breast_hetero_guest.csv"
HOST = ROOT / "examples" / "data" / "breast_hetero_host.csv"


@pytest.mark.parametrize(
    ("source", "label"),
    [(GUEST, "y"), (HOST, None), ("id,x,y\na,1,0\nb,,1\nc,NA,0\nd, 4 ,1\ne,1_0,1\n", "y")],
    ids=["breast_guest", "breast_host", "missing_values"],
)
@pytest.mark.parametrize("chunk_rows", [2, 8192])
def test_the_stored_table_is_the_one_the_whole_file_parse_gives(
    tmp_path: Path, source: Path | str, label: str | None, chunk_rows: int
) -> None:
    # Prepare
    if isinstance(source, str):
        path = tmp_path / "t.csv"
        path.write_text(source)
    else:
        path = source
    expected = read_table(path, label_column=label or "y", require_label=label is not None)

    # Execute
    imported = import_csv(
        path,
        tmp_path / "t.npz",
        label_column=label or "y",
        require_label=label is not None,
        chunk_rows=chunk_rows,
    )
    stored = Table.from_bytes((tmp_path / "t.npz").read_bytes())

    # Assert
    assert stored.ids.tolist() == expected.ids.tolist()
    assert stored.ids.dtype == expected.ids.dtype
    assert np.array_equal(stored.features, expected.features, equal_nan=True)
    assert stored.feature_names == expected.feature_names
    assert stored.label_name == expected.label_name
    if expected.labels is None:
        assert stored.labels is None and imported.label_values is None
    else:
        assert stored.labels is not None
        assert np.array_equal(stored.labels, expected.labels)
        assert imported.label_values == sorted(set(expected.labels.tolist()))
    assert imported.missing_count == expected.missing_count
    assert imported.missing_by_column == expected.missing_by_column()


BAD = "id,x,y\na,1,0\nb,zz,1\na,2,0\nc,3\nd,inf,1\n,1,1\nb,1,1\ne,1,\nf,,1\ng,nan,0\nh, 4 ,1\n"


@pytest.mark.parametrize("chunk_rows", [1, 3, 8192])
def test_a_bad_file_is_refused_with_the_same_rows_and_lines(
    tmp_path: Path, chunk_rows: int
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(BAD)
    with pytest.raises(TableError) as whole:
        read_table(path, require_label=True)

    with pytest.raises(TableError) as streamed:
        import_csv(path, tmp_path / "bad.npz", require_label=True, chunk_rows=chunk_rows)

    assert str(streamed.value) == str(whole.value)
    assert streamed.value.problems == whole.value.problems
    assert [line for line, _ in streamed.value.problems] == [3, 4, 5, 6, 7, 8, 9, 11]
    assert not (tmp_path / "bad.npz").exists()


TEXT = "id,x,y\na,1,yes\nb,2,no\nc,3, yes \nd,4,maybe\ne,5,no\n"


@pytest.mark.parametrize("chunk_rows", [2, 8192])
def test_text_labels_become_the_classes_of_their_sorted_names_in_both_parsers(
    tmp_path: Path, chunk_rows: int
) -> None:
    # Prepare: "yes" seen first, "maybe" last; a chunk of 2 rows sees them in that order
    path = tmp_path / "text.csv"
    path.write_text(TEXT)

    # Execute
    whole = read_table(path, require_label=True)
    imported = import_csv(path, tmp_path / "t.npz", require_label=True, chunk_rows=chunk_rows)
    stored = Table.from_bytes((tmp_path / "t.npz").read_bytes())

    # Assert: maybe = 0, no = 1, yes = 2, whatever the order the rows came in
    for table in (whole, stored):
        assert table.label_classes == ["maybe", "no", "yes"]
        assert table.labels is not None
        assert table.labels.tolist() == [2.0, 1.0, 2.0, 0.0, 1.0]
        assert [table.class_name(v) for v in table.labels] == ["yes", "no", "yes", "maybe", "no"]
    assert imported.label_classes == ["maybe", "no", "yes"]
    assert imported.label_values == [0.0, 1.0, 2.0]
    # numeric labels keep no class names
    assert read_table(GUEST, require_label=True).label_classes is None


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "id,x,y\na,1,1\nb,2,0\nc,3,yes\n",
            r"label column 'y' mixes numbers \(line 2: '1'\) and text \(line 4: 'yes'\)",
        ),
        (
            "id,x,y\n" + "".join(f"r{i},1,name{i}\n" for i in range(70)),
            r"label column 'y' names more than 64 classes \(at least 70 distinct text values\)",
        ),
    ],
    ids=["mixed", "too_many_classes"],
)
@pytest.mark.parametrize("chunk_rows", [1, 8192])
def test_a_label_column_of_numbers_and_text_or_too_many_names_is_refused_by_both(
    tmp_path: Path, source: str, message: str, chunk_rows: int
) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(source)

    with pytest.raises(TableError, match=message) as whole:
        read_table(path, require_label=True)
    with pytest.raises(TableError, match=message) as streamed:
        import_csv(path, tmp_path / "l.npz", require_label=True, chunk_rows=chunk_rows)

    assert str(streamed.value) == str(whole.value)
    assert not (tmp_path / "l.npz").exists()
