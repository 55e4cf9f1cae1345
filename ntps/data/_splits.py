"""Splits and subsamples decided by hashing each text with a seed, not by a random generator.

A text's split never depends on the numpy version, on the order of the source rows, or on which
other texts are present, and a smaller subsample is always part of a larger one.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

SPLIT_SEED = 0
TEST_FRACTION = 0.3


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
