"""Synthetic moments with known answers, for tests, benchmarks and the bound-check notebook.

* :func:`random_spd` - a random symmetric positive (semi-)definite matrix with a chosen spectrum;
* :func:`random_layer_moments` - sxx, sxy, c0, c1 of one layer, computed exactly as the theory
  chapter's table of symbols defines them (mean-pooled features, one-hot labels, prefix sums
  against the next token) from random token states, so every identity of the theory holds in-sample;
* :func:`random_moments` - fast random SPD moments of any size (benchmarks at d = 4096);
* :func:`make_linear_gaussian` - the linear-Gaussian model y = B^T x + noise, with its
  population moments and the empirical moments of a sample.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "random_spd",
    "LayerMoments",
    "random_layer_moments",
    "random_moments",
    "LinearGaussian",
    "make_linear_gaussian",
]


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def random_spd(d: int, seed=None, *, condition: float = 1e2, rank: int | None = None) -> np.ndarray:
    """Random (d, d) SPD matrix ``O diag(lam) O^T``: O Haar-orthogonal, lam log-spaced from 1
    down to 1/condition; with ``rank`` < d only the first ``rank`` eigenvalues are nonzero."""
    rng = _rng(seed)
    o, r = np.linalg.qr(rng.standard_normal((d, d)))
    o = o * np.sign(np.diag(r))  # Haar measure
    lam = np.logspace(0.0, -np.log10(condition), d)
    if rank is not None:
        lam[rank:] = 0.0
    out = (o * lam) @ o.T
    return 0.5 * (out + out.T)


class LayerMoments(NamedTuple):
    sxx: np.ndarray  # (d, d)
    sxy: np.ndarray  # (d, C)
    c0: np.ndarray  # (d, d)
    c1: np.ndarray  # (d, d)
    features: np.ndarray  # (N, d) mean-pooled x_i
    labels: np.ndarray  # (N,) class indices


def random_layer_moments(
    d: int, n_classes: int, n_texts: int, seed=None, *, max_len: int = 12, signal: float = 1.0
) -> LayerMoments:
    """Moments of one layer from random token states h_{i,t} (AR(1) in t, class-shifted means).

    Follows the theory chapter's table of symbols to the letter: x_i = mean_t h_{i,t};
    s_{i,t} = sum_{u <= t} h_{i,u} paired with h_{i,t+1}; all four moments divided by
    N = n_texts. Every class appears.
    """
    rng = _rng(seed)
    labels = np.arange(n_texts) % n_classes
    rng.shuffle(labels)
    class_means = signal * rng.standard_normal((n_classes, d))
    mixing = rng.standard_normal((d, d)) / np.sqrt(d)
    transition = 0.6 * np.linalg.qr(rng.standard_normal((d, d)))[0]
    sxx = np.zeros((d, d))
    sxy = np.zeros((d, n_classes))
    c0 = np.zeros((d, d))
    c1 = np.zeros((d, d))
    features = np.zeros((n_texts, d))
    for i in range(n_texts):
        length = int(rng.integers(1, max_len + 1))
        h = np.zeros((length, d))
        state = rng.standard_normal(d)
        for t in range(length):
            state = transition @ state + rng.standard_normal(d)
            h[t] = mixing @ state + class_means[labels[i]]
        x = h.mean(0)
        features[i] = x
        sxx += np.outer(x, x)
        sxy[:, labels[i]] += x
        prefix = np.cumsum(h, axis=0)[:-1]  # s_t for t = 1..T-1
        c0 += prefix.T @ prefix
        c1 += prefix.T @ h[1:]
    return LayerMoments(sxx / n_texts, sxy / n_texts, c0 / n_texts, c1 / n_texts, features, labels)


def random_moments(d: int, n_classes: int, seed=None, *, condition: float = 1e3) -> LayerMoments:
    """Fast random moments of any size: Wishart-like SPD sxx and c0, random sxy and c1.

    Not from token states (no features/labels: those fields are empty arrays); meant for
    timing, where only the shapes and the conditioning matter.
    """
    rng = _rng(seed)
    # 2d samples: a square Gaussian factor would put its smallest eigenvalue near zero
    spectrum = np.logspace(0.0, -np.log10(condition), 2 * d)
    a = rng.standard_normal((d, 2 * d)) * np.sqrt(spectrum)
    sxx = a @ a.T / (2 * d)
    b = rng.standard_normal((d, 2 * d)) * np.sqrt(spectrum)
    c0 = b @ b.T / (2 * d)
    sxy = sxx @ rng.standard_normal((d, n_classes)) / np.sqrt(d)
    c1 = c0 @ rng.standard_normal((d, d)) / np.sqrt(d)
    empty = np.zeros((0,))
    return LayerMoments(0.5 * (sxx + sxx.T), sxy, 0.5 * (c0 + c0.T), c1, empty.reshape(0, d), empty)


class LinearGaussian(NamedTuple):
    """Population and empirical moments of y = B^T x + noise, x ~ N(0, Sigma)."""

    sxx: np.ndarray  # (d, d) population Sigma
    sxy: np.ndarray  # (d, C) population Sigma B
    syy: np.ndarray  # (C, C) population B^T Sigma B + noise^2 I
    sxx_hat: np.ndarray  # (d, d) X^T X / n
    sxy_hat: np.ndarray  # (d, C) X^T Y / n
    syy_hat: np.ndarray  # (C, C) Y^T Y / n
    X: np.ndarray  # (n, d)
    Y: np.ndarray  # (n, C)
    B: np.ndarray  # (d, C) true coefficients


def make_linear_gaussian(
    d: int,
    n_targets: int,
    n_samples: int,
    seed=None,
    *,
    rank: int | None = None,
    noise: float = 0.5,
    condition: float = 1e2,
) -> LinearGaussian:
    """The linear-Gaussian model y = B^T x + e, x ~ N(0, Sigma), e ~ N(0, noise^2 I_C).

    B (d, C) has rank ``rank`` (default min(d, C)). Returns the population moments
    (Sigma, Sigma B, B^T Sigma B + noise^2 I) and the uncentred empirical moments of a sample of
    n_samples, with the sample itself. Population excess losses use tr(syy) as
    ``y_second_moment`` in :mod:`ntps.bounds`.
    """
    rng = _rng(seed)
    sigma = random_spd(d, rng, condition=condition)
    rank = min(d, n_targets) if rank is None else rank
    coefficients = rng.standard_normal((d, rank)) @ rng.standard_normal((rank, n_targets)) / np.sqrt(rank)
    x = rng.standard_normal((n_samples, d)) @ np.linalg.cholesky(sigma).T
    y = x @ coefficients + noise * rng.standard_normal((n_samples, n_targets))
    syy = coefficients.T @ sigma @ coefficients + noise**2 * np.eye(n_targets)
    return LinearGaussian(
        sigma,
        sigma @ coefficients,
        syy,
        x.T @ x / n_samples,
        x.T @ y / n_samples,
        y.T @ y / n_samples,
        x,
        y,
        coefficients,
    )
