"""Tests of ntps.data.load_dataset on a user's own data: CSV and JSONL files (written here with the
csv and json modules or pandas, not by ntps), DataFrames, Hugging Face datasets (a stand-in, and the
real package when it is installed), and every error, which must name the file and the line."""

import csv
import doctest
import importlib
import json
import pkgutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ntps.data
from ntps import data
from ntps.cli import read_local_dataset
from ntps.data import DataFormatError, DatasetNotFoundError, TextDataset, load_dataset, stratified_subsample

# Texts that a naive CSV or JSONL writer gets wrong: commas, quotes, new lines, non-ASCII.
ROWS = [("a fine, funny film", "pos"), ('she said "dull"', "neg"), ("two\nlines", "pos"),
        ("Ümlaut à la carte", "neutral"), ("  padded  ", "neg"), ("the end", "neutral")]


def _expected(rows, classes=None):
    """Labels encoded by hand: class names in sorted order unless given."""
    classes = sorted({y for _, y in rows}) if classes is None else classes
    return [t for t, _ in rows], [classes.index(y) for _, y in rows], classes


def _write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def _same(a: TextDataset, b: TextDataset) -> bool:
    return a.texts == b.texts and a.labels.tolist() == b.labels.tolist() and a.classes == b.classes


# == each kind of input =========================================================================
def test_csv_with_string_labels_matches_a_hand_encoding(tmp_path):
    path = _write_csv(tmp_path / "reviews.csv", ["text", "label"], ROWS)
    dataset = load_dataset(path)
    texts, labels, classes = _expected(ROWS)
    assert dataset.texts == texts and dataset.labels.tolist() == labels and dataset.classes == classes
    assert dataset.name == "reviews" and dataset.split == "" and str(path) in dataset.source


def test_csv_jsonl_dataframe_of_the_same_rows_are_equal(tmp_path):
    frame = pd.DataFrame(ROWS, columns=["text", "label"])
    frame.to_csv(tmp_path / "by_pandas.csv", index=False)
    _write_jsonl(tmp_path / "rows.jsonl", [{"text": t, "label": y} for t, y in ROWS])
    from_frame = load_dataset(frame)
    assert from_frame.name == "dataframe"
    assert _same(from_frame, load_dataset(tmp_path / "by_pandas.csv"))
    assert _same(from_frame, load_dataset(str(tmp_path / "rows.jsonl")))
    assert _same(from_frame, TextDataset(*_expected(ROWS), name="hand"))


def test_integer_labels_are_kept_and_classes_name_them(tmp_path):
    rows = [("a", 2), ("b", 0), ("c", 2), ("d", 1), ("e", 0)]
    path = _write_jsonl(tmp_path / "ints.jsonl", [{"text": t, "label": y} for t, y in rows])
    dataset = load_dataset(path)
    assert dataset.labels.tolist() == [y for _, y in rows] and dataset.classes == ["0", "1", "2"]
    named = load_dataset(path, classes=["low", "mid", "high"])
    assert named.labels.tolist() == [y for _, y in rows] and named.classes == ["low", "mid", "high"]
    # a CSV holds strings only: digits are integer labels all the same
    csv_path = _write_csv(tmp_path / "ints.csv", ["text", "label"], rows)
    assert _same(load_dataset(csv_path), dataset)
    # the old CLI reader, now a wrapper, gives the same
    texts, labels, classes = read_local_dataset(csv_path)
    assert texts == dataset.texts and labels.tolist() == dataset.labels.tolist() and classes == dataset.classes
    labels[0] = 1  # still a writable array, as before


def test_classes_fix_the_order_of_named_labels():
    frame = pd.DataFrame(ROWS, columns=["text", "label"])
    order = ["neg", "neutral", "pos"][::-1]
    assert _same(load_dataset(frame, classes=order), TextDataset(*_expected(ROWS, order), name="hand"))


def test_other_column_names(tmp_path):
    path = _write_csv(tmp_path / "sms.csv", ["id", "sms", "is_spam"], [(i, t, y) for i, (t, y) in enumerate(ROWS)])
    assert _same(load_dataset(path, text="sms", label="is_spam"), TextDataset(*_expected(ROWS), name="hand"))


def test_a_split_column_selects_rows_and_keeps_one_class_numbering(tmp_path):
    rows = [("a", "pos", "train"), ("b", "neg", "train"), ("c", "mid", "train"), ("d", "pos", "test"),
            ("e", "neg", "test"), ("f", "neg", "validation")]
    path = _write_csv(tmp_path / "split.csv", ["text", "label", "split"], rows)
    classes = ["mid", "neg", "pos"]
    for split in ("train", "test", "validation"):
        if split == "validation":  # one class only: not a dataset NTPS can score
            with pytest.raises(DataFormatError, match="every row has the label 'neg'"):
                load_dataset(path, split)
            continue
        part = load_dataset(path, split)
        chosen = [(t, y) for t, y, s in rows if s == split]
        assert part.texts == [t for t, _ in chosen] and part.split == split
        assert part.classes == classes and part.labels.tolist() == [classes.index(y) for _, y in chosen]
    assert len(load_dataset(path, None)) == len(rows) and read_local_dataset(path)[0] == [t for t, _, _ in rows]
    with pytest.raises(DataFormatError, match=r"split\.csv: no rows with split 'dev' .*'test', 'train', 'validation'"):
        load_dataset(path, "dev")
    jsonl = _write_jsonl(tmp_path / "split.jsonl", [{"text": t, "label": y, "split": s} for t, y, s in rows[:2]]
                         + [{"text": "g", "label": "pos"}])
    assert _error(jsonl, None).startswith(f"{jsonl}, line 3: the split is missing")
    # without a split column, split is ignored
    plain = _write_csv(tmp_path / "plain.csv", ["text", "label"], [r[:2] for r in rows])
    assert len(load_dataset(plain, "test")) == len(rows)


def test_max_examples_is_a_stratified_subsample(tmp_path):
    rows = [(f"text {i}", "big" if i < 30 else "small") for i in range(40)]
    frame = pd.DataFrame(rows, columns=["text", "label"])
    full = load_dataset(frame)
    small = load_dataset(frame, max_examples=8, seed=3)
    keep = stratified_subsample(full.texts, full.labels, 8, seed=3)
    assert small.texts == [full.texts[i] for i in keep]
    assert small.class_counts() == {"big": 6, "small": 2}  # 30:10 of 8
    assert set(small.texts) <= set(load_dataset(frame, max_examples=20, seed=3).texts)
    assert load_dataset(frame, max_examples="all").texts == full.texts


class _StandInDataset:
    """What ntps reads of a ``datasets.Dataset``: column names, columns by name, features."""

    def __init__(self, columns: dict, label_names=None):
        self.columns = columns
        self.column_names = list(columns)
        self.features = {"label": type("ClassLabel", (), {"names": label_names})()} if label_names else {}

    def __getitem__(self, key):
        return list(self.columns[key])


class _StandInDatasetDict(dict):
    @property
    def column_names(self):
        return {split: table.column_names for split, table in self.items()}


def test_a_hugging_face_dataset_stand_in():
    texts = [t for t, _ in ROWS]
    codes = [0, 1, 0, 2, 1, 2]
    table = _StandInDataset({"text": texts, "label": codes}, label_names=["positive", "negative", "neutral"])
    dataset = load_dataset(table)
    assert dataset.texts == texts and dataset.labels.tolist() == codes
    assert dataset.classes == ["positive", "negative", "neutral"]  # the ClassLabel's names
    both = _StandInDatasetDict(train=table, test=_StandInDataset({"text": ["x", "y"], "label": [1, 0]}))
    assert load_dataset(both, "test").texts == ["x", "y"]
    with pytest.raises(DataFormatError, match="no split 'validation' \\(splits: 'train', 'test'\\)"):
        load_dataset(both, "validation")


def test_the_real_datasets_package_if_installed():
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_dict({"text": [t for t, _ in ROWS], "label": [y for _, y in ROWS]})
    assert _same(load_dataset(table), load_dataset(pd.DataFrame(ROWS, columns=["text", "label"])))
    names = ["positive", "negative", "neutral"]
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    coded = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [2, 0, 1]}, features=features)
    both = datasets.DatasetDict(train=coded, test=coded.select([0, 1]))
    test = load_dataset(both, "test")
    assert test.texts == ["a", "b"] and test.labels.tolist() == [2, 0] and test.classes == names


def test_a_text_dataset_is_returned_as_is():
    dataset = TextDataset(["a", "b", "c"], np.array([0, 1, 1]), ["x", "y"], name="mine")
    assert load_dataset(dataset) is dataset and load_dataset(dataset, classes=["x", "y"]) is dataset
    assert len(load_dataset(dataset, max_examples=2)) == 2
    with pytest.raises(ValueError, match=r"'mine' has the classes \['x', 'y'\], not \['y', 'x'\]"):
        load_dataset(dataset, classes=["y", "x"])


def test_a_task_name_goes_to_load(monkeypatch, tmp_path):
    calls = []
    loaded = TextDataset(["a", "b"], np.array([0, 1]), ["rotten", "fresh"], name="rt_sentiment")
    monkeypatch.setattr(data, "load", lambda *args, **kwargs: calls.append((args, kwargs)) or loaded)
    assert load_dataset("rt_sentiment", "test", max_examples=7, seed=2, root=tmp_path, fetch=False) is loaded
    assert calls == [(("rt_sentiment", "test"), {"max_examples": 7, "seed": 2, "root": tmp_path, "fetch": False})]
    assert load_dataset("rt_sentiment", classes=["rotten", "fresh"]) is loaded  # a check, as for a test split
    with pytest.raises(ValueError, match="has the classes"):
        load_dataset("rt_sentiment", classes=["fresh", "rotten"])
    with pytest.raises(ValueError, match="'sst2' is a registered dataset"):
        load_dataset("sst2", text="sentence")


def test_a_task_name_loads_what_load_loads():
    standins = Path(__file__).parent / "data" / "offline"  # small built tasks, as ntps.data.build_task writes them
    for split in data.SPLITS:
        expected = data.load("fortunes_topic", split, max_examples=5, root=standins)
        assert _same(load_dataset("fortunes_topic", split, max_examples=5, root=standins), expected)
    try:
        expected = data.load("fortunes_topic", "train", max_examples=50, fetch=False)
    except data.DataNotFetchedError:
        return  # the fetched suite is not there: the stand-ins above are the check
    assert _same(load_dataset("fortunes_topic", max_examples=50), expected)


# == errors: one line, naming the file, the line or row, and the fix ============================
def _error(source, *args, kind=DataFormatError, **kwargs) -> str:
    with pytest.raises(kind) as caught:
        load_dataset(source, *args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_jsonl_errors_name_the_line_of_the_file(tmp_path):
    def lines(*records):
        return _write_jsonl(tmp_path / "data.jsonl", records)

    good = [{"text": "fine", "label": "pos"}, {"text": "bad", "label": "neg"}]
    path = lines(*good, "{not json", *good)
    assert _error(path).startswith(f"{path}, line 3: not valid JSON")
    path = lines(good[0], "", "", {"text": None, "label": "neg"})  # blank lines count
    message = _error(path)
    assert message.startswith(f"{path}, line 4: the text is missing (null)") and "None" not in message
    assert _error(lines(*good, {"text": 5, "label": "x"})).startswith(f"{path}, line 3: the text 5 is not a string")
    assert _error(lines(*good, {"text": "   ", "label": "x"})).startswith(f"{path}, line 3: the text is empty")
    assert _error(lines(*good, {"text": "x", "label": None})).startswith(f"{path}, line 3: the label is missing")
    message = _error(lines(good[0], {"text": "x", "class": "neg"}))
    assert message.startswith(f"{path}, line 2: no 'label' field (fields: 'text', 'class')")
    assert "pass label=<the column of labels>" in message
    assert _error(lines(good[0], ["x", "neg"])).startswith(f"{path}, line 2: a JSON list, not an object")
    assert _error(lines(*good, {"text": "x", "label": 1.5})).startswith(f"{path}, line 3: the label 1.5 is a fraction")


def test_csv_errors_name_the_row_with_the_header_as_row_1(tmp_path):
    path = tmp_path / "data.csv"
    header = ["text", "label"]
    good = [("fine", "pos"), ("bad", "neg")]
    _write_csv(path, ["text", "class"], good)
    message = _error(path)
    assert message.startswith(f"{path}, row 1 (the header): no column 'label' (columns: 'text', 'class')")
    assert "pass label=<the column of labels>" in message
    _write_csv(path, header, [*good, ("", "neg")])
    assert _error(path).startswith(f"{path}, row 4: the text is empty")
    _write_csv(path, header, [("fine", ""), *good])
    assert _error(path).startswith(f"{path}, row 2: the label is missing")
    _write_csv(path, header, [("two\nlines", "pos"), ("fine", "pos"), ("   ", "neg")])  # a text over two lines
    assert _error(path).startswith(f"{path}, row 4 (line 5 of the file): the text is empty")
    path.write_text("text,label\nfine,pos\na fine, funny film,pos\n", encoding="utf-8")  # an unquoted comma
    message = _error(path)
    assert message.startswith(f"{path}, row 3: 3 fields but the header has 2") and "double quotes" in message
    path.write_text("text,label\nfine,pos\nalone\n", encoding="utf-8")
    assert _error(path).startswith(f"{path}, row 3: 1 fields but the header has 2")
    _write_csv(path, header, [("fine", "pos"), ("also fine", "pos")])
    assert _error(path) == (f"{path}: every row has the label 'pos'; NTPS compares classes, so give at least two")
    _write_csv(path, header, [])
    assert _error(path).startswith(f"{path}: holds no rows")
    path.write_bytes("text,label\nfine,pos\ncaf\u00e9,neg\n".encode("latin-1"))
    assert _error(path).startswith(f"{path}, line 3: not UTF-8 text")
    path.write_bytes("text,label\nfine,pos\nbad,neg\n".encode("utf-8-sig"))  # a BOM, as Excel writes
    assert load_dataset(path).texts == ["fine", "bad"]


def test_label_range_errors(tmp_path):
    path = _write_jsonl(tmp_path / "ints.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": -1}])
    assert _error(path).startswith(f"{path}, line 2: the label -1 is negative")
    path = _write_jsonl(tmp_path / "ints.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 2}])
    assert _error(path, classes=["x", "y"]).startswith(f"{path}, line 2: the label 2 is outside the 2 classes")
    path = _write_jsonl(tmp_path / "names.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": "meh"}])
    assert _error(path, classes=["neg", "pos"]).startswith(f"{path}, line 2: the label 'meh' is not one of")
    with pytest.raises(ValueError, match="at least two distinct classes"):
        load_dataset(path, classes=["pos", "pos"])


def test_dataframe_errors_name_the_row_index():
    frame = pd.DataFrame({"text": ["fine", np.nan, "bad"], "label": ["pos", "neg", "neg"]}, index=[10, 11, 12])
    message = _error(frame)
    assert message.startswith("the DataFrame, row index 11: the text is missing (null)") and "nan" not in message
    frame = pd.DataFrame({"text": ["fine", "bad", "ok"], "label": ["pos", None, "neg"]})
    assert _error(frame).startswith("the DataFrame, row index 1: the label is missing")
    assert _error(pd.DataFrame({"sentence": ["a"], "label": [0]})).startswith(
        "the DataFrame: no column 'text' (columns: 'sentence', 'label')")
    table = _StandInDataset({"text": ["fine", None], "label": [0, 1]})
    assert _error(table).startswith("the dataset, row index 1: the text is missing (null)")


def test_what_is_not_a_dataset(tmp_path):
    assert "Did you mean 'rt_sentiment'" in _error("rt_sentimnet", kind=DatasetNotFoundError)
    assert ".csv or .jsonl" in _error("no-such-thing", kind=DatasetNotFoundError)
    assert "no such file" in _error(str(tmp_path / "missing.csv"), kind=FileNotFoundError)
    (tmp_path / "data.txt").write_text("fine\tpos\n")
    assert _error(tmp_path / "data.txt").startswith(f"{tmp_path / 'data.txt'}: a .txt file; your own data must be")
    with pytest.raises(TypeError, match="cannot read labelled texts from a list"):
        load_dataset([("a", 0), ("b", 1)])


# == the docstrings' examples run ===============================================================
def test_the_examples_in_the_docstrings_of_ntps_data_run():
    modules = [ntps.data] + [importlib.import_module(f"ntps.data.{info.name}")
                             for info in pkgutil.iter_modules(ntps.data.__path__)]
    attempted = 0
    for module in modules:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted >= 10  # load_dataset's examples at least
