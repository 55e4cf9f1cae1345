"""Tests of ntps.bounds, each against an independent computation (least squares on explicit
features, gradient descent, analytic population losses)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from ntps import bounds, synthetic
from ntps.bounds import (
    best_linear_loss,
    bounds_grid,
    encoder_loss,
    excess_loss,
    excess_loss_bounds,
    optimal_excess_loss,
    rank_k_loss,
)
from ntps.score import ntps_grid, ntps_of_encoder, ntps_spectral_of_encoder, perception_subspace


def lstsq_mse(features, y):
    """In-sample MSE (summed over outputs, averaged over rows) of the least-squares head."""
    coef = np.linalg.lstsq(features, y, rcond=None)[0]
    return ((y - features @ coef) ** 2).sum() / len(y)


def one_hot_data(n, d, n_classes, rng, duplicate=0):
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    if duplicate:
        x = np.hstack([x, x[:, :duplicate]])
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    y = np.eye(n_classes)[labels]
    return x, y, x.T @ x / n, x.T @ y / n


@pytest.mark.parametrize(
    "n, d, n_classes, duplicate",
    [(200, 8, 3, 0), (5, 8, 3, 0), (60, 6, 4, 3), (4, 5, 2, 2)],
    ids=["n>d", "n<d", "duplicated-features", "n<d-and-duplicated"],
)
def test_excess_loss_equals_least_squares_on_explicit_features(n, d, n_classes, duplicate):
    rng = np.random.default_rng(n + d)
    x, y, sxx, sxy = one_hot_data(n, d, n_classes, rng, duplicate)
    width = x.shape[1]
    best = lstsq_mse(x, y)
    assert best_linear_loss(sxx, sxy) == pytest.approx(best, abs=1e-9)
    null_direction = scipy.linalg.null_space(x)
    encoders = [rng.standard_normal((width, k)) for k in (1, 2, width)]
    if null_direction.shape[1]:
        # columns that X cannot see: they must add nothing
        encoders.append(np.hstack([null_direction[:, :1], rng.standard_normal((width, 1)), null_direction[:, :1]]))
    for v in encoders:
        expected = lstsq_mse(x @ v, y) - best
        assert excess_loss(sxx, sxy, v) == pytest.approx(expected, abs=1e-9)
        assert encoder_loss(sxx, sxy, v) == pytest.approx(lstsq_mse(x @ v, y), abs=1e-9)
        # spectral identity: Delta = ||M||^2 (1 - NTPS_s)
        norm_m2 = 1.0 - best_linear_loss(sxx, sxy)
        assert expected == pytest.approx(norm_m2 * (1 - ntps_spectral_of_encoder(sxx, sxy, v)), abs=1e-9)
    assert excess_loss(sxx, sxy, np.eye(width)) == pytest.approx(0.0, abs=1e-10)


def test_perception_encoder_minimises_the_rank_k_loss():
    rng = np.random.default_rng(0)
    n, d, n_classes, k = 120, 8, 4, 2
    x, y, sxx, sxy = one_hot_data(n, d, n_classes, rng)
    u_k = perception_subspace(sxx, sxy, k).vectors
    best_rank_k = lstsq_mse(x @ u_k, y)
    assert rank_k_loss(sxx, sxy, k) == pytest.approx(best_rank_k, abs=1e-10)
    assert excess_loss(sxx, sxy, u_k) == pytest.approx(optimal_excess_loss(sxx, sxy, k), abs=1e-10)

    random_losses = [lstsq_mse(x @ rng.standard_normal((d, k)), y) for _ in range(300)]
    assert min(random_losses) >= best_rank_k - 1e-12

    # gradient-based search on (E, W) from random starts (L-BFGS, a few hundred steps) never
    # gets below, and does reach it: were U_k not optimal, this search would beat it
    torch.manual_seed(0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    finals = []
    for _ in range(3):
        encoder = torch.randn(d, k, dtype=torch.float64, requires_grad=True)
        head = torch.randn(k, n_classes, dtype=torch.float64, requires_grad=True)
        optimiser = torch.optim.LBFGS(
            [encoder, head], max_iter=300, line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15
        )

        def closure():
            optimiser.zero_grad()
            loss = ((yt - xt @ encoder @ head) ** 2).sum() / n
            loss.backward()
            return loss

        optimiser.step(closure)
        with torch.no_grad():
            finals.append(float(((yt - xt @ encoder @ head) ** 2).sum() / n))
    assert min(finals) >= best_rank_k - 1e-9
    assert min(finals) <= best_rank_k * (1 + 1e-4)


def _random_instance(rng):
    d = int(rng.integers(2, 8))
    n_classes = int(rng.integers(1, 5))
    if rng.random() < 0.5:  # from data, sometimes fewer texts than features
        n = int(rng.integers(2, 12))
        x = rng.standard_normal((n, d)) * np.logspace(0, -rng.uniform(0, 3), d)
        y = rng.standard_normal((n, n_classes))
        sxx, sxy = x.T @ x / n, x.T @ y / n
    else:
        sxx = synthetic.random_spd(d, rng, condition=10 ** rng.uniform(0, 6))
        sxy = rng.standard_normal((d, n_classes)) * 10 ** rng.uniform(-3, 3)
    v = rng.standard_normal((d, int(rng.integers(1, d + 1))))
    return sxx, sxy, v


def test_bounds_hold_on_thousands_of_random_instances():
    rng = np.random.default_rng(2024)
    checked, strict = 0, 0
    for _ in range(2000):
        sxx, sxy, v = _random_instance(rng)
        delta = excess_loss(sxx, sxy, v)
        lower, upper = excess_loss_bounds(sxx, sxy, v)
        # round-off of r (1 - NTPS) is about r * eps, so compare on the scale of ||M||_F^2
        norm_m2 = -best_linear_loss(sxx, sxy, y_second_moment=0.0)  # ||M||_F^2
        slack = 1e-10 * norm_m2
        assert lower <= delta + slack
        assert delta <= upper + slack
        checked += 1
        strict += lower < 0.99 * delta < 0.99 * upper
    assert checked == 2000 and strict > 100  # many instances with non-trivial gaps


def test_bounds_are_attained_when_singular_values_are_equal():
    rng = np.random.default_rng(1)
    for _ in range(50):
        d, n_classes = int(rng.integers(3, 9)), int(rng.integers(1, 4))
        sxx = synthetic.random_spd(d, rng, condition=100.0)
        q = np.linalg.qr(rng.standard_normal((d, n_classes)))[0]
        rotation = np.linalg.qr(rng.standard_normal((n_classes, n_classes)))[0]
        m = 0.7 * q @ rotation.T  # all singular values 0.7
        sxy = np.real(scipy.linalg.sqrtm(sxx)) @ m
        v = rng.standard_normal((d, int(rng.integers(1, d))))
        delta = excess_loss(sxx, sxy, v)
        lower, upper = excess_loss_bounds(sxx, sxy, v)
        assert lower == pytest.approx(delta, rel=1e-8, abs=1e-12)
        assert upper == pytest.approx(delta, rel=1e-8, abs=1e-12)
        assert delta == pytest.approx(0.49 * n_classes * (1 - ntps_of_encoder(sxx, sxy, v)), rel=1e-8, abs=1e-12)


def test_bounds_grid_matches_per_encoder_functions():
    m = synthetic.random_layer_moments(9, 3, 300, seed=3)
    sxx, sxy, c0, c1 = m[:4]
    grid = bounds_grid(sxx, sxy, c0, c1)
    values, vectors = scipy.linalg.eigh(c1 @ c1.T, c0)
    vectors = vectors[:, ::-1]
    np.testing.assert_allclose(grid.ntps, ntps_grid(sxx, sxy, c0, c1), atol=1e-12)
    x, y = m.features, np.eye(3)[m.labels]
    for k in range(1, 10):
        v = vectors[:, :k]
        assert grid.excess[k - 1] == pytest.approx(lstsq_mse(x @ v, y) - lstsq_mse(x, y), abs=1e-9)
        lower, upper = excess_loss_bounds(sxx, sxy, v)
        assert grid.lower[k - 1] == pytest.approx(lower, abs=1e-9)
        assert grid.upper[k - 1] == pytest.approx(upper, abs=1e-9)
    assert np.all(grid.lower <= grid.excess + 1e-12) and np.all(grid.excess <= grid.upper + 1e-12)


def test_population_losses_of_the_linear_gaussian_model():
    model = synthetic.make_linear_gaussian(6, 3, 4000, seed=0, rank=2, noise=0.3)
    y2 = float(np.trace(model.syy))
    rng = np.random.default_rng(0)
    v = rng.standard_normal((6, 2))
    # analytic population loss of the best head W on V^T x: E||y - W^T V^T x||^2
    gram = v.T @ model.sxx @ v
    head = np.linalg.solve(gram, v.T @ model.sxy)
    analytic = y2 - np.trace(head.T @ v.T @ model.sxy)
    assert encoder_loss(model.sxx, model.sxy, v, y_second_moment=y2) == pytest.approx(analytic, rel=1e-10)
    # rank-2 truth: the best rank-2 probe leaves only the noise, 3 * 0.3^2
    assert rank_k_loss(model.sxx, model.sxy, 2, y_second_moment=y2) == pytest.approx(0.27, rel=1e-9)
    # the empirical moments are in-sample exact
    assert encoder_loss(model.sxx_hat, model.sxy_hat, v, y_second_moment=np.trace(model.syy_hat)) == pytest.approx(
        lstsq_mse(model.X @ v, model.Y), abs=1e-10
    )


def test_bad_inputs_raise_clear_errors():
    m = synthetic.random_layer_moments(6, 2, 50, seed=0)
    sxx, sxy = m.sxx, m.sxy
    cases = [
        (lambda: excess_loss(sxx, sxy, np.ones((5, 2))), r"V has shape \(5, 2\) but sxx is \(6, 6\)"),
        (lambda: excess_loss(sxx, sxy, np.full((6, 1), np.nan)), r"V contains 6 non-finite"),
        (lambda: excess_loss_bounds(sxx[:5], sxy, np.ones((6, 1))), r"sxx must be a square"),
        (lambda: optimal_excess_loss(sxx, sxy, 7), r"k must be in \[1, 6\]"),
        (lambda: rank_k_loss(sxx, sxy, 0), r"k must be in \[1, 6\]"),
        (lambda: excess_loss(sxx, np.zeros_like(sxy), np.ones((6, 1))), r"labels carry no mass"),
        (lambda: bounds_grid(sxx, sxy, m.c1, m.c0), r"c0 is not symmetric"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_inputs_are_never_mutated():
    m = synthetic.random_layer_moments(6, 2, 50, seed=0)
    arrays = [np.array(a) for a in m[:4]] + [np.random.default_rng(0).standard_normal((6, 2))]
    copies = [a.copy() for a in arrays]
    sxx, sxy, c0, c1, v = arrays
    for call in (
        lambda: excess_loss(sxx, sxy, v),
        lambda: excess_loss_bounds(sxx, sxy, v),
        lambda: encoder_loss(sxx, sxy, v),
        lambda: best_linear_loss(sxx, sxy),
        lambda: rank_k_loss(sxx, sxy, 1),
        lambda: optimal_excess_loss(sxx, sxy, 1),
        lambda: bounds.bounds_grid(sxx, sxy, c0, c1),
    ):
        call()
        for before, after in zip(copies, arrays):
            np.testing.assert_array_equal(before, after)
