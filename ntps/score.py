"""The Next Token Perception Score (NTPS) from the four moments of one layer.

Notation (the theory chapter's table of symbols; one layer, d features, C classes):

* ``sxx`` (d, d)  = (1/N) sum_i x_i x_i^T, perception second moment, written Sigma;
* ``sxy`` (d, C)  = (1/N) sum_i x_i y_i^T, features against one-hot labels;
* ``c0``  (d, d)  = (1/N) sum_{i,t} s_{i,t} s_{i,t}^T, prefix-sum second moment;
* ``c1``  (d, d)  = (1/N) sum_{i,t} s_{i,t} h_{i,t+1}^T, prefix sum against next token.

Subspaces (closed-form reduced-rank regression):

* perception encoder U_k: top-k generalised eigenvectors of (sxy sxy^T, sxx);
* autoregressive encoder V_k: top-k generalised eigenvectors of (c1 c1^T, c0).

Theorem-consistent score (the default of the project)::

    M    = Sigma^{-1/2} sxy                       (d, C), on the range of Sigma
    Q    = top-k_u left singular vectors of M     (d, k_u), k_u defaults to r = rank(M)
    Pi_V = orthogonal projector onto col(Sigma^{1/2} V_k)
    NTPS = ||Pi_V Q||_F^2 / k_u                   in [0, 1]

and the spectrum-weighted variant ``NTPS_s = ||Pi_V M||_F^2 / ||M||_F^2``.

Computation. Everything is float64 and happens in the eigenbasis of Sigma restricted to its
numerical range, Sigma = E diag(w) E^T with w > rtol * max(w) (E is (d, p)): there
``Sigma^{1/2} V -> diag(w^{1/2}) E^T V`` and ``M -> diag(w^{-1/2}) E^T sxy``, and E is an isometry,
so norms and projections are unchanged. The autoregressive side whitens c0 on its range,
c0 = F diag(mu) F^T, takes the eigenvectors Z of the (d_eff, d_eff) matrix
``G G^T, G = diag(mu^{-1/2}) F^T c1`` in descending order, and maps back, V = F diag(mu^{-1/2}) Z.
The whole k-grid then needs one ordered orthonormal basis b_1, b_2, ... of the leading columns
of ``Sigma^{1/2} V`` (QR without pivoting; columns that add nothing, such as V directions in the
null space of Sigma, contribute 0) and a cumulative sum::

    NTPS(k) = (1/k_u) sum_{j <= k} ||b_j^T Q||^2

with ``Q = [q_1, ..., q_{k_u}]`` the left singular vectors of M, as in the theory chapter.

See :mod:`ntps._linalg` for the tolerances (``rtol``). ``ntps_reference`` reproduces the
released code's different (and ill-posed) algorithm for comparison with the paper.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np
import scipy.linalg

from ntps import _linalg as la

__all__ = [
    "GeneralizedEig",
    "WhitenedTargets",
    "ProjectorBasis",
    "REFERENCE_FRACTIONS",
    "whitened_targets",
    "perception_subspace",
    "autoregressive_subspace",
    "projector_basis",
    "ntps_score",
    "ntps_grid",
    "ntps_full_grid",
    "ntps_of_encoder",
    "ntps_spectral",
    "ntps_spectral_grid",
    "ntps_spectral_of_encoder",
    "LayerGrids",
    "ntps_grids",
    "ntps_null",
    "ntps_lift",
    "random_encoder_ntps",
    "ntps_layers",
    "score_layers",
    "DEFAULT_K_FRACTION",
    "default_k",
    "ntps_reference",
    "ntps_reference_sweep",
]

# The k a summary reads NTPS at when none is given: a tenth of the width. Small k is where the
# score says most (the theorem's bounds are tightest for a small autoregressive subspace, and at
# k >= p, the rank of Sigma, every task scores 1).
DEFAULT_K_FRACTION = 0.1


def default_k(width: int) -> int:
    """The default k of a summary, an absolute number: ``max(1, round(DEFAULT_K_FRACTION * d))``
    (58 for d = 576, 410 for d = 4096)."""
    return max(1, int(round(DEFAULT_K_FRACTION * int(width))))


# The fractions of the released code's sweep (np.arange keeps its float quirks, e.g. 0.35000000000000003).
REFERENCE_FRACTIONS = np.arange(0.05, 1.0, 0.05)
# The released code drops generalised directions whose B eigenvalue is <= this ABSOLUTE value.
REFERENCE_EIG_TOL = 1e-8


class GeneralizedEig(NamedTuple):
    """Generalised eigenpairs, largest eigenvalue first."""

    values: np.ndarray  # (k,) generalised eigenvalues, descending
    vectors: np.ndarray  # (d, k) eigenvectors, B-orthonormal (vectors^T B vectors = I)


class WhitenedTargets(NamedTuple):
    """The whitened targets M = Sigma^{-1/2} sxy and the pieces of its SVD."""

    matrix: np.ndarray  # (d, C) M
    left: np.ndarray  # (d, r) left singular vectors of M, Q = left[:, :k_u]
    singular_values: np.ndarray  # (r,) s_1 >= ... >= s_r > rtol * s_1
    rank: int  # r


class ProjectorBasis(NamedTuple):
    """An ordered orthonormal basis of col(Sigma^{1/2} V)."""

    basis: np.ndarray  # (d, m) orthonormal columns, m = rank of Sigma^{1/2} V
    kept: np.ndarray  # (k,) bool: column j of V added a direction (basis column order)


# --------------------------------------------------------------------------------------------
# Backend-generic cores (inputs already checked and converted)
# --------------------------------------------------------------------------------------------


class _Perception(NamedTuple):
    sigma: la.RangeEig  # values w (p,), vectors E (d, p)
    targets: Any  # (p, C) M in the coordinates of E
    left: Any  # (p, r) left singular vectors of M in the coordinates of E
    singular_values: np.ndarray  # (r,)
    rank: int


def _perception_core(bk, sxx, sxy, rtol: float) -> _Perception:
    sigma = la.range_eigh(bk, sxx, rtol, "sxx")
    targets = (sigma.vectors.T @ sxy) / bk.sqrt(sigma.values)[:, None]
    left, singular, _ = bk.svd(targets)
    singular_np = bk.to_numpy(singular)
    rank = int(np.count_nonzero(singular_np > rtol * singular_np[0])) if singular_np[0] > 0 else 0
    if rank == 0:
        raise ValueError(
            "sxy has no component on the range of sxx: the labels are not predictable from these "
            "features at all (were sxx and sxy computed from the same texts and layer?)"
        )
    return _Perception(sigma, targets, left[:, :rank], singular_np[:rank], rank)


def _autoregressive_core(bk, c0, c1, rtol: float):
    """Generalised eigenvalues (d_eff,) and c0-orthonormal eigenvectors (d, d_eff), descending."""
    c0_range = la.range_eigh(bk, c0, rtol, "c0")
    inv_sqrt = 1.0 / bk.sqrt(c0_range.values)
    factor = (c0_range.vectors.T @ c1) * inv_sqrt[:, None]  # G = mu^{-1/2} F^T c1, (d_eff, d)
    gram = factor @ factor.T
    gram = 0.5 * (gram + gram.T)
    values, z = bk.eigh(gram)
    values, z = bk.reverse(values, 0), bk.reverse(z, 1)
    vectors = c0_range.vectors @ (z * inv_sqrt[:, None])
    return values, vectors


def _encoder_basis(bk, perception: _Perception | la.RangeEig, encoder, rtol: float):
    """Ordered orthonormal basis (p, k) of col(Sigma^{1/2} encoder) in the coordinates of E,
    with the (k,) mask of encoder columns that added a direction."""
    sigma = perception.sigma if isinstance(perception, _Perception) else perception
    w = sigma.values
    # Sigma^{1/2} V in the eigenbasis of Sigma; unit columns make the drop threshold scale-free
    image = bk.sqrt(w)[:, None] * (sigma.vectors.T @ la.unit_columns(bk, encoder))
    tol = rtol * float(w[0]) ** 0.5
    return la.nested_orthonormal_columns(bk, image, tol)


def _check_moments(sxx, sxy, c0, c1, rtol, bk=None):
    rtol = la.resolve_rtol(rtol, sxx, sxy, c0, c1)
    sxx_ = la.check_covariance(sxx, "sxx", bk)
    d = sxx_.shape[0]
    sxy_ = la.check_labels(sxy, d, bk=bk)
    c0_ = la.check_covariance(c0, "c0", bk)
    la.check_same_dim(d, c0_.shape[0])
    c1_ = la.check_cross_moment(c1, d, bk=bk)
    return sxx_, sxy_, c0_, c1_, rtol


def _check_perception(sxx, sxy, rtol, *extra):
    rtol = la.resolve_rtol(rtol, sxx, sxy, *extra)
    sxx_ = la.check_covariance(sxx, "sxx")
    sxy_ = la.check_labels(sxy, sxx_.shape[0])
    return sxx_, sxy_, rtol


def _k_u(k_u, rank: int) -> int:
    if k_u is None:
        return rank
    return la.check_k(k_u, rank, "k_u", "rank of the whitened targets M = Sigma^{-1/2} sxy")


def _k_v(k_v, d_eff: int) -> int:
    return la.check_k(k_v, d_eff, "k_v", "number of usable autoregressive directions, the rank of c0")


class _Contributions(NamedTuple):
    overlaps: np.ndarray  # (k, r) (b_j^T q_i)^2 for the ordered basis b_j of Sigma^{1/2} V_k
    weights: np.ndarray  # (k,) ||b_j^T M||^2
    total: float  # ||M||_F^2
    singular_values: np.ndarray  # (r,) of M
    d_eff: int  # rank of c0
    sigma_rank: int  # p, rank of Sigma


def _grid_contributions(sxx, sxy, c0, c1, rtol, backend="numpy", device=None, k_v=None) -> _Contributions:
    """Check the moments, then one decomposition per subspace; every grid value is a cumulative
    sum of the returned contributions."""
    bk = la.get_backend(backend, device)
    sxx_, sxy_, c0_, c1_, rtol = _check_moments(sxx, sxy, c0, c1, rtol, bk)
    if k_v is not None:
        _k_v(k_v, sxx_.shape[0])  # fail fast on a hopeless k_v; the exact bound is d_eff
    perception = _perception_core(bk, sxx_, sxy_, rtol)
    _, v_full = _autoregressive_core(bk, c0_, c1_, rtol)
    d_eff = v_full.shape[1]
    if k_v is not None:
        v_full = v_full[:, : _k_v(k_v, d_eff)]
    basis, _ = _encoder_basis(bk, perception, v_full, rtol)
    overlaps = bk.to_numpy((basis.T @ perception.left) ** 2)
    weights = bk.to_numpy(((basis.T @ perception.targets) ** 2).sum(1))
    total = float(bk.to_numpy((perception.targets**2).sum()))
    return _Contributions(overlaps, weights, total, perception.singular_values, d_eff,
                          int(perception.sigma.values.shape[0]))


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def whitened_targets(sxx, sxy, *, rtol: float | None = None) -> WhitenedTargets:
    """The whitened targets ``M = Sigma^{-1/2} sxy`` and its SVD.

    Parameters
    ----------
    sxx : array_like, shape (d, d)
        The perception second moment Sigma.
    sxy : array_like, shape (d, C)
        The feature-label cross moment.
    rtol : float, optional
        Relative tolerance of the range of Sigma and of the rank of M (see ``ntps._linalg``).

    Returns
    -------
    WhitenedTargets
        ``matrix`` (d, C), ``left`` (d, r), ``singular_values`` (r,) and ``rank`` r.
        ``Sigma^{-1/2}`` is the pseudo-inverse square root on the eigen-directions with
        ``w > rtol * w_max``.
    """
    sxx_, sxy_, rtol = _check_perception(sxx, sxy, rtol)
    bk = la.NumpyBackend()
    perception = _perception_core(bk, sxx_, sxy_, rtol)
    e = perception.sigma.vectors
    return WhitenedTargets(e @ perception.targets, e @ perception.left, perception.singular_values, perception.rank)


def perception_subspace(sxx, sxy, k: int | None = None, *, rtol: float | None = None) -> GeneralizedEig:
    """Perception encoder: top-k generalised eigenvectors of (sxy sxy^T, sxx), descending.

    ``U = Sigma^{-1/2} Q`` with Q the top-k left singular vectors of M = Sigma^{-1/2} sxy; the
    eigenvalues are the squared singular values ``s_j^2``, and ``U^T Sigma U = I``.
    Only the r = rank(M) <= C nonzero eigenvalues are defined (the rest are a degenerate zero
    eigenspace), so ``k`` ranges over [1, r] and defaults to r.

    Returns GeneralizedEig(values (k,), vectors (d, k)).
    """
    sxx_, sxy_, rtol = _check_perception(sxx, sxy, rtol)
    bk = la.NumpyBackend()
    perception = _perception_core(bk, sxx_, sxy_, rtol)
    k = _k_u(k, perception.rank)
    w, e = perception.sigma
    vectors = e @ (perception.left[:, :k] / np.sqrt(w)[:, None])
    return GeneralizedEig(perception.singular_values[:k] ** 2, vectors)


def autoregressive_subspace(c0, c1, k: int | None = None, *, rtol: float | None = None) -> GeneralizedEig:
    """Autoregressive encoder: top-k generalised eigenvectors of (c1 c1^T, c0), descending.

    Solved on the range of c0 (eigenvalues ``mu > rtol * mu_max``): the eigenvectors z of
    ``c0^{-1/2} c1 c1^T c0^{-1/2}`` mapped back, ``V = c0^{-1/2} z`` (so ``V^T c0 V = I``).
    ``k`` ranges over [1, d_eff], d_eff = rank of c0, and defaults to d_eff. Directions whose
    generalised eigenvalue is below about ``eps * max`` are not resolved (their order is noise).

    Returns GeneralizedEig(values (k,), vectors (d, k)).
    """
    rtol = la.resolve_rtol(rtol, c0, c1)
    c0_ = la.check_covariance(c0, "c0")
    c1_ = la.check_cross_moment(c1, c0_.shape[0])
    values, vectors = _autoregressive_core(la.NumpyBackend(), c0_, c1_, rtol)
    k = values.shape[0] if k is None else _k_v(k, values.shape[0])
    return GeneralizedEig(np.clip(values[:k], 0.0, None), vectors[:, :k])


def projector_basis(sxx, V, *, rtol: float | None = None) -> ProjectorBasis:
    """Ordered orthonormal basis of ``col(Sigma^{1/2} V)``, the space ``Pi_V`` projects on.

    ``V`` (d, k) is any encoder. Column j of V adds a basis vector iff its image
    ``Sigma^{1/2} v_j / ||v_j||`` is not in the span of the previous images up to
    ``rtol * sqrt(lam_max(Sigma))``; so ``span(basis[:, :m_k]) = col(Sigma^{1/2} V[:, :k])`` for
    every k, with ``m_k = kept[:k].sum()``. ``Pi_V = basis @ basis.T``.

    Returns ProjectorBasis(basis (d, m), kept (k,) bool).
    """
    rtol = la.resolve_rtol(rtol, sxx, V)
    sxx_ = la.check_covariance(sxx, "sxx")
    v_ = la.check_encoder(V, sxx_.shape[0])
    bk = la.NumpyBackend()
    sigma = la.range_eigh(bk, sxx_, rtol, "sxx")
    basis, kept = _encoder_basis(bk, sigma, v_, rtol)
    return ProjectorBasis(sigma.vectors @ basis[:, kept], kept)


# --------------------------------------------------------------------------------------------
# Theorem-consistent scores
# --------------------------------------------------------------------------------------------


def ntps_of_encoder(sxx, sxy, V, k_u: int | None = None, *, rtol: float | None = None) -> float:
    """NTPS of an arbitrary encoder V: ``||Pi_V Q||_F^2 / k_u``.

    Parameters
    ----------
    sxx : array_like, shape (d, d)
        Sigma.
    sxy : array_like, shape (d, C)
    V : array_like, shape (d, k)
        The encoder (any k >= 1, any scaling).
    k_u : int, optional
        Number of singular directions of M in Q, in [1, r]; defaults to r = rank(M).
    rtol : float, optional
        Relative tolerance (``ntps._linalg``).

    Notes
    -----
    ``Pi_V`` projects onto ``col(Sigma^{1/2} V)``; Q holds the top-k_u left singular vectors of
    ``M = Sigma^{-1/2} sxy``. The value lies in [0, 1].
    """
    sxx_, sxy_, rtol = _check_perception(sxx, sxy, rtol, V)
    v_ = la.check_encoder(V, sxx_.shape[0])
    bk = la.NumpyBackend()
    perception = _perception_core(bk, sxx_, sxy_, rtol)
    k_u = _k_u(k_u, perception.rank)
    basis, _ = _encoder_basis(bk, perception, v_, rtol)
    return float(((basis.T @ perception.left[:, :k_u]) ** 2).sum() / k_u)


def ntps_spectral_of_encoder(sxx, sxy, V, *, rtol: float | None = None) -> float:
    """Spectrum-weighted NTPS of an encoder: ``NTPS_s = ||Pi_V M||_F^2 / ||M||_F^2``.

    It satisfies ``excess_loss(V) = ||M||_F^2 (1 - NTPS_s(V))`` exactly.
    """
    sxx_, sxy_, rtol = _check_perception(sxx, sxy, rtol, V)
    v_ = la.check_encoder(V, sxx_.shape[0])
    bk = la.NumpyBackend()
    perception = _perception_core(bk, sxx_, sxy_, rtol)
    basis, _ = _encoder_basis(bk, perception, v_, rtol)
    return float(((basis.T @ perception.targets) ** 2).sum() / (perception.targets**2).sum())


def ntps_score(sxx, sxy, c0, c1, k_v: int, k_u: int | None = None, *, rtol: float | None = None) -> float:
    """Theorem-consistent NTPS of one layer at autoregressive rank ``k_v``.

    ``NTPS = ||Pi_V Q||_F^2 / k_u`` with V = the top-k_v generalised eigenvectors of
    (c1 c1^T, c0), Pi_V the orthogonal projector onto ``col(Sigma^{1/2} V)``, and Q the top-k_u
    left singular vectors of ``M = Sigma^{-1/2} sxy`` (Sigma = sxx).

    Parameters
    ----------
    sxx, sxy, c0, c1 : array_like
        The layer's moments, shapes (d, d), (d, C), (d, d), (d, d) (module docstring).
    k_v : int
        In [1, d_eff], d_eff = rank of c0.
    k_u : int, optional
        In [1, r], r = rank(M) <= C; defaults to r (the theorem's choice).
    rtol : float, optional
        Relative tolerance (``ntps._linalg``).

    Notes
    -----
    Same code path as :func:`ntps_grid`, restricted to the first k_v columns of V, so
    ``ntps_score(..., k_v=k)`` equals ``ntps_grid(...)[k - 1]`` up to round-off.
    """
    parts = _grid_contributions(sxx, sxy, c0, c1, rtol, k_v=k_v)
    k_u = _k_u(k_u, parts.overlaps.shape[1])
    return float(parts.overlaps[:, :k_u].sum() / k_u)


def ntps_grid(
    sxx, sxy, c0, c1, k_u: int | None = None, *, rtol: float | None = None, backend: str = "numpy", device=None
) -> np.ndarray:
    """NTPS at every autoregressive rank, from one decomposition per subspace.

    Returns ``g`` of shape (d_eff,) with ``g[k - 1] == ntps_score(sxx, sxy, c0, c1, k_v=k, k_u=k_u)``,
    d_eff = rank of c0. With ``b_1, b_2, ...`` the ordered orthonormal basis of the leading
    columns of ``Sigma^{1/2} V`` (QR without pivoting; a column adding nothing gives b_j = 0) and
    ``Q = [q_1, ..., q_{k_u}]`` the top left singular vectors of ``M = Sigma^{-1/2} sxy``::

        g[k - 1] = (1/k_u) sum_{j <= k} ||b_j^T Q||^2

    ``backend="torch"`` runs the same algorithm in float64 with torch on ``device`` (e.g.
    ``"cuda"``); torch inputs are checked on their device; the result is a NumPy array.

    Cost: three symmetric eigendecompositions (sxx, c0, the whitened c1 c1^T), one QR and a few
    products, all O(d^3), for the whole grid. If c1 is rank-deficient, the generalised
    eigenvalues beyond its rank are a degenerate zero eigenspace: the order of those V
    directions, and so the grid between k_v = rank(c1) and d_eff, is arbitrary (the
    released-code problem, on the V side); real layers have full-rank c1.
    """
    parts = _grid_contributions(sxx, sxy, c0, c1, rtol, backend, device)
    k_u = _k_u(k_u, parts.overlaps.shape[1])
    return np.cumsum(parts.overlaps[:, :k_u].sum(1)) / k_u


def ntps_full_grid(
    sxx, sxy, c0, c1, *, rtol: float | None = None, backend: str = "numpy", device=None
) -> np.ndarray:
    """NTPS on the whole (k_v, k_u) grid: array (d_eff, r) with
    ``G[k_v - 1, k_u - 1] == ntps_score(..., k_v=k_v, k_u=k_u)``, from the same single decomposition
    (cumulative sums over both the ordered V basis and the singular directions of M)."""
    overlaps = _grid_contributions(sxx, sxy, c0, c1, rtol, backend, device).overlaps
    rank = overlaps.shape[1]
    return np.cumsum(np.cumsum(overlaps, axis=0), axis=1) / np.arange(1, rank + 1)[None, :]


def ntps_spectral(sxx, sxy, c0, c1, k_v: int, *, rtol: float | None = None) -> float:
    """Spectrum-weighted NTPS of one layer: ``||Pi_V M||_F^2 / ||M||_F^2`` with V the top-k_v
    generalised eigenvectors of (c1 c1^T, c0) and ``M = Sigma^{-1/2} sxy``; k_v in [1, d_eff]."""
    parts = _grid_contributions(sxx, sxy, c0, c1, rtol, k_v=k_v)
    return float(parts.weights.sum() / parts.total)


def ntps_spectral_grid(
    sxx, sxy, c0, c1, *, rtol: float | None = None, backend: str = "numpy", device=None
) -> np.ndarray:
    """``ntps_spectral`` at every k_v in [1, d_eff]: ``cumsum_j ||b_j^T M||^2 / ||M||_F^2``, with b_j the
    ordered basis of ``Sigma^{1/2} V`` (see ``ntps_grid``)."""
    parts = _grid_contributions(sxx, sxy, c0, c1, rtol, backend, device)
    return np.cumsum(parts.weights) / parts.total


class LayerGrids(NamedTuple):
    """The theorem-consistent and the spectral NTPS of one layer at every k_v = 1..d_eff, and the
    rank p of Sigma (at k_v >= p both scores are 1 whatever the features: see :func:`ntps_null`)."""

    theorem: np.ndarray  # (d_eff,) theorem[k - 1] == ntps_score(..., k_v=k)
    spectral: np.ndarray  # (d_eff,) spectral[k - 1] == ntps_spectral(..., k_v=k)
    sigma_rank: int  # p, the numerical rank of Sigma


def ntps_grids(sxx, sxy, c0, c1, *, rtol: float | None = None, backend: str = "numpy", device=None) -> LayerGrids:
    """:func:`ntps_grid` (k_u = r) and :func:`ntps_spectral_grid` of one layer, from ONE
    decomposition: the two share every eigendecomposition and the ordered basis of
    ``col(Sigma^{1/2} V)``, and differ only in what is summed (the top-r left singular vectors Q
    of M, or M itself)."""
    parts = _grid_contributions(sxx, sxy, c0, c1, rtol, backend, device)
    rank = parts.overlaps.shape[1]
    return LayerGrids(np.cumsum(parts.overlaps.sum(1)) / rank, np.cumsum(parts.weights) / parts.total,
                      parts.sigma_rank)


def ntps_null(k, p):
    """The NTPS a uniformly random encoder gets: ``min(k, p) / p``.

    For a k-dimensional subspace drawn uniformly (Haar) from the p-dimensional range of the
    whitened features (p = rank of Sigma), the projector's expectation is ``(k / p) I_p``, so the
    expected theorem-consistent NTPS, ``E ||Pi Q||_F^2 / r``, and the spectral one both equal
    k / p, whatever Q and M are. It reaches 1 at k = p: with N texts p <= min(N, d), so with
    fewer texts than the width a large k reads near 1 by chance alone. Works elementwise.

    Examples
    --------
    >>> from ntps.score import ntps_null
    >>> ntps_null(288, 320)  # k = d/2 on SmolLM2 (d = 576) with 320 texts: 0.9 by chance alone
    0.9
    >>> ntps_null(58, 576)
    0.10069444444444445
    """
    k, p = np.asarray(k, dtype=float), np.asarray(p, dtype=float)
    if np.any(k < 1) or np.any(p < 1):
        raise ValueError(f"k and p must be at least 1, got k={k.tolist()}, p={p.tolist()}")
    value = np.minimum(k, p) / p
    return float(value) if value.ndim == 0 else value


def ntps_lift(ntps, null):
    """NTPS as a lift over its null, ``(ntps - null) / (1 - null)``: 0 for what a random encoder
    gets on average, 1 for a perfect score, like a chance-corrected accuracy (Cohen's kappa). NaN
    where the null is 1 (k >= p: every encoder scores 1 there). Works elementwise."""
    ntps, null = np.asarray(ntps, dtype=float), np.asarray(null, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(null < 1, (ntps - null) / (1 - null), np.nan)
    return float(value) if value.ndim == 0 else value


def random_encoder_ntps(sxx, sxy, k: int, *, draws: int = 32, kind: str = "uniform", seed: int = 0,
                        rtol: float | None = None) -> np.ndarray:
    """Theorem-consistent NTPS of ``draws`` random encoders of rank k on real moments.

    kind "uniform": a Haar-random k-dimensional subspace of the whitened range of Sigma (what
    :func:`ntps_null` averages: the mean over draws estimates k / p). kind "gaussian": a raw
    encoder V with independent N(0, 1) entries, as a random linear map of the features would be;
    ``Sigma^{1/2} V`` then leans towards the high-variance directions of the features, so its mean
    need not be k / p. Returns the (draws,) values.
    """
    if kind not in ("uniform", "gaussian"):
        raise ValueError(f"kind must be 'uniform' or 'gaussian', got {kind!r}")
    sxx_, sxy_, rtol = _check_perception(sxx, sxy, rtol)
    bk = la.NumpyBackend()
    perception = _perception_core(bk, sxx_, sxy_, rtol)
    p, d = perception.sigma.values.shape[0], sxx_.shape[0]
    k = la.check_k(k, p if kind == "uniform" else d, "k", "rank of Sigma" if kind == "uniform" else "width")
    rng = np.random.default_rng(seed)
    values = np.empty(int(draws))
    for draw in range(int(draws)):
        if kind == "uniform":
            basis, _ = np.linalg.qr(rng.standard_normal((p, k)))  # Haar on the Grassmannian
        else:
            basis, _ = _encoder_basis(bk, perception, rng.standard_normal((d, k)), rtol)
        values[draw] = ((basis.T @ perception.left) ** 2).sum() / perception.rank
    return values


def _iter_layer_moments(moments, sxy, c0, c1):
    """Yield (sxx, sxy, c0, c1) of each layer, without materialising a whole normalised stack
    when the moments object can hand out one layer at a time (``ntps.moments.Moments``)."""
    if sxy is not None or c0 is not None or c1 is not None:
        if sxy is None or c0 is None or c1 is None:
            raise ValueError("pass either a moments object alone, or all four of sxx, sxy, c0, c1")
        stacked = (moments, sxy, c0, c1)
    elif callable(getattr(moments, "layer", None)) and hasattr(moments, "layers"):
        for index in moments.layers:
            one = moments.layer(index)
            yield one["sxx"], one["sxy"], one["c0"], one["c1"]
        return
    else:
        stacked = []
        for name in ("sxx", "sxy", "c0", "c1"):
            if isinstance(moments, dict) and name in moments:
                stacked.append(moments[name])
            elif not isinstance(moments, dict) and hasattr(moments, name):
                stacked.append(getattr(moments, name))
            else:
                raise ValueError(
                    f"the moments object has no '{name}': pass an object or mapping with sxx, sxy, c0, c1"
                )
    counts = [len(a) for a in stacked]
    if len(set(counts)) != 1:
        raise ValueError(
            "the stacked moments disagree on the number of layers: sxx {}, sxy {}, c0 {}, c1 {}".format(*counts)
        )
    for layer in range(counts[0]):
        yield tuple(a[layer] for a in stacked)


def ntps_layers(
    moments,
    sxy=None,
    c0=None,
    c1=None,
    *,
    k_u: int | None = None,
    spectral: bool = False,
    rtol: float | None = None,
    backend: str = "numpy",
    device=None,
) -> np.ndarray:
    """The (layer, k_v) NTPS grid of a whole model.

    Call as ``ntps_layers(sxx, sxy, c0, c1)`` with stacked arrays sxx (L, d, d), sxy (L, d, C),
    c0 (L, d, d), c1 (L, d, d); or ``ntps_layers(moments)`` with an ``ntps.moments.Moments``
    (anything with ``layers`` and ``layer(index) -> {"sxx", "sxy", "c0", "c1"}``, read one layer
    at a time), or any object or mapping with those four stacked entries. Returns (L, max d_eff):
    row l is :func:`ntps_grid` of the l-th layer (:func:`ntps_spectral_grid` when ``spectral``),
    padded with NaN where a layer has fewer usable autoregressive directions.
    """
    rows = []
    for layer, args in enumerate(_iter_layer_moments(moments, sxy, c0, c1)):
        try:
            if spectral:
                rows.append(ntps_spectral_grid(*args, rtol=rtol, backend=backend, device=device))
            else:
                rows.append(ntps_grid(*args, k_u=k_u, rtol=rtol, backend=backend, device=device))
        except ValueError as err:
            raise ValueError(f"layer {layer}: {err}") from err
    return la.stack_or_nan(rows)


# --------------------------------------------------------------------------------------------
# The released code's score (for reproducing the paper)
# --------------------------------------------------------------------------------------------


def _reference_eig(a: np.ndarray, b: np.ndarray, dtype) -> np.ndarray:
    """Generalised eigenvectors of (a, b) as the released code finds them: whiten by the
    eigenpairs of b above the absolute REFERENCE_EIG_TOL, eigenvectors of the whitened a in
    ASCENDING order, mapped back (b-orthonormal columns). Everything in ``dtype``."""
    b_values, b_vectors = scipy.linalg.eigh(b)
    keep = b_values > REFERENCE_EIG_TOL
    # column scaling by 1/sqrt(b eigenvalue): the released code's U_r @ inv(sqrt(S_r))
    whiten = b_vectors[:, keep] * (np.ones((), dtype) / np.sqrt(b_values[keep]))
    _, y = scipy.linalg.eigh((whiten.T @ a) @ whiten)
    return whiten @ y


def _reference_subspaces(sxx, sxy, c0, c1, dtype):
    dtype = np.dtype(dtype)
    sxx_, sxy_, c0_, c1_, _ = _check_moments(sxx, sxy, c0, c1, None)
    sxx_, sxy_, c0_, c1_ = (a.astype(dtype) for a in (sxx_, sxy_, c0_, c1_))
    u = _reference_eig(sxy_ @ sxy_.T, sxx_, dtype)
    v = _reference_eig(c1_ @ c1_.T, c0_, dtype)
    return u, v


def _reference_score(u: np.ndarray, v: np.ndarray, fraction: float) -> float:
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1] (the released code sweeps 0.05..0.95), got {fraction}")
    k_u, k_v = int(fraction * u.shape[1]), int(fraction * v.shape[1])
    if k_u == 0 or k_v == 0:
        smallest = 1.0 / min(u.shape[1], v.shape[1])
        raise ValueError(
            f"fraction {fraction} takes no column (int(fraction * rank) = 0 with ranks "
            f"{u.shape[1]} of sxx and {v.shape[1]} of c0); use fraction >= {smallest:.3g}"
        )
    u_k, v_k = u[:, :k_u], v[:, :k_v]
    projector = v_k @ np.linalg.pinv(v_k)  # Euclidean projector onto col(V_k)
    return float(np.linalg.norm(projector @ u_k, "fro") ** 2 / np.linalg.norm(u_k, "fro") ** 2)


def ntps_reference(sxx, sxy, c0, c1, fraction: float, *, dtype=np.float32) -> float:
    """The score of the paper's released code (``K_sweep.py``, dense branch), for reproduction.

    Algorithm (github.com/Yu-AngCheng/NTPS, ``alignment_score`` with ``sparse_k=0``), all in
    ``dtype`` (float32 as released):

    1. for (A, B) = (sxy sxy^T, sxx) and (c1 c1^T, c0): eigendecompose B (scipy.linalg.eigh),
       keep its eigenpairs with eigenvalue > 1e-8 (an ABSOLUTE cut: "rank" below means the
       number kept, i.e. the numerical rank of B = sxx or c0, not the rank of A), whiten A with
       them, and take the eigenvectors of the whitened A in ASCENDING order mapped back:
       B-orthonormal (not orthonormal) columns U (d, rank_sxx) and V (d, rank_c0);
    2. ``k_u = int(fraction * rank_sxx)``, ``k_v = int(fraction * rank_c0)`` leading columns;
    3. ``P = V_k pinv(V_k)``, the Euclidean projector onto col(V_k);
    4. score = ``||P U_k||_F^2 / ||U_k||_F^2``.

    Why it is ill posed: sxy sxy^T has rank <= C, so for d > C its zero eigenvalue is
    (d - C)-fold degenerate, and ascending order puts that eigenspace first. For every fraction
    with ``int(fraction * d) < d - C`` the U_k columns are an arbitrary basis of part of that
    null space, chosen by floating-point noise: a perturbation at round-off level of sxy (or a
    different LAPACK build) changes the score by O(1). The ascending order also takes the LEAST
    autoregressive V directions, and the B-orthonormal scaling weights the U columns by the
    inverse of the feature variance; neither matches the theorem (see :func:`ntps_score`). The
    absolute 1e-8 cut makes the result depend on the scale of the features. Only for C >= d
    (sxy sxy^T full rank) is it well defined.

    ``dtype=np.float64`` runs the same algorithm in double precision (for studying it).
    """
    u, v = _reference_subspaces(sxx, sxy, c0, c1, dtype)
    return _reference_score(u, v, fraction)


def ntps_reference_sweep(
    sxx, sxy, c0, c1, fractions: Sequence[float] = REFERENCE_FRACTIONS, *, dtype=np.float32
) -> np.ndarray:
    """:func:`ntps_reference` at every fraction (default the released sweep 0.05, 0.10, ..., 0.95),
    decomposing once; returns an array of len(fractions). A fraction that takes no column
    (``int(fraction * rank) == 0``, small d) gives NaN, as 0/0 does in the released code."""
    u, v = _reference_subspaces(sxx, sxy, c0, c1, dtype)
    n_min = min(u.shape[1], v.shape[1])

    def score_or_nan(fraction: float) -> float:
        if 0.0 < fraction <= 1.0 and int(fraction * n_min) == 0:
            return np.nan
        return _reference_score(u, v, fraction)

    return np.array([score_or_nan(float(f)) for f in fractions])


def score_layers(moments, k=None, *, spectral: bool = True, rtol: float | None = None, backend: str = "numpy",
                 device=None):
    """NTPS of every layer at every k, as a tidy table: the one-call answer for a model and task.

    Parameters
    ----------
    moments : Moments
        What :func:`ntps.extract_moments` returns (or :meth:`ntps.Moments.load` reads back).
    k : int, sequence of int or None
        The dimension k of the autoregressive subspace, **always an absolute number of
        dimensions** (1 <= k <= d_eff, the rank of c0 at that layer); a fraction of the width is
        ``k_fraction = k / d`` and appears only as a column. None: every k from 1 to d_eff.
    spectral : bool
        Also give the spectrum-weighted score (column ``ntps_spectral``).
    rtol, backend, device
        As in :func:`ntps_grid`.

    Returns
    -------
    pandas.DataFrame
        Columns layer, k, k_fraction (k / d), ntps (theorem-consistent, k_u = rank of M), p (the
        rank of Sigma), null (``ntps_null(k, p)``, what a random encoder scores on average), lift
        (``ntps_lift``: 0 at the null, 1 at a perfect score; NaN at k >= p, where every encoder
        scores 1) and ntps_spectral; one row per (layer, k). Where an asked-for k exceeds a layer's d_eff (too
        few token pairs for c0 to have rank k), the row is there with NaN.

    Examples
    --------
    >>> import numpy as np, ntps
    >>> from ntps.moments import Moments
    >>> rng = np.random.default_rng(0)
    >>> x, y, s = rng.standard_normal((40, 6)), np.eye(2)[rng.integers(0, 2, 40)], rng.standard_normal((90, 6))
    >>> stats = Moments(sum_xx=[x.T @ x], sum_xy=[x.T @ y], sum_ss=[s.T @ s], sum_sh=[s[:-1].T @ s[1:]],
    ...                 layers=[0], n_texts=40, n_pairs=89)
    >>> table = ntps.score_layers(stats, k=[1, 6])
    >>> list(table.columns)
    ['layer', 'k', 'k_fraction', 'ntps', 'p', 'null', 'lift', 'ntps_spectral']
    >>> round(float(table.ntps.iloc[-1]), 12)  # k = d: the whole space, every task scores 1
    1.0
    """
    import pandas as pd

    wanted = None
    if k is not None:
        values = np.atleast_1d(np.asarray(k))
        if values.ndim != 1 or values.size == 0 or not np.issubdtype(values.dtype, np.integer) or values.min() < 1:
            raise ValueError(f"k must be a positive integer or a list of them (an absolute dimension, not a "
                             f"fraction of the width), got {k!r}")
        wanted = sorted({int(v) for v in values})
    rows = []
    for layer in moments.layers:
        one = moments.layer(layer)
        width = one["sxx"].shape[0]
        try:
            grids = ntps_grids(**one, rtol=rtol, backend=backend, device=device)
        except ValueError as error:
            raise ValueError(f"layer {layer}: {error}") from error
        d_eff = grids.theorem.size
        for kv in (range(1, d_eff + 1) if wanted is None else wanted):
            inside = kv <= d_eff  # beyond d_eff there are no more autoregressive directions to add
            null = ntps_null(kv, grids.sigma_rank)
            row = {"layer": int(layer), "k": int(kv), "k_fraction": kv / width,
                   "ntps": float(grids.theorem[kv - 1]) if inside else np.nan, "p": grids.sigma_rank, "null": null,
                   "lift": ntps_lift(grids.theorem[kv - 1], null) if inside else np.nan}
            if spectral:
                row["ntps_spectral"] = float(grids.spectral[kv - 1]) if inside else np.nan
            rows.append(row)
    columns = ["layer", "k", "k_fraction", "ntps", "p", "null", "lift"] + (["ntps_spectral"] if spectral else [])
    return pd.DataFrame(rows, columns=columns)
