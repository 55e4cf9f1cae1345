"""Transferability metrics practitioners already use, to set beside NTPS on the same features.

Each metric scores one layer's features of a labelled dataset without training a probe:

* :func:`logme` (You et al., ICML 2021): the maximised log evidence of Bayesian linear regression
  of each one-hot label column on the features, divided by N, averaged over classes;
* :func:`h_score` (Bao et al., ICIP 2019): ``tr(pinv(cov f) cov(E[f | y]))``;
* :func:`regularized_h_score` (Ibrahim et al., 2022): the same with a Ledoit-Wolf shrunk ``cov f``;
* :func:`rankme` (Garrido et al., ICML 2023): the effective rank ``exp(entropy)`` of the
  normalised singular values (needs no labels);
* :func:`knn_accuracy`: leave-one-out k-nearest-neighbour accuracy, a simple class-separation
  baseline.

Conventions: ``features`` is (N, D), ``labels`` (N,) integers in ``0..C-1``. Everything is computed
in float64 on a copy: the caller's arrays are never written. Bad input (empty, NaN/inf, one class,
labels out of range or not integers, mismatched lengths) raises a ``ValueError`` naming the problem.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._linalg import reject_complex

__all__ = [
    "LogMEResult",
    "logme",
    "log_evidence",
    "h_score",
    "regularized_h_score",
    "rankme",
    "knn_accuracy",
    "RANKME_EPS",
]

RANKME_EPS = 1e-7


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _check_features(features, name: str = "features") -> np.ndarray:
    reject_complex(features, name)
    try:
        f = np.array(features, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a numeric (N, D) array: {error}") from None
    if f.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N texts, D features), got shape {f.shape}")
    if f.shape[0] == 0 or f.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {f.shape}): need at least one text and one feature")
    bad = ~np.isfinite(f)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(f"{name} holds {int(bad.sum())} NaN or infinite values (rows {rows[:5].tolist()}...)")
    return f


def _check_labels(labels, n: int, num_classes: int | None = None, *, min_classes: int = 2) -> tuple[np.ndarray, int]:
    y = np.array(labels, copy=True)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class indices, got shape {y.shape}")
    if len(y) != n:
        raise ValueError(f"{n} feature rows but {len(y)} labels: give one label per row")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"labels must be integers 0..C-1, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise ValueError(f"labels must be non-negative class indices, found {int(y.min())}")
    c = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.max() >= c:
        raise ValueError(f"labels must lie in 0..{c - 1} (num_classes={c}), found {int(y.max())}")
    present = np.unique(y).size
    if present < min_classes:
        raise ValueError(f"labels hold {present} class(es); a transferability score needs at least {min_classes}")
    return y, c


# --------------------------------------------------------------------------------------------
# LogME
# --------------------------------------------------------------------------------------------
class LogMEResult(NamedTuple):
    """LogME and its per-class pieces."""

    score: float  # mean over classes of evidence / N
    evidence: np.ndarray  # (C,) maximised log evidence of each one-hot column (not divided by N)
    alpha: np.ndarray  # (C,) prior precision at the maximum (inf: the prior collapsed, w = 0)
    beta: np.ndarray  # (C,) noise precision at the maximum (inf: the supremum is noise-free)
    fixed_point: np.ndarray  # (C,) bool: the paper's fixed point converged (else the profile search)


class _Spectrum(NamedTuple):
    sigma: np.ndarray  # (k,) squared singular values of F above the numerical rank cut
    u: np.ndarray  # (N, k) their left singular vectors
    n: int
    d: int


def _spectrum(f: np.ndarray) -> _Spectrum:
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    cut = max(f.shape) * np.finfo(np.float64).eps * (s[0] if s.size else 0.0)
    keep = s > cut
    return _Spectrum(s[keep] ** 2, u[:, keep], f.shape[0], f.shape[1])


def log_evidence(alpha: float, beta: float, sigma: np.ndarray, proj: np.ndarray, residual0: float,
                 n: int, d: int) -> float:
    """Log marginal likelihood of Bayesian linear regression, from the SVD of the features.

    Model: ``t = F w + e``, ``w ~ N(0, alpha^{-1} I_D)``, ``e ~ N(0, beta^{-1} I_N)``. With the thin
    SVD ``F = U diag(s) V^T`` restricted to its k nonzero singular values, ``sigma = s**2`` (k,),
    ``proj = U^T t`` (k,) and ``residual0 = ||t||^2 - ||U^T t||^2`` (the part of t outside the
    column space of F)::

        A = alpha I_D + beta F^T F,  m = beta A^{-1} F^T t
        log p(t) = D/2 log alpha + N/2 log beta - N/2 log 2 pi
                   - beta/2 ||t - F m||^2 - alpha/2 ||m||^2 - 1/2 log det A

    where ``log det A = sum_{i<=k} log(alpha + beta sigma_i) + (D - k) log alpha`` (A has D
    eigenvalues; the D - k beyond the nonzero singular values are alpha), and with
    ``lam = alpha / beta``: ``||m||^2 = sum sigma_i proj_i^2 / (lam + sigma_i)^2``,
    ``||t - F m||^2 = sum (lam proj_i / (lam + sigma_i))^2 + residual0``.
    """
    lam = alpha / beta
    m2 = float(np.sum(sigma * (proj / (lam + sigma)) ** 2))
    res2 = float(np.sum((lam * proj / (lam + sigma)) ** 2) + residual0)
    logdet = float(np.sum(np.log(alpha + beta * sigma))) + (d - sigma.size) * np.log(alpha)
    return (0.5 * d * np.log(alpha) + 0.5 * n * np.log(beta) - 0.5 * n * np.log(2 * np.pi)
            - 0.5 * beta * res2 - 0.5 * alpha * m2 - 0.5 * logdet)


def _fixed_point(sigma, proj, residual0, n, *, tol, max_iter):
    """MacKay's updates for (alpha, beta), LogME's Algorithm 1, in the SVD basis.

    ``gamma = sum sigma_i / (lam + sigma_i)``, ``alpha = gamma / ||m||^2``,
    ``beta = (N - gamma) / ||t - F m||^2`` (lam = alpha / beta), from alpha = beta = 1 until both
    change by less than ``tol`` (relative). Returns (alpha, beta, converged); not converged when
    the iteration runs off to a boundary (lam -> 0: the supremum is noise-free; or ||m|| -> 0).
    """
    alpha, beta = 1.0, 1.0
    floor = 1e-12 * (float(sigma.max()) if sigma.size else 1.0)
    for _ in range(max_iter):
        lam = alpha / beta
        gamma = float(np.sum(sigma / (lam + sigma)))
        m2 = float(np.sum(sigma * (proj / (lam + sigma)) ** 2))
        res2 = float(np.sum((lam * proj / (lam + sigma)) ** 2) + residual0)
        if m2 <= 0.0 or res2 <= 0.0 or gamma <= 0.0 or gamma >= n:
            return alpha, beta, False
        new_alpha, new_beta = gamma / m2, (n - gamma) / res2
        change = max(abs(new_alpha - alpha) / alpha, abs(new_beta - beta) / beta)
        alpha, beta = new_alpha, new_beta
        if not (np.isfinite(alpha) and np.isfinite(beta)) or alpha / beta < floor:
            return alpha, beta, False
        if change < tol:
            return alpha, beta, True
    return alpha, beta, False


def _profile(lam, sigma, proj, residual0, n):
    """Evidence maximised over the overall scale at a fixed ratio lam = alpha / beta (N-space form:
    t ~ N(0, tau (lam I + F F^T)), tau = 1/alpha). Returns (log evidence, tau)."""
    k = sigma.size
    quad = float(np.sum(proj**2 / (lam + sigma))) + residual0 / lam
    tau = quad / n
    value = (-0.5 * n * np.log(2 * np.pi * tau) - 0.5 * float(np.sum(np.log(lam + sigma)))
             - 0.5 * (n - k) * np.log(lam) - 0.5 * n)
    return value, tau


def _maximise_profile(sigma, proj, residual0, n, d):
    """Global maximum of the evidence over lam on a log grid, refined by a bounded Brent search;
    lam spans 30 decades below the smallest and above the largest nonzero sigma, so a supremum on
    the boundary (lam -> 0 or infinity) is approached to well within round-off of the evidence."""
    from scipy.optimize import minimize_scalar

    lo = np.log(float(sigma.min()) if sigma.size else 1.0) - 69.0
    hi = np.log(float(sigma.max()) if sigma.size else 1.0) + 69.0
    grid = np.linspace(lo, hi, 600)
    values = np.array([_profile(np.exp(g), sigma, proj, residual0, n)[0] for g in grid])
    best = int(np.nanargmax(values))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    result = minimize_scalar(lambda g: -_profile(np.exp(g), sigma, proj, residual0, n)[0], bounds=(a, b),
                             method="bounded", options={"xatol": 1e-10})
    g = result.x if -result.fun >= values[best] else grid[best]
    lam = float(np.exp(g))
    _, tau = _profile(lam, sigma, proj, residual0, n)
    alpha, beta = 1.0 / tau, 1.0 / (lam * tau)
    return alpha, beta


def _class_evidence(spec: _Spectrum, t: np.ndarray, *, tol, max_iter):
    proj = spec.u.T @ t
    if spec.sigma.size == spec.n:
        # U spans R^N: t lies in the column space of F and has no residual. The difference
        # t.t - proj.proj would be round-off (~1e-16 t.t, its sign and size set by the BLAS
        # kernels), and the profile divides it by lam ~ 1e-30 near a noise-free supremum.
        residual0 = 0.0
    else:
        # The residual itself, not ||t||^2 - ||U^T t||^2: no cancellation of two large numbers.
        residual0 = float(np.sum((t - spec.u @ proj) ** 2))
    if float(t @ t) == 0.0:
        raise ValueError("a target column is all zero: its evidence is unbounded")
    alpha, beta, converged = _fixed_point(spec.sigma, proj, residual0, spec.n, tol=tol, max_iter=max_iter)
    if not converged:
        alpha, beta = _maximise_profile(spec.sigma, proj, residual0, spec.n, spec.d)
    value = log_evidence(alpha, beta, spec.sigma, proj, residual0, spec.n, spec.d)
    return value, alpha, beta, converged


def logme(features, labels, *, num_classes: int | None = None, tol: float = 1e-10, max_iter: int = 10_000,
          return_details: bool = False):
    """LogME (You et al., 2021): average over classes of the maximised log evidence, divided by N.

    For each class c, the target is the one-hot column ``t_c = 1[y == c]`` and the evidence
    ``p(t_c | F, alpha, beta)`` of Bayesian linear regression (prior ``w ~ N(0, alpha^{-1} I_D)``,
    noise precision beta; formula in :func:`log_evidence`) is maximised over (alpha, beta)::

        LogME = (1/C) sum_c  max_{alpha, beta} log p(t_c | F, alpha, beta) / N

    The maximum is found as in the paper, by the fixed-point iteration on the SVD of F (run to
    convergence, ``tol``, rather than at most 11 steps, and without the reference code's 1e-5 added
    to denominators), with a direct search as a fallback when the iteration runs off to a boundary
    (``fixed_point`` in the details says which was used).

    Parameters
    ----------
    features : (N, D) array
        The features F, used as given (no centring, no scaling, as in the paper: LogME is
        invariant to a global scale of F, not to a shift).
    labels : (N,) array of int
        Classes in ``0..C-1``.
    num_classes : int, optional
        C (default ``max(labels) + 1``; a class with no example would have an all-zero target and
        is rejected).

    Notes
    -----
    N < D: the thin SVD has at most k = min(N, D) nonzero singular values while
    ``A = alpha I + beta F^T F`` is D x D; its D - k further eigenvalues equal alpha and contribute
    ``(D - k) log alpha`` to ``log det A``. The widely used reference implementation (thuml/LogME,
    ``_fit_fixed_point``) sums ``log(alpha + beta sigma_i)`` over the k computed values only, so for
    N < D its evidence lacks ``-(D - k)/2 log alpha`` (thuml/LogME issue #23). Here k is the
    numerical rank of F (singular values above ``max(N, D) * eps * s_max``) and the D - k term is
    included, so the value equals the dense-matrix evidence for every N and D.

    Returns the score (float), or a :class:`LogMEResult` with ``return_details``.
    """
    f = _check_features(features)
    y, c = _check_labels(labels, f.shape[0], num_classes)
    empty = [cls for cls in range(c) if not np.any(y == cls)]
    if empty:
        raise ValueError(f"classes {empty} have no example: their one-hot targets are all zero")
    spec = _spectrum(f)
    rows = [_class_evidence(spec, (y == cls).astype(np.float64), tol=tol, max_iter=max_iter) for cls in range(c)]
    evidence, alpha, beta, fixed = (np.array(col) for col in zip(*rows))
    score = float(np.mean(evidence) / f.shape[0])
    if return_details:
        return LogMEResult(score, evidence, alpha, beta, fixed.astype(bool))
    return score


# --------------------------------------------------------------------------------------------
# H-score
# --------------------------------------------------------------------------------------------
def _class_mean_matrix(fc: np.ndarray, y: np.ndarray, c: int) -> np.ndarray:
    """g (N, D): every row replaced by the mean of its class (fc already centred)."""
    counts = np.bincount(y, minlength=c).astype(np.float64)
    sums = np.zeros((c, fc.shape[1]))
    np.add.at(sums, y, fc)
    means = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
    return means[y]


def h_score(features, labels, *, rcond: float | None = None) -> float:
    """H-score (Bao et al., 2019): ``tr(pinv(cov f) cov(E[f | y]))``.

    ``cov f = (1/N) F_c^T F_c`` with F_c the centred features, ``cov(E[f|y]) = (1/N) G_c^T G_c``
    where row i of G is the mean feature of text i's class (centred with F, so G_c has column
    means zero). The normalisation (1/N or 1/(N-1)) cancels in the ratio.

    ``pinv`` keeps the eigenvalues of ``cov f`` above ``rcond * lam_max``; the default rcond is
    ``max(N, D) * eps`` (numpy's ``matrix_rank`` rule). With ``N <= D`` the features of N points
    are linearly separable and the score saturates at ``C - 1``: use
    :func:`regularized_h_score` there.

    Range: ``0 <= H <= min(C - 1, rank)``; ``H = C - 1`` when every feature equals its class mean.
    """
    f = _check_features(features)
    y, c = _check_labels(labels, f.shape[0])
    fc = f - f.mean(axis=0)
    g = _class_mean_matrix(fc, y, c)
    n, d = fc.shape
    _, s, vt = np.linalg.svd(fc, full_matrices=False)
    lam = s**2 / n  # eigenvalues of cov f on its range
    rcond = max(n, d) * np.finfo(np.float64).eps if rcond is None else float(rcond)
    keep = lam > rcond * lam[0] if lam[0] > 0 else np.zeros_like(lam, dtype=bool)
    if not keep.any():
        raise ValueError("the features are constant: cov f is zero, the H-score is undefined")
    # tr(pinv(cov f) cov g) = (1/N) sum_i || diag(lam^{-1/2}) V^T g_i ||^2
    whitened = (g @ vt[keep].T) / np.sqrt(lam[keep])
    return float(np.sum(whitened**2) / n)


def regularized_h_score(features, labels, *, shrinkage: float | None = None) -> float:
    """Shrinkage-regularised H-score (Ibrahim, Ponomareva & Mazumder, 2022).

    ``H_a = tr( S_a^{-1} (1 - a) cov(E[f|y]) )``, ``S_a = (1 - a) cov f + a (tr(cov f)/D) I``, with
    the Ledoit-Wolf shrinkage ``a`` (``sklearn.covariance.ledoit_wolf_shrinkage`` on the centred
    features) unless ``shrinkage`` is given. Both covariances use 1/N (the Ledoit-Wolf convention).
    ``a = 0`` gives the plain :func:`h_score` (a pseudo-inverse where cov f is singular).

    Computed from the thin SVD ``F_c = U diag(s) V^T``: the class means of the centred features lie
    in the row space of F_c, where ``S_a = V diag((1 - a) s^2/N + a mu) V^T``, so
    ``H_a = (1 - a)/N sum_i || diag((1 - a) s^2/N + a mu)^{-1/2} V^T g_i ||^2`` (no D x D inverse).
    """
    from sklearn.covariance import ledoit_wolf_shrinkage

    f = _check_features(features)
    y, c = _check_labels(labels, f.shape[0])
    n, d = f.shape
    fc = f - f.mean(axis=0)
    if not np.any(fc):
        raise ValueError("the features are constant: cov f is zero, the H-score is undefined")
    a = float(ledoit_wolf_shrinkage(fc, assume_centered=True)) if shrinkage is None else float(shrinkage)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"shrinkage must lie in [0, 1], got {a}")
    g = _class_mean_matrix(fc, y, c)
    _, s, vt = np.linalg.svd(fc, full_matrices=False)
    mu = float(np.sum(s**2)) / n / d  # tr(cov f) / D
    lam = (1.0 - a) * s**2 / n + a * mu  # eigenvalues of S_a on the row space of F_c
    keep = lam > max(n, d) * np.finfo(np.float64).eps * lam.max()
    whitened = (g @ vt[keep].T) / np.sqrt(lam[keep])
    return float((1.0 - a) * np.sum(whitened**2) / n)


# --------------------------------------------------------------------------------------------
# RankMe and kNN
# --------------------------------------------------------------------------------------------
def rankme(features, *, eps: float = RANKME_EPS) -> float:
    """RankMe (Garrido et al., 2023): the effective rank of the features.

    With ``s_1, ..., s_k`` the singular values of the (N, D) features (k = min(N, D), as given: no
    centring), ``p_j = s_j / ||s||_1 + eps`` and ``RankMe = exp(-sum_j p_j log p_j)``. eps = 1e-7
    as in the paper. About r for r equal nonzero singular values; about 1 for rank one.
    """
    f = _check_features(features)
    s = np.linalg.svd(f, compute_uv=False)
    total = s.sum()
    if total <= 0:
        raise ValueError("the features are all zero: RankMe is undefined")
    p = s / total + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def knn_accuracy(features, labels, *, k: int = 5, standardize: bool = True) -> float:
    """Leave-one-out k-nearest-neighbour accuracy: a class-separation baseline.

    Each text is classified by the majority label of its k nearest other texts (Euclidean
    distance, on features standardised to zero mean and unit variance per column when
    ``standardize``); a tie between classes goes to the tied class whose nearest member is
    closest. Returns the fraction classified correctly.
    """
    f = _check_features(features)
    y, c = _check_labels(labels, f.shape[0])
    n = f.shape[0]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an integer in [1, N - 1] = [1, {n - 1}], got {k!r}")
    if standardize:
        std = f.std(axis=0)
        f = (f - f.mean(axis=0)) / np.where(std > 0, std, 1.0)
    sq = np.sum(f**2, axis=1)
    dist = sq[:, None] + sq[None, :] - 2.0 * (f @ f.T)
    np.fill_diagonal(dist, np.inf)
    # neighbours in order of distance (stable: equal distances keep index order)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    neighbour_labels = y[order]  # (N, k), nearest first
    votes = np.zeros((n, c), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(n), k), neighbour_labels.ravel()), 1)
    tied = votes == votes.max(axis=1, keepdims=True)  # (N, C)
    # among tied classes, the one whose first appearance in the neighbour list is earliest
    first_rank = np.full((n, c), k, dtype=np.int64)
    for j in range(k - 1, -1, -1):
        first_rank[np.arange(n), neighbour_labels[:, j]] = j
    first_rank = np.where(tied, first_rank, k + 1)
    predicted = np.argmin(first_rank, axis=1)
    return float(np.mean(predicted == y))
