"""A CSV table parsed as a stream into the TableStore's npz file, in bounded memory.

`read_table` (fedflow.tables) builds the whole table as Python lists before it becomes arrays:
about 9 bytes of memory per byte of CSV (a 200 MB upload peaked at 1.8 GB). `import_csv` reads
the same CSV with the same rules and the same errors (every bad row with its line), but keeps
at most `CHUNK_ROWS` rows as Python objects at a time: each chunk becomes numpy arrays that go
to spill files next to the target, and the npz is written from them at the end, one block at a
time. What stays in memory for the whole file is 16 bytes per row (a hash of its id and its
line number, for the duplicate check) and a chunk; the result is the file `read_table` +
`Table.to_bytes` would give (tests/flow checks both on the same inputs).

Duplicate ids are found without a set of all ids: each id's 64-bit hash (Python's string hash,
stable within the process) and line are kept in arrays; hashes seen twice are checked against
the ids themselves in a second look at the spilled ids (equal hashes of different ids are not
duplicates), and each later occurrence is reported as `read_table` does, "id 'x' already on
line N".

The npz layout (numpy's format, ZIP_STORED, no pickle): ids `<U{longest}`, features float64
(rows x features, C order), feature_names `<U`, and, with a label column, labels float64 and
label_name, and for text labels label_classes (`<U`, class k's name at index k; the labels are
then the classes 0 .. K-1, fedflow.tables.LabelColumn: the spilled labels are provisional codes,
mapped to the sorted names' classes as they are copied into the npz). The label profile
(`ImportedTable.label_values`: the distinct label values, up to `MAX_LABEL_VALUES`, and
`label_classes`) is what the catalogue records so a pipeline can be checked against the labels
before any component runs.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
from numpy.lib import format as npy_format
from numpy.typing import NDArray

from fedflow.tables import (
    CSV_ENCODING,
    MISSING_MARKERS,
    LabelColumn,
    MissingLabel,
    TableError,
    bad_rows,
    csv_rows,
    not_utf8,
    read_header,
)

CHUNK_ROWS: Final = 8192
"""Rows held as Python objects at once (a few MB for tables of tens of features)."""
MAX_LABEL_VALUES: Final = 64
"""Distinct label values the profile lists; a label with more is recorded as "more"."""
COPY_BLOCK: Final = 4 << 20
NON_FINITE: Final = "NaN or infinite value (leave the field empty for a missing value)"

Progress = Callable[[int, int], None]
"""on_progress(bytes read, total bytes): called after each chunk."""


@dataclass(frozen=True)
class ImportedTable:
    """What the catalogue records of an imported table (the data is in the npz file)."""

    rows: int
    feature_names: list[str]
    label_name: str | None
    missing_count: int
    missing_by_column: dict[str, int]
    sha256: str
    label_values: list[float] | None = None
    """The distinct label values, sorted; None without a label column or with more than
    MAX_LABEL_VALUES of them."""
    bytes_read: int = 0
    label_classes: list[str] | None = None
    """Text labels: the class names (class k's at index k); None for numeric labels."""
    label_remap: NDArray[np.float64] | None = field(default=None, repr=False, compare=False)
    """Text labels: provisional code (as spilled) -> class."""


def _parse_value(text: str) -> float:
    # The same rule as fedflow.tables._parse_value (kept in step by tests/flow).
    stripped = text.strip()
    if stripped in MISSING_MARKERS:
        return math.nan
    value = float(stripped)
    if not math.isfinite(value):
        raise OverflowError(stripped)
    return value


class _CountingText:
    """The CSV's lines, counting the bytes read and hashing them (SHA-256 of the file)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.digest = hashlib.sha256()
        self.bytes_read = 0
        buffered = io.BufferedReader(_HashingReader(raw, self), COPY_BLOCK)
        self._lines = io.TextIOWrapper(buffered, encoding=CSV_ENCODING, newline="")

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines)


class _HashingReader(io.RawIOBase):
    def __init__(self, raw: IO[bytes], counter: _CountingText) -> None:
        self._raw = raw
        self._counter = counter

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._counter.digest.update(data)
        self._counter.bytes_read += n
        return n


@dataclass
class _Spill:
    """Chunks of parsed rows on disk: features and labels as raw float64, ids per chunk."""

    root: Path
    features: IO[bytes] = field(init=False)
    labels: IO[bytes] = field(init=False)
    id_chunks: list[Path] = field(default_factory=list)
    id_width: int = 1
    hashes: list[NDArray[np.int64]] = field(default_factory=list)
    lines: list[NDArray[np.int64]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.features = (self.root / "features.f8").open("wb")
        self.labels = (self.root / "labels.f8").open("wb")

    def close(self) -> None:
        self.features.close()
        self.labels.close()


def import_csv(
    path: Path,
    target: Path,
    *,
    id_column: str = "id",
    label_column: str | None = "y",
    require_label: bool = False,
    on_progress: Progress | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportedTable:
    """Parse the CSV at `path` with read_table's rules and write the table's npz to `target`
    (written whole or not at all: a partial file is renamed into place at the end).

    TableError lists every bad row, as read_table does."""
    path = Path(path)
    total = path.stat().st_size
    with tempfile.TemporaryDirectory(prefix=".import-", dir=Path(target).parent) as tmp:
        spill = _Spill(Path(tmp))
        try:
            with path.open("rb") as raw:
                text = _CountingText(raw)
                result = _parse(path, text, spill, id_column, label_column, require_label,
                                total, on_progress, chunk_rows)  # fmt: skip
        except UnicodeDecodeError as exc:
            raise not_utf8(path, exc) from None
        finally:
            spill.close()
        partial = Path(tmp) / "table.npz"
        _write_npz(partial, spill, result)
        os.replace(partial, target)
    return result


def _parse(
    path: Path,
    text: _CountingText,
    spill: _Spill,
    id_column: str,
    label_column: str | None,
    require_label: bool,
    total: int,
    on_progress: Progress | None,
    chunk_rows: int,
) -> ImportedTable:
    problems: list[tuple[int, str]] = []
    reader = csv_rows(text, path)
    header, id_at, label_at, feature_at = read_header(
        reader, path, id_column, label_column, require_label
    )
    width = len(feature_at)
    missing = np.zeros(width, dtype=np.int64)
    label_values: set[float] | None = set() if label_at is not None else None
    label_reader = LabelColumn(label_column)
    rows = 0
    ids: list[str] = []
    hashes: list[int] = []
    lines: list[int] = []
    pending: list[tuple[int, list[str]]] = []

    def flush() -> None:
        # The ids (with their hashes and lines) of every row that has one, for the duplicate
        # check; the values of the rows kept. Without problems both are the same rows.
        nonlocal rows
        if not ids:
            return
        spill.hashes.append(np.array(hashes, dtype=np.int64))
        spill.lines.append(np.array(lines, dtype=np.int64))
        chunk = np.array(ids, dtype=np.str_)
        spill.id_width = max(spill.id_width, chunk.dtype.itemsize // 4)
        chunk_file = spill.root / f"ids-{len(spill.id_chunks):06d}.npy"
        np.save(chunk_file, chunk, allow_pickle=False)
        spill.id_chunks.append(chunk_file)
        ids.clear()
        hashes.clear()
        lines.clear()
        block, labels, found = _convert(pending, feature_at, label_at, label_reader)
        pending.clear()
        problems.extend(found)
        if not problems:  # a refused table keeps being checked, not kept
            missing[:] += np.isnan(block).sum(axis=0)
            spill.features.write(block.tobytes())
            spill.labels.write(labels.tobytes())
            rows += len(block)
            if label_values is not None and len(label_values) <= MAX_LABEL_VALUES:
                label_values.update(np.unique(labels).tolist())
        if on_progress is not None:
            on_progress(text.bytes_read, total)

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
        # Every row with an id takes part in the duplicate check, as in read_table (a bad
        # row's id is still "seen"), even when its values are refused.
        ids.append(key)
        hashes.append(hash(key))
        lines.append(line)
        pending.append((line, row))
        if len(ids) >= chunk_rows:
            flush()
    flush()
    problems = _with_duplicates(sorted(problems, key=lambda item: item[0]), spill)
    if problems:
        raise bad_rows(path, problems)
    if rows == 0:
        raise TableError(f"{path}: no data rows", [(0, "no data rows")])
    names = [header[i] for i in feature_at]
    classes, remap = label_reader.finish(path)
    profile = None
    if classes is not None:
        profile = [float(k) for k in range(len(classes))]
    elif label_values is not None and len(label_values) <= MAX_LABEL_VALUES:
        profile = sorted(label_values)
    return ImportedTable(
        rows=rows,
        feature_names=names,
        label_name=label_column if label_at is not None else None,
        missing_count=int(missing.sum()),
        missing_by_column={n: int(c) for n, c in zip(names, missing, strict=True) if c},
        sha256=text.digest.hexdigest(),
        label_values=profile,
        bytes_read=text.bytes_read,
        label_classes=classes,
        label_remap=remap,
    )


def _convert(
    pending: list[tuple[int, list[str]]],
    feature_at: list[int],
    label_at: int | None,
    label_reader: LabelColumn,
) -> tuple[NDArray[np.float64], NDArray[np.float64], list[tuple[int, str]]]:
    """The features and labels of a chunk's rows (line, fields), and the problems of the rows
    left out. A row of plain numbers takes the fast path (float on each field; a NaN or
    infinite literal shows in the row's sum); any other row (a missing value, text, NaN or
    infinity) is parsed value by value as read_table does, which says what is wrong. float
    strips as _parse_value does, so both paths agree on every value they accept. The label is
    read_table's too (LabelColumn: a number, or a text label's class), after the features."""
    count, width = len(pending), len(feature_at)
    features = np.empty((count, width), dtype=np.float64)
    labels = np.zeros(count, dtype=np.float64)
    kept = np.ones(count, dtype=bool)
    problems: list[tuple[int, str]] = []
    for i, (line, row) in enumerate(pending):
        try:
            values = [float(row[j]) for j in feature_at]
            if not math.isfinite(sum(values)):
                raise ValueError
            features[i] = values
            problem = None
        except ValueError:
            problem = _parse_features(row, feature_at, features[i])
        if problem is None and label_at is not None:
            problem = _read_label(label_reader, row[label_at], line, labels, i)
        if problem is not None:
            problems.append((line, problem))
            kept[i] = False
    if not kept.all():
        return features[kept], labels[kept], problems
    return features, labels, problems


def _parse_features(row: list[str], feature_at: list[int], into: NDArray[np.float64]) -> str | None:
    """One row's features value by value into `into`, as read_table parses them; what is wrong
    with them, or None."""
    try:
        into[:] = [_parse_value(row[i]) for i in feature_at]
    except OverflowError:
        return NON_FINITE
    except ValueError as exc:
        return f"not a number ({exc})"
    return None


def _read_label(
    reader: LabelColumn, text: str, line: int, labels: NDArray[np.float64], at: int
) -> str | None:
    """The row's label into `labels[at]`; what is wrong with it, or None."""
    try:
        labels[at] = reader.read(text, line)
    except MissingLabel as exc:
        return str(exc)
    except OverflowError:
        return NON_FINITE
    return None


def _with_duplicates(problems: list[tuple[int, str]], spill: _Spill) -> list[tuple[int, str]]:
    """`problems` with every repeated id (a later line whose id an earlier line had), in line
    order; a duplicate is the one problem of its line, as read_table reports it."""
    if not spill.hashes:
        return problems
    hashes = np.concatenate(spill.hashes)
    lines = np.concatenate(spill.lines)
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    repeated = np.zeros(len(ordered), dtype=bool)
    repeated[1:] = ordered[1:] == ordered[:-1]
    repeated[:-1] |= repeated[1:]
    if not repeated.any():
        return problems
    suspects = {int(line) for line in lines[order[repeated]]}
    first_line: dict[str, int] = {}
    found: dict[int, str] = {}
    for line, key in _ids_at(spill, suspects):
        if key in first_line:
            found[line] = f"id {key!r} already on line {first_line[key]}"
        else:
            first_line[key] = line
    if not found:  # only hash collisions of different ids
        return problems
    kept = [(line, text) for line, text in problems if line not in found]
    return sorted(kept + list(found.items()), key=lambda item: item[0])


def _ids_at(spill: _Spill, wanted: set[int]) -> Iterator[tuple[int, str]]:
    """(line, id) of the rows on `wanted` lines, in line order, from the spilled ids."""
    wanted_lines = np.array(sorted(wanted), dtype=np.int64)
    for chunk_file, chunk_lines in zip(spill.id_chunks, spill.lines, strict=True):
        hits = np.flatnonzero(np.isin(chunk_lines, wanted_lines))
        if len(hits) == 0:
            continue
        chunk = np.load(chunk_file, allow_pickle=False)
        for i in hits:
            yield int(chunk_lines[i]), str(chunk[i])


def _write_npz(target: Path, spill: _Spill, table: ImportedTable) -> None:
    """The npz `Table.to_bytes` would write, assembled from the spill files block by block."""
    rows, width = table.rows, len(table.feature_names)
    ids_dtype = np.dtype(f"<U{spill.id_width}")
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as npz:
        with npz.open("ids.npy", "w", force_zip64=True) as out:
            _header(out, ids_dtype, (rows,))
            for chunk_file in spill.id_chunks:
                out.write(np.load(chunk_file, allow_pickle=False).astype(ids_dtype).tobytes())
        with npz.open("features.npy", "w", force_zip64=True) as out:
            _header(out, np.dtype("<f8"), (rows, width))
            _copy(spill.root / "features.f8", out)
        _small(npz, "feature_names.npy", np.asarray(table.feature_names, dtype=np.str_))
        if table.label_name is not None:
            with npz.open("labels.npy", "w", force_zip64=True) as out:
                _header(out, np.dtype("<f8"), (rows,))
                _copy(spill.root / "labels.f8", out, table.label_remap)
            _small(npz, "label_name.npy", np.asarray([table.label_name], dtype=np.str_))
            if table.label_classes is not None:
                classes = np.asarray(table.label_classes, dtype=np.str_)
                _small(npz, "label_classes.npy", classes)


def _header(out: IO[bytes], dtype: np.dtype[np.generic], shape: tuple[int, ...]) -> None:
    npy_format.write_array_header_1_0(
        out,
        {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape},
    )


def _copy(source: Path, out: IO[bytes], remap: NDArray[np.float64] | None = None) -> None:
    """The spilled float64s of `source` into `out`; with `remap`, each value v (a provisional
    class code) written as remap[v]."""
    with source.open("rb") as data:
        if remap is None:
            shutil.copyfileobj(data, out, COPY_BLOCK)
            return
        while block := data.read(COPY_BLOCK):
            codes = np.frombuffer(block, dtype="<f8").astype(np.int64)
            out.write(remap[codes].astype("<f8").tobytes())


def _small(npz: zipfile.ZipFile, name: str, array: NDArray[np.str_]) -> None:
    with npz.open(name, "w", force_zip64=True) as out:
        npy_format.write_array(out, array, allow_pickle=False)


__all__ = ["CHUNK_ROWS", "MAX_LABEL_VALUES", "ImportedTable", "import_csv"]
