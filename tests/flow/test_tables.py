"""Party tables: CSV parsing with every bad line reported, missing values kept, the store's
catalogue and read counter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedbus.sql_inbox import make_engine
from fedflow.tables import Table, TableError, TableStore, read_table


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_missing_values_become_nan_and_are_counted_per_column(tmp_path: Path) -> None:
    # Prepare
    path = write(tmp_path, "id,y,a,b\n1,0,0.5,\n2,1,NA,3\n3,0,?,4\n")

    # Execute
    table = read_table(path)

    # Assert
    assert table.ids.tolist() == ["1", "2", "3"]
    assert table.labels is not None and table.labels.tolist() == [0.0, 1.0, 0.0]
    assert table.missing_count == 3
    assert table.missing_by_column() == {"a": 2, "b": 1}
    assert np.isnan(table.features[1, 0]) and table.features[1, 1] == 3.0


def test_every_bad_row_is_reported_with_its_line(tmp_path: Path) -> None:
    # Prepare: four different problems on lines 3, 4, 5 and 6; lines 2 and 7 are fine.
    path = write(
        tmp_path,
        "id,y,a\n1,0,0.5\n2,1\n1,0,0.7\n4,,1\n5,0,inf\n6,1,2\n",
    )

    # Execute
    with pytest.raises(TableError) as caught:
        read_table(path)

    # Assert
    assert caught.value.problems == [
        (3, "2 fields, the header has 3"),
        (4, "id '1' already on line 2"),
        (5, "missing label in column 'y'"),
        (6, "NaN or infinite value (leave the field empty for a missing value)"),
    ]
    assert str(caught.value).startswith("4 bad row(s): ")
    assert "t.csv:3: 2 fields" in str(caught.value) and "t.csv:6: NaN" in str(caught.value)


def test_a_long_list_of_bad_rows_is_summarised_but_kept_whole(tmp_path: Path) -> None:
    rows = "".join(f"{i},abc\n" for i in range(30))
    with pytest.raises(TableError, match=r"\(and 10 more bad rows\)") as caught:
        read_table(write(tmp_path, "id,a\n" + rows), label_column=None)
    assert len(caught.value.problems) == 30


def test_a_table_round_trips_through_npz_bytes_without_pickle() -> None:
    table = Table(
        ids=np.array(["a", "bé", "c"]),
        features=np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]]),
        feature_names=["u", "v"],
        labels=np.array([0.0, 1.0, 1.0]),
        label_name="y",
    )
    again = Table.from_bytes(table.to_bytes())
    assert again.ids.tolist() == ["a", "bé", "c"]
    np.testing.assert_array_equal(again.features, table.features)
    assert again.label_name == "y" and again.feature_names == ["u", "v"]


def test_the_store_keeps_a_catalogue_and_counts_reads(tmp_path: Path) -> None:
    # Prepare
    engine = make_engine(f"sqlite:///{tmp_path / 'party.db'}")
    store = TableStore(engine, tmp_path / "tables")
    csv_path = write(tmp_path, "id,label,a,b\n1,1,0.5,\n2,0,1.5,2\n")

    # Execute
    info = store.upload("credit", csv_path, label_column="label")
    before = store.reads("credit")
    data = store.read("credit")
    store.read("credit")

    # Assert
    assert (info.rows, info.features, info.label_column, info.missing_values) == (2, 2, "label", 1)
    assert info.missing_by_column == {"b": 1}
    assert [t.name for t in store.list()] == ["credit"]
    assert before == 0 and store.reads("credit") == 2
    assert data.labels is not None and data.labels.tolist() == [1.0, 0.0]
    assert store.get("nope") is None and store.reads("nope") == 0


def test_the_store_refuses_bad_uploads_and_reads(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'party.db'}")
    store = TableStore(engine, tmp_path / "tables")
    good = write(tmp_path, "id,a\n1,2\n")
    store.upload("t", good)
    with pytest.raises(TableError, match="table 't' exists"):
        store.upload("t", good)
    assert store.upload("t", write(tmp_path, "id,a\n1,2\n2,3\n", "u.csv"), replace=True).rows == 2
    with pytest.raises(TableError, match="bad table name"):
        store.upload("../escape", good)
    with pytest.raises(TableError, match="no label column 'y'"):
        store.upload("v", good, label_column="y")
    with pytest.raises(TableError, match="no table 'w' at this party"):
        store.read("w")
    with pytest.raises(TableError, match=r"u2\.csv:3: not a number"):
        store.upload("x", write(tmp_path, "id,a\n1,2\n2,z\n", "u2.csv"))
    assert store.get("x") is None


def test_the_default_tables_folder_sits_next_to_a_sqlite_database() -> None:
    from fedflow.tables import default_tables_dir

    assert default_tables_dir("sqlite:////data/party.db", "9999") == Path("/data/party-tables")
    assert default_tables_dir("postgresql://h/db", "9999") == Path(".fedmq/worker-9999-tables")
