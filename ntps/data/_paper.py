"""The paper's twelve datasets on the Hugging Face hub: hub ids, the text and label mapping of its
released code, and its split rule. They need the hub (Colab); offline, their loader says so and
names the closest offline task.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from ._dataset import HubUnavailableError, TextDataset
from ._offline import OFFLINE_SUITE


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
    from ..models import hub_reachable

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
