"""A user's own labelled texts: a ``.csv`` or ``.jsonl`` file, a pandas DataFrame or a Hugging Face
dataset, checked row by row and turned into a :class:`TextDataset` (see :func:`ntps.data.load_dataset`).

Every problem is one :class:`DataFormatError` line naming the file (or table), the line or row,
and the fix. Texts are taken exactly as given: a missing text is an error, never the text "None".
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ._dataset import DataFormatError, TextDataset

USER_FILE_SUFFIXES = (".csv", ".jsonl")
SPLIT_COLUMN = "split"
_INTEGER = re.compile(r"-?[0-9]+")


@dataclass
class _Table:
    """Raw columns of a user's table, before any check. ``place(i)`` names row i in a message."""

    origin: str  # how messages name the table: its path, "the DataFrame", "the dataset"
    name: str
    source: str
    texts: list
    labels: list
    splits: list | None
    place: Callable[[int], str]
    class_names: Sequence[str] | None = None  # a Hugging Face ClassLabel's names


def _fail(origin: str, where: str | None, problem: str) -> DataFormatError:
    return DataFormatError(f"{origin}, {where}: {problem}" if where else f"{origin}: {problem}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_missing(value) -> bool:
    """None, NaN (float or numpy) and pandas' NA and NaT."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")


# -- reading files --------------------------------------------------------------------------------
def read_user_file(path: str | os.PathLike, *, text: str = "text", label: str = "label") -> _Table:
    """The columns ``text``, ``label`` (and ``split`` when present) of a .csv or .jsonl file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in USER_FILE_SUFFIXES:
        raise _fail(str(path), None, f"a {suffix or 'suffix-less'} file; your own data must be a .csv file "
                                     f"(columns {text},{label}) or a .jsonl file (one JSON object a line)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    reader = _read_csv if suffix == ".csv" else _read_jsonl
    try:
        return reader(path, text, label)
    except UnicodeDecodeError:
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as error:  # decoded whole, the error knows its byte, hence its line
            line = raw.count(b"\n", 0, error.start) + 1
            raise _fail(str(path), f"line {line}", f"not UTF-8 text ({error.reason} at byte "
                                                   f"{error.start}); save the file as UTF-8") from None
        raise


def _read_jsonl(path: Path, text: str, label: str) -> _Table:
    origin = str(path)
    texts, labels, splits, lines = [], [], [], []
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise _fail(origin, f"line {number}", f"not valid JSON ({error.msg} at column {error.colno}); "
                                                      "write one JSON object per line") from None
            if not isinstance(row, dict):
                raise _fail(origin, f"line {number}", f"a JSON {type(row).__name__}, not an object; write one "
                                                      f'object per line, like {{"{text}": "...", "{label}": "..."}}')
            for field in (text, label):
                if field not in row:
                    raise _fail(origin, f"line {number}", f"no {field!r} field (fields: {', '.join(map(repr, row))}); "
                                                          f"add it, or {_rename(field, text)}")
            texts.append(row[text])
            labels.append(row[label])
            splits.append(row.get(SPLIT_COLUMN))
            lines.append(number)
    has_split = any(value is not None for value in splits)
    return _Table(origin, path.stem, f"file {path}", texts, labels, splits if has_split else None,
                  lambda i: f"line {lines[i]}")


def _read_csv(path: Path, text: str, label: str) -> _Table:
    origin = str(path)
    texts, labels, splits, rows = [], [], [], []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise _fail(origin, None, f"empty; the first row must be a header naming the columns {text},{label}")
        for field in (text, label):
            if field not in header:
                raise _fail(origin, "row 1 (the header)",
                            f"no column {field!r} (columns: {', '.join(map(repr, header))}); {_rename(field, text)}")
        columns = {name: header.index(name) for name in (text, label, SPLIT_COLUMN) if name in header}
        previous_end = reader.line_num
        for number, fields in enumerate(reader, start=2):  # the header is row 1
            start, previous_end = previous_end + 1, reader.line_num
            if not fields:
                continue  # a blank line
            where = f"row {number}" + (f" (line {start} of the file)" if start != number else "")
            if len(fields) > len(header):
                raise _fail(origin, where, f"{len(fields)} fields but the header has {len(header)}; put texts "
                                           'that contain commas in double quotes ("a, b")')
            if max(columns[text], columns[label]) >= len(fields):
                raise _fail(origin, where, f"{len(fields)} fields but the header has {len(header)}; give every "
                                           f"row its {text} and {label}")
            texts.append(fields[columns[text]])
            labels.append(fields[columns[label]])
            split_at = columns.get(SPLIT_COLUMN)
            splits.append(fields[split_at] if split_at is not None and split_at < len(fields) else None)
            rows.append(where)
    return _Table(origin, path.stem, f"file {path}", texts, labels,
                  splits if SPLIT_COLUMN in columns else None, rows.__getitem__)


def _rename(field: str, text: str) -> str:
    """The fix for a missing column: name it as expected, or say which one it is."""
    argument = "text" if field == text else "label"
    return f"name the column {field!r}, or pass {argument}=<the column of {argument}s>"


# -- reading tables ---------------------------------------------------------------------------------
def read_user_table(table, split: str | None, *, text: str = "text", label: str = "label") -> _Table:
    """The columns of a pandas DataFrame or of a Hugging Face dataset (anything with
    ``column_names`` and columns by name); a ``DatasetDict`` gives its ``split``."""
    pandas = sys.modules.get("pandas")  # a DataFrame can only exist once pandas is imported
    if pandas is not None and isinstance(table, pandas.DataFrame):
        return _read_frame(table, text, label)
    columns = getattr(table, "column_names", None)
    if columns is None or not hasattr(table, "__getitem__"):
        raise TypeError(f"cannot read labelled texts from a {type(table).__name__}: give a task name, a .csv or "
                        ".jsonl path, a pandas DataFrame, a Hugging Face dataset or a TextDataset")
    if isinstance(columns, Mapping):  # a DatasetDict: one dataset per split
        if split not in columns:
            raise _fail("the dataset", None, f"no split {split!r} (splits: {', '.join(map(repr, columns))}); "
                                             "pass split= one of them")
        return read_user_table(table[split], None, text=text, label=label)
    _check_columns("the dataset", list(columns), text, label)
    features = getattr(table, "features", None)
    names = getattr(features.get(label), "names", None) if isinstance(features, Mapping) else None
    info_name = getattr(getattr(table, "info", None), "dataset_name", None)
    return _Table("the dataset", info_name or "dataset", "Hugging Face dataset", list(table[text]), list(table[label]),
                  list(table[SPLIT_COLUMN]) if SPLIT_COLUMN in columns else None, lambda i: f"row index {i}",
                  class_names=names)


def _read_frame(frame, text: str, label: str) -> _Table:
    _check_columns("the DataFrame", [str(c) for c in frame.columns], text, label)
    index = frame.index.tolist()  # plain Python values: messages say 3, not np.int64(3)
    return _Table("the DataFrame", "dataframe", "pandas DataFrame", frame[text].tolist(), frame[label].tolist(),
                  frame[SPLIT_COLUMN].tolist() if SPLIT_COLUMN in frame.columns else None,
                  lambda i: f"row index {index[i]!r}")


def _check_columns(origin: str, columns: list[str], text: str, label: str) -> None:
    for field in (text, label):
        if field not in columns:
            raise _fail(origin, None, f"no column {field!r} (columns: {', '.join(map(repr, columns))}); "
                                      f"{_rename(field, text)}")


# -- checking rows and labels ------------------------------------------------------------------------
def table_to_dataset(table: _Table, split: str | None, classes: Sequence[str] | None = None) -> TextDataset:
    """Check every row of ``table`` and encode its labels; keep the rows of ``split`` when the table
    has a split column (None: every row).

    Labels: all integers (or strings of digits, as a CSV has them) are kept as they are, with the
    class names ``classes`` or "0".."max" (a Hugging Face ClassLabel's names when there are some);
    otherwise they are class names, numbered in sorted order, or in the order of ``classes``.
    Labels are encoded over the whole table, so every split of one file numbers its classes alike.
    """
    for i, value in enumerate(table.texts):
        problem = _text_problem(value)
        if problem:
            raise _fail(table.origin, table.place(i), problem)
    values = [_label_value(value, table, i) for i, value in enumerate(table.labels)]
    names = _given_classes(classes)
    if all(isinstance(value, int) for value in values):
        codes, names = _integer_labels(values, table, names or table.class_names)
    else:
        codes, names = _named_labels([str(value) for value in values], table, names)
    keep = np.arange(len(values))
    if table.splits is not None:
        for i, value in enumerate(table.splits):
            if _is_missing(value) or not str(value).strip():
                raise _fail(table.origin, table.place(i), f"the {SPLIT_COLUMN} is missing; give every row its "
                                                          f"{SPLIT_COLUMN}, or drop the {SPLIT_COLUMN} column")
    if table.splits is not None and split is not None:
        keep = np.array([i for i, value in enumerate(table.splits) if str(value) == split], dtype=np.int64)
        if not len(keep):
            found = sorted({str(value) for value in table.splits})
            raise _fail(table.origin, None, f"no rows with {SPLIT_COLUMN} {split!r} (its {SPLIT_COLUMN!r} column "
                                            f"holds {', '.join(map(repr, found))}); pass split= one of them")
    if not len(keep):
        raise _fail(table.origin, None, "holds no rows; add rows of labelled texts")
    present = sorted({names[codes[i]] for i in keep})
    if len(present) < 2:
        raise _fail(table.origin, None, f"every row has the label {present[0]!r}; NTPS compares classes, so give "
                                        "at least two")
    return TextDataset([str(table.texts[i]) for i in keep], codes[keep], names, name=table.name,
                       split=split if table.splits is not None and split is not None else "", source=table.source)


def _text_problem(value) -> str | None:
    if _is_missing(value):
        return "the text is missing (null); give every row a text, or drop the row"
    if not isinstance(value, str):
        kind = type(value).__name__
        return f"the text {_short(value)} is not a string but {'an' if kind[0] in 'aeiou' else 'a'} {kind}; texts must be strings"
    if not value.strip():
        return "the text is empty; give every row a non-empty text, or drop the row"
    return None


def _label_value(value, table: _Table, i: int) -> int | str:
    """A label as an int (integers, integral floats, strings of digits) or a class name."""
    if _is_missing(value) or (isinstance(value, str) and not value.strip()):
        raise _fail(table.origin, table.place(i), "the label is missing; give every row a label (a class name "
                                                  "or an integer 0..C-1)")
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if float(value).is_integer():
            return int(value)
        raise _fail(table.origin, table.place(i), f"the label {value!r} is a fraction; labels are class names or "
                                                  "integers 0..C-1")
    if isinstance(value, str):
        return int(value) if _INTEGER.fullmatch(value) else value
    raise _fail(table.origin, table.place(i), f"the label {_short(value)} is a {type(value).__name__}; labels "
                                              "are class names or integers 0..C-1")


def _given_classes(classes) -> list[str] | None:
    if classes is None:
        return None
    names = [str(name) for name in classes]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"classes must name at least two distinct classes, got {names}")
    return names


def _integer_labels(values: list[int], table: _Table, names) -> tuple[np.ndarray, list[str]]:
    codes = np.array(values, dtype=np.int64)
    if len(codes) and codes.min() < 0:
        i = int(np.argmax(codes < 0))
        raise _fail(table.origin, table.place(i), f"the label {values[i]} is negative; integer labels run over "
                                                  "0..C-1 (or use class names)")
    top = int(codes.max()) if len(codes) else -1
    if names is None:
        return codes, [str(c) for c in range(top + 1)]
    names = [str(name) for name in names]
    if top >= len(names):
        i = int(np.argmax(codes >= len(names)))
        raise _fail(table.origin, table.place(i), f"the label {values[i]} is outside the {len(names)} classes "
                                                  f"{names[:10]} (0..{len(names) - 1}); fix the label or the classes")
    return codes, names


def _named_labels(values: list[str], table: _Table, names) -> tuple[np.ndarray, list[str]]:
    names = sorted(set(values)) if names is None else names
    index = {name: code for code, name in enumerate(names)}
    for i, value in enumerate(values):
        if value not in index:
            raise _fail(table.origin, table.place(i), f"the label {value!r} is not one of the classes given "
                                                      f"{names[:10]}; fix the label or add it to classes")
    return np.array([index[value] for value in values], dtype=np.int64), list(names)
