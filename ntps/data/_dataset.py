"""The dataset object every loader returns, and the errors they raise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "test")


@dataclass(frozen=True, eq=False)
class TextDataset:
    """Texts with integer labels.

    texts: the examples; labels: int array (n,) with values in 0..C-1; classes: the C class
    names (``classes[labels[i]]`` is the name of example i); name, split, source, license:
    where the data come from and under which terms. Frozen: the labels array is read-only.

    Examples
    --------
    >>> import numpy as np
    >>> from ntps.data import TextDataset
    >>> reviews = TextDataset(["a fine film", "a dull film", "wonderful"], np.array([1, 0, 1]),
    ...                       ["neg", "pos"], name="reviews")
    >>> reviews
    TextDataset('reviews', split='', 3 texts, 2 classes ['neg', 'pos'])
    >>> reviews.class_counts()
    {'neg': 1, 'pos': 2}
    >>> [reviews.classes[label] for label in reviews.labels]
    ['pos', 'neg', 'pos']
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


class DataFormatError(ValueError):
    """A user's table cannot be read as labelled texts; the message names the file (or table), the
    line or row, and the fix."""
