"""Peer metrics against their definitions: LogME against a direct numerical maximisation of the
dense-matrix evidence (N > D and N < D), H-score and RankMe against analytic cases."""

from typing import NamedTuple

import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from ntps import peers


# --------------------------------------------------------------------------------------------
# LogME
# --------------------------------------------------------------------------------------------
# The dense oracles below solve D x D (or N x N) systems in float64. Where such a system is
# nearly singular (beta / alpha ~ e^65 at the corner of the search grid) the result is round-off
# that depends on the BLAS kernels (a LinAlgError on one machine, a value above the true maximum
# on another), so an oracle evaluates a point only where its matrix has a condition number of at
# most MAX_CONDITION: round-off then stays below ~1e-16 * 1e10 = 1e-6 relative in the solve, and
# far less in the evidence, below the tolerances the tests ask for.
MAX_CONDITION = 1e10


def _conditioned(matrix):
    return np.linalg.cond(matrix) <= MAX_CONDITION  # from the SVD: never raises, inf if singular


def dense_evidence(f, t, log_alpha, log_beta):
    """log p(t | F, alpha, beta) computed directly with D x D matrices (the D-space formula), or
    None where A = alpha I + beta F^T F is too ill-conditioned to solve in float64."""
    n, d = f.shape
    alpha, beta = np.exp(log_alpha), np.exp(log_beta)
    a = alpha * np.eye(d) + beta * f.T @ f
    if not _conditioned(a):
        return None
    m = beta * np.linalg.solve(a, f.T @ t)
    _, logdet = np.linalg.slogdet(a)
    return (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
            - beta / 2 * np.sum((t - f @ m) ** 2) - alpha / 2 * m @ m - logdet / 2)


def marginal_evidence(f, t, log_alpha, log_beta):
    """The same evidence as an N-dimensional Gaussian density: t ~ N(0, I/beta + F F^T/alpha), or
    None where that covariance is too ill-conditioned to factor in float64."""
    n = f.shape[0]
    cov = np.eye(n) * np.exp(-log_beta) + f @ f.T * np.exp(-log_alpha)
    if not _conditioned(cov):
        return None
    return scipy.stats.multivariate_normal(np.zeros(n), cov, allow_singular=False).logpdf(t)


def oracle_evidence(f, t, log_alpha, log_beta):
    """The evidence from whichever dense formula is well conditioned at (alpha, beta): the D-space
    one, else the N-space one (well conditioned as beta -> infinity when F has full row rank), else
    None: the point cannot be evaluated independently in float64."""
    value = dense_evidence(f, t, log_alpha, log_beta)
    return value if value is not None else marginal_evidence(f, t, log_alpha, log_beta)


class DirectMaximum(NamedTuple):
    value: float  # the largest evidence found at an evaluable point
    skipped: int  # grid points where neither dense formula is well conditioned (left out)
    grid_points: int


def direct_maximum(f, t):
    """max over (log alpha, log beta) in [-25, 40]^2 of the dense evidence: a coarse grid, then
    L-BFGS-B from the best grid points and Nelder-Mead to polish.

    Points where neither dense formula is well conditioned are left out (counted in ``skipped``,
    which the tests bound), and the maximum is the largest value actually evaluated, so a point
    the oracle cannot evaluate never enters the answer.
    """
    best = [-np.inf]

    def objective(p):
        value = oracle_evidence(f, t, *np.clip(p, -25, 40))
        if value is None:
            return 1e300  # outside the evaluable region: the searches turn back
        best[0] = max(best[0], value)
        return -value

    grid = np.linspace(-25, 40, 27)
    values = np.array([[-objective((a, b)) for b in grid] for a in grid])
    for flat in np.argsort(values, axis=None)[::-1][:3]:
        start = (grid[flat // grid.size], grid[flat % grid.size])
        first = scipy.optimize.minimize(objective, start, method="L-BFGS-B", bounds=[(-25, 40), (-25, 40)])
        scipy.optimize.minimize(objective, first.x, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12})
    return DirectMaximum(best[0], int(np.sum(values <= -1e300)), values.size)


def problem(n, d, rank=None, noise=0.5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    rank = min(n, d) if rank is None else rank
    f = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d)) / np.sqrt(rank)
    w = rng.standard_normal((d, classes))
    y = np.argmax(f @ w + noise * rng.standard_normal((n, classes)) * np.std(f @ w), axis=1)
    return f, y


@pytest.mark.parametrize("n, d, rank", [(60, 8, None), (15, 40, 6), (40, 40, 12)], ids=["N>D", "N<D", "N=D-lowrank"])
def test_logme_equals_the_direct_maximum_of_the_dense_evidence(n, d, rank):
    f, y = problem(n, d, rank)
    details = peers.logme(f, y, return_details=True)
    for c in range(3):
        t = (y == c).astype(float)
        top = direct_maximum(f, t)
        # N < D: beta / alpha beyond ~1e10 is unevaluable in float64 by either dense formula; the
        # maximum lies well inside the rest of the grid
        assert top.skipped < top.grid_points / 2
        assert details.evidence[c] == pytest.approx(top.value, rel=1e-7, abs=1e-7)
        # the reported (alpha, beta) give that value in both independent formulas
        la, lb = np.log(details.alpha[c]), np.log(details.beta[c])
        assert dense_evidence(f, t, la, lb) == pytest.approx(details.evidence[c], rel=1e-9, abs=1e-9)
        assert marginal_evidence(f, t, la, lb) == pytest.approx(details.evidence[c], rel=1e-9, abs=1e-9)
    if (n, d) == (60, 8):
        assert details.fixed_point.all()  # the paper's fixed point does the work when N > D
    assert details.score == pytest.approx(np.mean(details.evidence) / n, rel=1e-12)


def test_logme_n_below_d_includes_the_term_the_reference_code_drops():
    # N < D: the thin SVD has N singular values, A = alpha I + beta F^T F has D eigenvalues.
    f, y = problem(15, 40, 6, seed=1)
    details = peers.logme(f, y, return_details=True)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s**2  # 15 values, 9 of them round-off zeros: the reference code's "k"
    for c in range(3):
        t = (y == c).astype(float)
        alpha, beta = details.alpha[c], details.beta[c]
        proj = u.T @ t
        lam = alpha / beta
        m2 = np.sum(sigma * proj**2 / (lam + sigma) ** 2)
        res2 = np.sum((lam * proj / (lam + sigma)) ** 2) + t @ t - proj @ proj
        reference = (40 / 2 * np.log(alpha) + 15 / 2 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * sigma))
                     - beta / 2 * res2 - alpha / 2 * m2 - 15 / 2 * np.log(2 * np.pi))
        missing = (40 - 15) / 2 * np.log(alpha)
        assert reference - missing == pytest.approx(details.evidence[c], rel=1e-8)
        assert abs(missing) > 1.0  # the bug is not negligible here
        assert reference != pytest.approx(dense_evidence(f, t, np.log(alpha), np.log(beta)), rel=1e-3)


def test_logme_when_the_maximum_is_noise_free():
    # N < D and features that carry the labels exactly: the evidence grows as beta -> infinity, so
    # the fixed point runs away; the supremum is still found (by the direct search fallback).
    rng = np.random.default_rng(2)
    y = np.arange(8) % 2
    f = np.c_[np.eye(2)[y] * 5, 0.01 * rng.standard_normal((8, 20))]
    details = peers.logme(f, y, return_details=True)
    assert not details.fixed_point.any()
    n, gram = f.shape[0], f @ f.T  # F has full row rank: F F^T is well conditioned (~1.5e5)
    for c in range(2):
        t = (y == c).astype(float)
        # The supremum in closed form: as beta -> infinity, t ~ N(0, F F^T / alpha), whose log
        # density is maximised by alpha = N / (t^T (F F^T)^{-1} t).
        quad = t @ np.linalg.solve(gram, t)
        supremum = (-n / 2 * np.log(2 * np.pi) + n / 2 * np.log(n / quad) - np.linalg.slogdet(gram)[1] / 2 - n / 2)
        assert details.evidence[c] == pytest.approx(supremum, rel=1e-9)
        top = direct_maximum(f, t)
        assert top.skipped == 0  # where the D x D form is singular, the N x N form is not
        assert details.evidence[c] >= top.value - 1e-9 * abs(top.value)
        assert details.evidence[c] == pytest.approx(top.value, rel=1e-9)
        # attained by an admissible (alpha, beta): the N-dimensional density gives the same value
        # there (the D x D form is too ill-conditioned at beta ~ 1e30 to evaluate)
        assert marginal_evidence(f, t, np.log(details.alpha[c]), np.log(details.beta[c])) == \
            pytest.approx(details.evidence[c], rel=1e-9)


def test_logme_scale_invariant_shift_sensitive_and_pure():
    f, y = problem(50, 6, seed=3)
    f0, y0 = f.copy(), y.copy()
    value = peers.logme(f, y)
    assert peers.logme(7.5 * f, y) == pytest.approx(value, rel=1e-9)
    assert peers.logme(f + 3.0, y) != pytest.approx(value, rel=1e-3)
    assert np.array_equal(f, f0) and np.array_equal(y, y0)
    assert peers.logme(f.astype(np.float32), y) == pytest.approx(peers.logme(f.astype(np.float32).astype(float), y))


def test_logme_rewards_informative_features():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 200)
    informative = np.c_[np.eye(2)[y] * 3 + 0.3 * rng.standard_normal((200, 2)), rng.standard_normal((200, 4))]
    noise = rng.standard_normal((200, 6))
    assert peers.logme(informative, y) > peers.logme(noise, y) + 0.1


# --------------------------------------------------------------------------------------------
# H-score
# --------------------------------------------------------------------------------------------
def test_h_score_one_dimension_is_eta_squared():
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1, 2], [10, 20, 15])
    x = rng.standard_normal(45) + np.array([0.0, 1.0, 3.0])[y]
    grand = x.mean()
    between = sum(np.sum(y == c) * (x[y == c].mean() - grand) ** 2 for c in range(3))
    total = np.sum((x - grand) ** 2)
    assert peers.h_score(x[:, None], y) == pytest.approx(between / total, rel=1e-12)


def test_h_score_of_class_means_is_c_minus_one_and_affine_invariant():
    rng = np.random.default_rng(6)
    means = rng.standard_normal((4, 7))
    y = np.tile(np.arange(4), 10)
    assert peers.h_score(means[y], y) == pytest.approx(3.0, rel=1e-10)
    f = rng.standard_normal((80, 5)) + rng.standard_normal((3, 5))[np.arange(80) % 3]
    labels = np.arange(80) % 3
    a = rng.standard_normal((5, 5)) + 5 * np.eye(5)
    assert peers.h_score(f @ a + 2.0, labels) == pytest.approx(peers.h_score(f, labels), rel=1e-9)


def test_h_score_matches_the_covariance_formula():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, 90)
    f = rng.standard_normal((90, 6)) + labels[:, None] * np.linspace(0, 1, 6)
    g = np.stack([f[labels == label].mean(0) for label in labels])
    expected = np.trace(np.linalg.pinv(np.cov(f, rowvar=False)) @ np.cov(g, rowvar=False))
    assert peers.h_score(f, labels) == pytest.approx(expected, rel=1e-10)
    # N <= D: the score saturates at C - 1 (why a regularised version exists)
    wide = rng.standard_normal((12, 30))
    assert peers.h_score(wide, np.arange(12) % 3) == pytest.approx(2.0, rel=1e-8)


def test_regularized_h_score():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(8)
    labels = rng.integers(0, 3, 70)
    f = rng.standard_normal((70, 5)) + labels[:, None] * 0.7
    assert peers.regularized_h_score(f, labels, shrinkage=0.0) == pytest.approx(peers.h_score(f, labels), rel=1e-9)
    fitted = LedoitWolf().fit(f)
    a = fitted.shrinkage_
    g = np.stack([f[labels == label].mean(0) for label in labels])
    cov_g = np.cov(g, rowvar=False, bias=True)
    expected = np.trace(np.linalg.inv(fitted.covariance_) @ ((1 - a) * cov_g))
    assert peers.regularized_h_score(f, labels) == pytest.approx(expected, rel=1e-9)
    # N < D against the dense D x D formula
    wide = rng.standard_normal((12, 30)) + np.arange(12)[:, None] % 3
    wide_labels = np.arange(12) % 3
    fitted = LedoitWolf().fit(wide)
    a = fitted.shrinkage_
    g = np.stack([wide[wide_labels == label].mean(0) for label in wide_labels])
    expected = np.trace(np.linalg.inv(fitted.covariance_) @ ((1 - a) * np.cov(g, rowvar=False, bias=True)))
    assert peers.regularized_h_score(wide, wide_labels) == pytest.approx(expected, rel=1e-8)
    assert peers.regularized_h_score(wide, wide_labels) < 2.0 - 1e-3  # no saturation


# --------------------------------------------------------------------------------------------
# RankMe and kNN
# --------------------------------------------------------------------------------------------
def orthogonal(n, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q


def test_rankme_analytic():
    s = np.array([5.0, 5.0, 5.0, 0.0, 0.0])
    f = orthogonal(8, 0)[:, :5] @ np.diag(s) @ orthogonal(5, 1)
    p = np.r_[np.full(3, 1 / 3), np.zeros(2)] + 1e-7
    assert peers.rankme(f) == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-9)
    assert peers.rankme(f, eps=0.0 + 1e-300) == pytest.approx(3.0, rel=1e-9)
    s = np.array([4.0, 2.0, 1.0, 1.0])
    f = orthogonal(6, 2)[:, :4] @ np.diag(s) @ orthogonal(4, 3)
    p = s / s.sum() + 1e-7
    assert peers.rankme(f) == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-9)
    rank_one = np.outer(np.arange(1, 7.0), np.arange(1, 4.0))
    assert peers.rankme(rank_one) == pytest.approx(1.0, abs=1e-4)


def brute_knn(f, y, k):
    z = (f - f.mean(0)) / f.std(0)
    hits = 0
    for i in range(len(y)):
        dist = np.array([np.sum((z[i] - z[j]) ** 2) if j != i else np.inf for j in range(len(y))])
        nearest = sorted(range(len(y)), key=lambda j: (dist[j], j))[:k]
        counts = {}
        for j in nearest:
            counts[y[j]] = counts.get(y[j], 0) + 1
        top = max(counts.values())
        winner = next(y[j] for j in nearest if counts[y[j]] == top)
        hits += winner == y[i]
    return hits / len(y)


@pytest.mark.parametrize("k", [1, 2, 4, 5])
def test_knn_accuracy_against_brute_force(k):
    rng = np.random.default_rng(9)
    y = rng.integers(0, 3, 40)
    f = rng.standard_normal((40, 3)) + y[:, None] * 0.8
    assert peers.knn_accuracy(f, y, k=k) == pytest.approx(brute_knn(f, y, k))


def test_knn_k1_matches_scikit_learn_leave_one_out():
    from sklearn.model_selection import LeaveOneOut, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(10)
    y = rng.integers(0, 2, 30)
    f = rng.standard_normal((30, 4)) + y[:, None]
    z = (f - f.mean(0)) / f.std(0)
    expected = cross_val_score(KNeighborsClassifier(1), z, y, cv=LeaveOneOut()).mean()
    assert peers.knn_accuracy(f, y, k=1) == pytest.approx(expected)


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", [peers.logme, peers.h_score, peers.regularized_h_score, peers.knn_accuracy])
def test_bad_input_is_rejected(metric):
    f = np.random.default_rng(0).standard_normal((10, 3))
    y = np.arange(10) % 2
    with pytest.raises(ValueError, match="empty"):
        metric(np.zeros((0, 3)), np.zeros(0, int))
    with pytest.raises(ValueError, match="one label per row"):
        metric(f, y[:9])
    with pytest.raises(ValueError, match="class"):
        metric(f, np.zeros(10, int))
    with pytest.raises(ValueError, match="non-negative"):
        metric(f, y - 1)
    with pytest.raises(ValueError, match="integers"):
        metric(f, y + 0.5)
    bad = f.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metric(bad, y)
    with pytest.raises(ValueError, match="2-D"):
        metric(f[:, 0], y)


def test_rankme_and_logme_edge_cases():
    with pytest.raises(ValueError, match="zero"):
        peers.rankme(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="no example"):
        peers.logme(np.ones((4, 2)) + np.arange(4)[:, None], np.array([0, 0, 2, 2]))
    with pytest.raises(ValueError, match=r"\[1, N - 1\]"):
        peers.knn_accuracy(np.eye(4), np.array([0, 1, 0, 1]), k=4)
