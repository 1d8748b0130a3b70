"""A party's tables: CSV parsing with errors by line, and the TableStore that keeps them.

A table is an id column, an optional label column and numeric features. The label column holds
numbers, or text naming classes ("yes"/"no", "setosa"/...): text labels become classes 0 .. K-1
in the sorted order of their names (`Table.label_classes` keeps the names, the catalogue records
them), and a column that mixes numbers and text, or names more than MAX_LABEL_CLASSES classes,
is refused. Missing feature values are allowed: an empty field or one of MISSING_MARKERS
becomes NaN and is counted (per column and in all); a literal "nan"/"inf" is refused as a value
(it is more likely a bug upstream than a deliberate gap). Every bad row is reported with its
file and line number (the first MAX_REPORTED in the message, all of them in
`TableError.problems`); nothing is silently dropped or filled in.

`TableStore(engine, data_dir)` keeps uploaded tables at the owning party only, in its workers'
hands (they store uploads and read tables; no other service opens it): the parsed
arrays in `<data_dir>/<name>.npz` (numpy's format, loaded with allow_pickle=False) and a
catalogue row in `flow_tables` (SQL: PostgreSQL in the stack, SQLite in the embedded default)
with the table's shape, columns, missing-value count, the file's sha256 and a read counter,
which every `read` increments in the database so tests (and audits) can prove a refused job
read nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import numpy as np
import sqlalchemy as sa
from fedbus.sql_inbox import create_tables
from numpy.typing import NDArray
from sqlalchemy.engine import Engine

from fedflow.names import TABLE_NAME_PATTERN as TABLE_NAME_PATTERN

T = TypeVar("T")

MISSING_MARKERS: Final = frozenset({"", "NA", "N/A", "null", "NULL", "?"})
MAX_REPORTED: Final = 20
MAX_LABEL_CLASSES: Final = 64
"""Distinct text labels a table may have: text labels name classes, and a model of more classes
than this is not a classification anyone means (an id or a free-text column taken as the label
is the likely mistake)."""


class TableError(ValueError):
    """A table could not be read or stored; the message names the file and line(s)."""

    def __init__(self, message: str, problems: Sequence[tuple[int, str]] = ()) -> None:
        super().__init__(message)
        self.problems: list[tuple[int, str]] = list(problems)
        """(line, problem) of every bad row found (line 0: the file as a whole)."""


CSV_ENCODING: Final = "utf-8-sig"
"""How both CSV parsers (read_table, fedflow.csv_import) decode a table: UTF-8, a leading byte
order mark (what Excel's "CSV UTF-8" writes) skipped rather than read into the first column's
name."""


def csv_rows(lines: Iterable[str], path: str | Path) -> Iterator[list[str]]:
    """csv.reader over `lines`, a csv.Error (a field over csv's size limit, a NUL byte in a
    quoted field) turned into a TableError naming the file and line."""
    reader = csv.reader(lines)
    try:
        yield from reader
    except csv.Error as exc:
        line = reader.line_num
        raise TableError(
            f"{path}:{line}: not readable as CSV ({exc})", [(line, "not CSV")]
        ) from None


def not_utf8(path: str | Path, exc: UnicodeDecodeError) -> TableError:
    """The error for a CSV that is not UTF-8 text (a Latin-1 or UTF-16 export, a binary file)."""
    byte = exc.object[exc.start : exc.start + 1].hex()
    return TableError(
        f"{path}: not UTF-8 text (byte 0x{byte} cannot be decoded): save the CSV as UTF-8",
        [(0, "not UTF-8")],
    )


@dataclass(frozen=True)
class Table:
    """Rows of one party's data: ids, features (NaN = missing), optional labels."""

    ids: NDArray[np.str_]
    features: NDArray[np.float64]
    feature_names: list[str]
    labels: NDArray[np.float64] | None
    label_name: str | None = None
    label_classes: list[str] | None = None
    """Text labels: the class names, class k's at index k (the labels are 0 .. K-1); None for
    numeric labels. They follow the label column through the pipeline (fedflow.runtime)."""
    trained_classes: list[str] | None = None
    """A model table's: the class names of the text labels it was trained on, class k's at
    index k (fedflow.label_classes: data it predicts or validates is numbered by them)."""

    def __post_init__(self) -> None:
        rows = len(self.ids)
        if self.features.shape != (rows, len(self.feature_names)):
            raise TableError(
                f"features of shape {self.features.shape} for {rows} ids and "
                f"{len(self.feature_names)} feature names"
            )
        if self.labels is not None and self.labels.shape != (rows,):
            raise TableError(f"labels of shape {self.labels.shape} for {rows} ids")
        if self.label_classes is not None and self.labels is None:
            raise TableError("label classes without labels")

    def class_name(self, value: float) -> str:
        """The label value as the table's data wrote it: its class name for text labels."""
        if self.label_classes is not None and float(value).is_integer():
            code = int(value)
            if 0 <= code < len(self.label_classes):
                return self.label_classes[code]
        return format(float(value), "g")

    @property
    def rows(self) -> int:
        return len(self.ids)

    @property
    def missing_count(self) -> int:
        return int(np.isnan(self.features).sum())

    def missing_by_column(self) -> dict[str, int]:
        counts = np.isnan(self.features).sum(axis=0)
        return {name: int(c) for name, c in zip(self.feature_names, counts, strict=True) if c}

    def column(self, name: str) -> NDArray[np.float64]:
        """A feature column, or the labels when `name` is the label column."""
        if name == self.label_name and self.labels is not None:
            return self.labels
        if name not in self.feature_names:
            raise TableError(f"no column {name!r} (features: {', '.join(self.feature_names)})")
        return self.features[:, self.feature_names.index(name)]

    def align_to(self, ids: NDArray[np.str_] | Sequence[str]) -> Table:
        """The rows of this table in the order of `ids` (all must be present)."""
        wanted = [str(key) for key in np.asarray(ids).tolist()]
        position = {key: i for i, key in enumerate(self.ids.tolist())}
        missing = [key for key in wanted if key not in position]
        if missing:
            raise TableError(f"{len(missing)} ids are not in this table, e.g. {missing[0]!r}")
        order = np.array([position[key] for key in wanted], dtype=np.int64)
        return self.take(order)

    def take(self, rows: NDArray[np.int64]) -> Table:
        return Table(
            ids=self.ids[rows],
            features=self.features[rows],
            feature_names=list(self.feature_names),
            labels=None if self.labels is None else self.labels[rows],
            label_name=self.label_name,
            label_classes=self.label_classes,
        )

    def to_bytes(self) -> bytes:
        """npz bytes (no pickle: ids are a fixed-width unicode array)."""
        out = io.BytesIO()
        arrays: dict[str, Any] = {
            "ids": np.asarray(self.ids, dtype=np.str_),
            "features": self.features,
            "feature_names": np.asarray(self.feature_names, dtype=np.str_),
        }
        if self.labels is not None:
            arrays["labels"] = self.labels
            arrays["label_name"] = np.asarray([self.label_name or ""], dtype=np.str_)
            if self.label_classes is not None:
                arrays["label_classes"] = np.asarray(self.label_classes, dtype=np.str_)
        if self.trained_classes is not None:
            arrays["trained_classes"] = np.asarray(self.trained_classes, dtype=np.str_)
        np.savez(out, **arrays)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Table:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            has_labels = "labels" in npz.files
            return cls(
                ids=npz["ids"].astype(np.str_),
                features=npz["features"].astype(np.float64),
                feature_names=[str(n) for n in npz["feature_names"].tolist()],
                labels=npz["labels"].astype(np.float64) if has_labels else None,
                label_name=(str(npz["label_name"][0]) or None) if has_labels else None,
                label_classes=(
                    [str(n) for n in npz["label_classes"].tolist()]
                    if "label_classes" in npz.files
                    else None
                ),
                trained_classes=(
                    [str(n) for n in npz["trained_classes"].tolist()]
                    if "trained_classes" in npz.files
                    else None
                ),
            )


def _parse_value(text: str) -> float:
    """A feature value; NaN for a missing marker; ValueError for text or NaN/inf literals."""
    stripped = text.strip()
    if stripped in MISSING_MARKERS:
        return math.nan
    value = float(stripped)
    if not math.isfinite(value):
        raise OverflowError(stripped)
    return value


class MissingLabel(ValueError):
    """A row without a label (an empty field or a missing marker in the label column)."""


class LabelColumn:
    """One table's label values as they are read: numbers, or text naming classes.

    `read` returns a number as it is, and a text label as a provisional class code (the order
    the names were first seen); `finish` checks the column as a whole (not both numbers and
    text, at most MAX_LABEL_CLASSES names) and gives the final mapping: the names sorted, class
    k the k-th. Used by read_table and the streaming import (fedflow.csv_import), so both map
    the same names to the same classes and refuse the same columns with the same messages."""

    def __init__(self, name: str | None) -> None:
        self.name = name
        self._codes: dict[str, int] = {}
        self._more = 0
        """Distinct names past MAX_LABEL_CLASSES (counted, not kept)."""
        self._first_number: tuple[int, str] | None = None
        self._first_text: tuple[int, str] | None = None

    def read(self, text: str, line: int) -> float:
        """The label of line `line`: a number, or a text label's provisional class code.
        MissingLabel (its message the row's problem) for a missing label; OverflowError for a
        NaN or infinite literal."""
        stripped = text.strip()
        if stripped in MISSING_MARKERS:
            raise MissingLabel(f"missing label in column {self.name!r}")
        try:
            value = float(stripped)
        except ValueError:
            return self._text(stripped, line)
        if not math.isfinite(value):
            raise OverflowError(stripped)
        if self._first_number is None:
            self._first_number = (line, stripped)
        return value

    def _text(self, name: str, line: int) -> float:
        if self._first_text is None:
            self._first_text = (line, name)
        code = self._codes.get(name)
        if code is None:
            if len(self._codes) >= MAX_LABEL_CLASSES:
                self._more += 1  # the column is refused at the end; keep no more names
                return -1.0
            code = self._codes[name] = len(self._codes)
        return float(code)

    def finish(self, path: str | Path) -> tuple[list[str] | None, NDArray[np.float64] | None]:
        """(class names, provisional code -> class) for text labels, (None, None) for numbers;
        TableError for a column of both, or of too many names."""
        if self._first_text is None:
            return None, None
        if self._first_number is not None:
            (n_line, number), (t_line, text) = self._first_number, self._first_text
            raise TableError(
                f"{path}: label column {self.name!r} mixes numbers (line {n_line}: {number!r}) "
                f"and text (line {t_line}: {text!r}); a label column holds numbers or class "
                "names, not both",
                [(0, "label mixes numbers and text")],
            )
        if self._more:
            raise TableError(
                f"{path}: label column {self.name!r} names more than {MAX_LABEL_CLASSES} "
                f"classes (at least {MAX_LABEL_CLASSES + self._more} distinct text values); "
                "text labels name classes: is it the right column? A numeric target must be "
                "written as numbers",
                [(0, "too many label classes")],
            )
        names = sorted(self._codes)
        remap = np.empty(len(names), dtype=np.float64)
        for final, name in enumerate(names):
            remap[self._codes[name]] = final
        return names, remap


def carry_label_classes(outputs: Mapping[str, T], inputs: Mapping[str, Any]) -> dict[str, T]:
    """`outputs` with the class names of a text label column carried over: an output Table
    whose labels are an input's label column (the same name, values among its classes) and
    that names no classes gets that input's. So the names follow the labels through every
    component (psi, split, scaling, predictions, ...) without each having to copy them; the
    runner skips it where a component remaps the labels (label_transform)."""
    named = {
        table.label_name: table.label_classes
        for table in inputs.values()
        if isinstance(table, Table) and table.label_classes is not None
    }
    if not named:
        return dict(outputs)
    carried: dict[str, T] = {}
    for key, out in outputs.items():
        if isinstance(out, Table) and out.labels is not None and out.label_classes is None:
            classes = named.get(out.label_name)
            if classes is not None and are_class_codes(out.labels, len(classes)):
                out = cast(T, dataclasses.replace(out, label_classes=list(classes)))
        carried[key] = out
    return carried


def are_class_codes(labels: NDArray[np.float64], classes: int) -> bool:
    """Whether `labels` are class numbers 0 .. classes - 1 (a text label column's)."""
    return bool(np.all((labels >= 0) & (labels < classes) & (labels == np.floor(labels))))


def read_header(
    reader: Iterator[list[str]],
    path: str | Path,
    id_column: str,
    label_column: str | None,
    require_label: bool,
) -> tuple[list[str], int, int | None, list[int]]:
    """A CSV's header, checked: (names, id index, label index or None, feature indices).
    Shared by read_table and the streaming import (fedflow.csv_import), so both refuse the
    same headers with the same messages."""
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise TableError(f"{path}: empty file, expected a header line", [(0, "empty")]) from None
    if id_column not in header:
        raise TableError(f"{path}:1: no {id_column!r} column in the header", [(1, "no id")])
    if require_label and label_column not in header:
        raise TableError(
            f"{path}:1: no label column {label_column!r} in the header", [(1, "no label")]
        )
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise TableError(f"{path}:1: repeated column name(s) {', '.join(duplicated)}")
    id_at = header.index(id_column)
    label_at = header.index(label_column) if label_column in header else None
    feature_at = [i for i in range(len(header)) if i not in (id_at, label_at)]
    return header, id_at, label_at, feature_at


def bad_rows(path: str | Path, problems: list[tuple[int, str]]) -> TableError:
    """The error for a table with bad rows: the first MAX_REPORTED named, the rest counted."""
    shown = "; ".join(f"{path}:{line}: {text}" for line, text in problems[:MAX_REPORTED])
    more = len(problems) - MAX_REPORTED
    suffix = f" (and {more} more bad rows)" if more > 0 else ""
    return TableError(f"{len(problems)} bad row(s): {shown}{suffix}", problems)


def read_table(
    path: Path,
    *,
    id_column: str = "id",
    label_column: str | None = "y",
    require_label: bool = False,
) -> Table:
    """Parse a CSV table; `label_column` is used when present in the header.

    With `require_label`, a header without `label_column` is an error. TableError lists every
    bad row (wrong field count, duplicate id, empty id, a value that is not a number, a NaN or
    infinite literal, a missing label).
    """
    try:
        return _read_table(path, id_column, label_column, require_label)
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None


def _read_table(path: Path, id_column: str, label_column: str | None, require_label: bool) -> Table:
    problems: list[tuple[int, str]] = []
    with Path(path).open(newline="", encoding=CSV_ENCODING) as handle:
        reader = csv_rows(handle, path)
        header, id_at, label_at, feature_at = read_header(
            reader, path, id_column, label_column, require_label
        )
        ids: list[str] = []
        rows: list[list[float]] = []
        labels: list[float] = []
        label_reader = LabelColumn(label_column)
        seen: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                problems.append((line, f"{len(row)} fields, the header has {len(header)}"))
                continue
            key = row[id_at].strip()
            if not key:
                problems.append((line, "empty id"))
                continue
            if key in seen:
                problems.append((line, f"id {key!r} already on line {seen[key]}"))
                continue
            seen[key] = line
            try:
                values = [_parse_value(row[i]) for i in feature_at]
                label = 0.0 if label_at is None else label_reader.read(row[label_at], line)
            except OverflowError:
                problems.append(
                    (line, "NaN or infinite value (leave the field empty for a missing value)")
                )
                continue
            except MissingLabel as exc:
                problems.append((line, str(exc)))
                continue
            except ValueError as exc:
                problems.append((line, f"not a number ({exc})"))
                continue
            ids.append(key)
            rows.append(values)
            labels.append(label)
    if problems:
        raise bad_rows(path, problems)
    if not ids:
        raise TableError(f"{path}: no data rows", [(0, "no data rows")])
    classes, remap = label_reader.finish(path)
    label_array = np.array(labels, dtype=np.float64)
    if remap is not None:
        label_array = remap[label_array.astype(np.int64)]
    return Table(
        ids=np.array(ids, dtype=np.str_),
        features=np.array(rows, dtype=np.float64).reshape(len(ids), len(feature_at)),
        feature_names=[header[i] for i in feature_at],
        labels=label_array if label_at is not None else None,
        label_name=label_column if label_at is not None else None,
        label_classes=classes,
    )


# --- the store -------------------------------------------------------------------------------


def default_tables_dir(database_url: str, party_id: str) -> Path:
    """Where a party keeps its table files unless configured: "<db>-tables" next to a SQLite
    database file, else .fedmq/worker-<party>-tables (relative to the working directory).

    Every replica of a party's worker opens its TableStore with this rule (unless configured):
    any of them stores an upload (the data service, fedworker.data) where all of them read.
    """
    prefix = "sqlite:///"
    if database_url.startswith(prefix) and len(database_url) > len(prefix):
        database = Path(database_url[len(prefix) :])
        return database.with_name(database.stem + "-tables")
    return Path(".fedmq") / f"worker-{party_id}-tables"


tables_metadata = sa.MetaData()
tables_table = sa.Table(
    "flow_tables",
    tables_metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("file", sa.String(1024), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("feature_names", sa.Text, nullable=False),
    sa.Column("id_column", sa.String(256), nullable=False),
    sa.Column("label_column", sa.String(256), nullable=True),
    sa.Column("missing_values", sa.Integer, nullable=False),
    sa.Column("missing_by_column", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reads", sa.Integer, nullable=False, default=0),
    sa.Column("label_values", sa.Text, nullable=True),
    sa.Column("label_classes", sa.Text, nullable=True),
)


@dataclass(frozen=True)
class TableInfo:
    """What the catalogue knows about a stored table (no data)."""

    name: str
    rows: int
    feature_names: list[str]
    id_column: str
    label_column: str | None
    missing_values: int
    sha256: str
    uploaded_at: datetime
    missing_by_column: dict[str, int] = field(default_factory=dict)
    label_values: list[float] | None = None
    """The label profile recorded at upload: the distinct label values, sorted (None: no
    label column, more than fedflow.csv_import.MAX_LABEL_VALUES values, or a table stored
    before profiles were recorded)."""
    label_classes: list[str] | None = None
    """Text labels: the class names recorded at upload, class k's at index k (label_values are
    then 0 .. K-1); None for numeric labels."""

    @property
    def features(self) -> int:
        return len(self.feature_names)


def _info(row: sa.Row[Any]) -> TableInfo:
    return TableInfo(
        name=row.name,
        rows=row.rows,
        feature_names=json.loads(row.feature_names),
        id_column=row.id_column,
        label_column=row.label_column,
        missing_values=row.missing_values,
        missing_by_column=json.loads(row.missing_by_column),
        sha256=row.sha256,
        uploaded_at=row.uploaded_at,
        label_values=json.loads(row.label_values) if row.label_values else None,
        label_classes=json.loads(row.label_classes) if row.label_classes else None,
    )


class TableStore:
    """A party's uploaded tables: arrays under `data_dir`, catalogue and read counts in SQL."""

    def __init__(self, engine: Engine, data_dir: Path) -> None:
        self.engine = engine
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        create_tables(tables_metadata, engine)

    def _file(self, name: str) -> Path:
        import re

        if not re.match(TABLE_NAME_PATTERN, name) or name in (".", ".."):
            raise TableError(f"bad table name {name!r} (letters, digits, _ . -; up to 128)")
        return self.data_dir / f"{name}.npz"

    def upload(
        self,
        name: str,
        csv_path: Path,
        *,
        id_column: str = "id",
        label_column: str | None = None,
        replace: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> TableInfo:
        """Parse `csv_path` (TableError with every bad line) and store it as `name`.

        The CSV is parsed as a stream in bounded memory (fedflow.csv_import: the same rules
        and errors as read_table); `on_progress(bytes read, total)` is called as it goes."""
        from fedflow.csv_import import import_csv

        target = self._file(name)
        if not replace and self.get(name) is not None:
            raise TableError(f"table {name!r} exists (upload with replace to overwrite it)")
        # Written whole then renamed into place: a reader never sees half a file.
        table = import_csv(
            Path(csv_path),
            target,
            id_column=id_column,
            label_column=label_column,
            require_label=label_column is not None,
            on_progress=on_progress,
        )
        values = {
            "name": name,
            "file": target.name,
            "rows": table.rows,
            "feature_names": json.dumps(table.feature_names),
            "id_column": id_column,
            "label_column": table.label_name,
            "missing_values": table.missing_count,
            "missing_by_column": json.dumps(table.missing_by_column),
            "sha256": table.sha256,
            "uploaded_at": datetime.now(UTC),
            "reads": 0,
            "label_values": None if table.label_values is None else json.dumps(table.label_values),
            "label_classes": (
                None if table.label_classes is None else json.dumps(table.label_classes)
            ),
        }
        with self.engine.begin() as conn:
            conn.execute(sa.delete(tables_table).where(tables_table.c.name == name))
            conn.execute(sa.insert(tables_table), values)
        info = self.get(name)
        assert info is not None
        return info

    def get(self, name: str) -> TableInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(tables_table).where(tables_table.c.name == name)).first()
        return None if row is None else _info(row)

    def list(self) -> list[TableInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tables_table).order_by(tables_table.c.name)).all()
        return [_info(row) for row in rows]

    def read(self, name: str) -> Table:
        """The table's data; counts one read (committed before the data is returned)."""
        target = self._file(name)
        with self.engine.begin() as conn:
            counted = conn.execute(
                sa.update(tables_table)
                .where(tables_table.c.name == name)
                .values(reads=tables_table.c.reads + 1)
            )
            if counted.rowcount != 1:
                raise TableError(f"no table {name!r} at this party")
        return Table.from_bytes(target.read_bytes())

    def reads(self, name: str) -> int:
        """How many times `name` was read (0 for an unknown table)."""
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(tables_table.c.reads).where(tables_table.c.name == name)
            ).scalar_one_or_none()
        return int(value or 0)

    def delete(self, name: str) -> bool:
        target = self._file(name)
        with self.engine.begin() as conn:
            gone = conn.execute(sa.delete(tables_table).where(tables_table.c.name == name))
        target.unlink(missing_ok=True)
        return bool(gone.rowcount)
