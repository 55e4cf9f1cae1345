"""Excess loss of an encoder and the NTPS bounds on it (theory chapter, section 5).

For an encoder E (d, k), the best linear head on ``E^T x`` (no intercept; uncentred moments)
has mean squared error, summed over the C outputs and averaged over texts,

    L(E) = tr(Syy) - ||Pi_E M||_F^2,      M = Sigma^{-1/2} sxy,
    Pi_E = orthogonal projector onto col(Sigma^{1/2} E),

where ``tr(Syy) = (1/N) sum_i ||y_i||^2`` (1 for one-hot labels). This is exact for population
moments and for the in-sample least-squares fit on finite data alike. The best unrestricted
linear head has ``L(I) = tr(Syy) - ||M||_F^2``, so the excess of E is

    Delta(E) = ||(I - Pi_E) M||_F^2 = ||M||_F^2 (1 - NTPS_s(E)).

With s_1 >= ... >= s_r > 0 the singular values of M and NTPS computed with k_u = r,

    s_r^2 r (1 - NTPS(E))  <=  Delta(E)  <=  s_1^2 r (1 - NTPS(E)),

because ``Delta = sum_j s_j^2 ||(I - Pi_E) q_j||^2`` and ``r (1 - NTPS) = sum_j ||(I - Pi_E) q_j||^2``,
with q_j the left singular vectors of M (the letters of the theory chapter's table of symbols).
Both sides are attained when all s_j are equal. The optimal rank-k encoder is the perception
encoder U_k, with ``Delta(U_k) = sum_{j > k} s_j^2`` (Eckart-Young).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ntps import _linalg as la
from ntps import score as _score

__all__ = [
    "excess_loss",
    "excess_loss_bounds",
    "encoder_loss",
    "best_linear_loss",
    "rank_k_loss",
    "optimal_excess_loss",
    "BoundsGrid",
    "bounds_grid",
]


def _prepare(sxx, sxy, V, rtol):
    sxx_, sxy_, rtol = _score._check_perception(sxx, sxy, rtol, V)
    v_ = la.check_encoder(V, sxx_.shape[0])
    bk = la.NumpyBackend()
    perception = _score._perception_core(bk, sxx_, sxy_, rtol)
    basis, _ = _score._encoder_basis(bk, perception, v_, rtol)
    return perception, basis


def _residual_norm2(perception, basis) -> float:
    targets = perception.targets
    residual = targets - basis @ (basis.T @ targets)
    return float((residual**2).sum())


def excess_loss(sxx, sxy, V, *, rtol: float | None = None) -> float:
    """Excess MSE of the best linear head on ``V^T x`` over the best linear head on x.

    ``Delta(V) = ||(I - Pi_V) M||_F^2`` with ``M = Sigma^{-1/2} sxy`` and Pi_V the orthogonal
    projector onto ``col(Sigma^{1/2} V)``.

    Parameters
    ----------
    sxx : array_like, shape (d, d)
        Sigma = (1/N) sum x x^T.
    sxy : array_like, shape (d, C)
        (1/N) sum x y^T.
    V : array_like, shape (d, k)
        Any encoder matrix (a 1-D array is one column).
    rtol : float, optional
        Relative tolerance of the ranges and ranks (``ntps._linalg``).

    Notes
    -----
    On finite data with these moments it equals the difference of the in-sample least-squares
    mean squared errors (summed over outputs) of ``lstsq(X V, Y)`` and ``lstsq(X, Y)``.
    """
    perception, basis = _prepare(sxx, sxy, V, rtol)
    return _residual_norm2(perception, basis)


def excess_loss_bounds(sxx, sxy, V, *, rtol: float | None = None) -> tuple[float, float]:
    """The theorem's bounds on :func:`excess_loss`: ``(s_r^2 r (1 - NTPS), s_1^2 r (1 - NTPS))``.

    s_1 >= ... >= s_r > 0 are the singular values of ``M = Sigma^{-1/2} sxy``, r its rank, and
    ``NTPS = ntps_of_encoder(sxx, sxy, V, k_u=r)``. Returns (lower, upper).
    """
    perception, basis = _prepare(sxx, sxy, V, rtol)
    r = perception.rank
    captured = float(((basis.T @ perception.left) ** 2).sum())  # = r * NTPS
    missing = max(r - captured, 0.0)  # r (1 - NTPS), clipped at round-off
    s = perception.singular_values
    return float(s[-1] ** 2 * missing), float(s[0] ** 2 * missing)


def encoder_loss(sxx, sxy, V, *, y_second_moment: float = 1.0, rtol: float | None = None) -> float:
    """Mean squared error of the best linear head (no intercept) on ``V^T x``:
    ``tr(Syy) - ||Pi_V M||_F^2``; ``y_second_moment = tr(Syy) = (1/N) sum ||y_i||^2`` (1 for
    one-hot labels)."""
    perception, basis = _prepare(sxx, sxy, V, rtol)
    captured = float(((basis.T @ perception.targets) ** 2).sum())
    return float(y_second_moment) - captured


def best_linear_loss(sxx, sxy, *, y_second_moment: float = 1.0, rtol: float | None = None) -> float:
    """Mean squared error of the best unrestricted linear head: ``tr(Syy) - ||M||_F^2``."""
    targets = _score.whitened_targets(sxx, sxy, rtol=rtol)
    return float(y_second_moment) - float((targets.singular_values**2).sum())


def optimal_excess_loss(sxx, sxy, k: int, *, rtol: float | None = None) -> float:
    """Smallest excess loss of any rank-k encoder: ``sum_{j > k} s_j^2`` (attained by the
    perception encoder U_k); k in [1, d]."""
    targets = _score.whitened_targets(sxx, sxy, rtol=rtol)
    k = la.check_k(k, targets.matrix.shape[0], "k", "encoder rank, at most d")
    return float((targets.singular_values[k:] ** 2).sum())


def rank_k_loss(sxx, sxy, k: int, *, y_second_moment: float = 1.0, rtol: float | None = None) -> float:
    """Smallest mean squared error of a rank-k linear probe ``W E^T x`` (E (d, k), W (C, k)):
    ``tr(Syy) - sum_{j <= k} s_j^2``, attained by E = U_k, the perception encoder."""
    targets = _score.whitened_targets(sxx, sxy, rtol=rtol)
    k = la.check_k(k, targets.matrix.shape[0], "k", "encoder rank, at most d")
    return float(y_second_moment) - float((targets.singular_values[:k] ** 2).sum())


class BoundsGrid(NamedTuple):
    """Excess loss, its bounds and NTPS of V_k for every k_v in [1, d_eff]."""

    excess: np.ndarray  # (d_eff,) Delta(V_k)
    lower: np.ndarray  # (d_eff,) s_r^2 r (1 - NTPS)
    upper: np.ndarray  # (d_eff,) s_1^2 r (1 - NTPS)
    ntps: np.ndarray  # (d_eff,) NTPS with k_u = r
    singular_values: np.ndarray  # (r,) singular values of M


def bounds_grid(sxx, sxy, c0, c1, *, rtol: float | None = None, backend: str = "numpy", device=None) -> BoundsGrid:
    """:func:`excess_loss` and :func:`excess_loss_bounds` of the autoregressive encoder V_k at
    every k_v, from one decomposition (the cumulative sums of :func:`ntps.score.ntps_grid`)."""
    parts = _score._grid_contributions(sxx, sxy, c0, c1, rtol, backend, device)
    rank = parts.overlaps.shape[1]
    captured = np.cumsum(parts.overlaps.sum(1))  # r * NTPS(k)
    missing = np.clip(rank - captured, 0.0, None)
    excess = np.clip(parts.total - np.cumsum(parts.weights), 0.0, None)
    s = parts.singular_values
    return BoundsGrid(excess, s[-1] ** 2 * missing, s[0] ** 2 * missing, captured / rank, s)
