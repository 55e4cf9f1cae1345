"""Tests of ntps.score, each against an independent computation.

The independent references written here use no code of the package: generalised eigenvectors
from scipy.linalg.eigh(A, B), square roots from scipy.linalg.sqrtm, projectors from explicit
pseudo-inverses (one per k), or the raw data matrix X instead of the moments.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from ntps import score, synthetic
from ntps.score import (
    autoregressive_subspace,
    ntps_score,
    ntps_full_grid,
    ntps_grid,
    ntps_layers,
    ntps_of_encoder,
    ntps_reference,
    ntps_reference_sweep,
    ntps_spectral,
    ntps_spectral_grid,
    ntps_spectral_of_encoder,
    perception_subspace,
    projector_basis,
    whitened_targets,
)


# --------------------------------------------------------------------------------------------
# Independent references
# --------------------------------------------------------------------------------------------


def generalized_top(a, b):
    """Generalised eigenpairs of (a, b), b positive definite, largest first (scipy)."""
    values, vectors = scipy.linalg.eigh(a, b)
    return values[::-1], vectors[:, ::-1]


def sqrt_psd(a):
    return np.real(scipy.linalg.sqrtm(a))


def projector(b, rcond=1e-10):
    """Euclidean projector onto col(b) through an explicit pseudo-inverse."""
    return b @ np.linalg.pinv(b, rcond=rcond)


def direct_ntps(sxx, sxy, v, k_u=None):
    """||Pi Q||^2 / k_u with Pi = P(Sigma^{1/2} V) and Q from M = Sigma^{-1/2} sxy (Sigma PD)."""
    root = sqrt_psd(sxx)
    m = np.linalg.solve(root, sxy)
    q, s, _ = np.linalg.svd(m, full_matrices=False)
    k_u = len(s) if k_u is None else k_u
    return np.linalg.norm(projector(root @ v) @ q[:, :k_u]) ** 2 / k_u


def direct_spectral(sxx, sxy, v):
    root = sqrt_psd(sxx)
    m = np.linalg.solve(root, sxy)
    return np.linalg.norm(projector(root @ v) @ m) ** 2 / np.linalg.norm(m) ** 2


def data_space_ntps(x, y, v, k_u=None):
    """NTPS computed from the data matrix: x -> X maps Sigma^{1/2} V isometrically onto X V/sqrt(n)
    and M onto P_X Y/sqrt(n), so NTPS = ||P_{XV} Q_Y||^2 / k_u with Q_Y the top left singular
    vectors of P_X Y. Valid for rank-deficient X (n < d, duplicated features)."""
    fitted = projector(x) @ y
    q, s, _ = np.linalg.svd(fitted, full_matrices=False)
    rank = int((s > 1e-10 * s[0]).sum())
    k_u = rank if k_u is None else k_u
    return np.linalg.norm(projector(x @ v, rcond=1e-8) @ q[:, :k_u]) ** 2 / k_u


def moments_from_data(x, labels, n_classes):
    y = np.eye(n_classes)[labels]
    n = len(x)
    return x.T @ x / n, x.T @ y / n, y


def orthonormal(d, k, rng):
    q, r = np.linalg.qr(rng.standard_normal((d, k)))
    return q * np.sign(np.diag(r))


def ar_moments_with_nested_spans(c0, directions, rng):
    """c1 such that the top-k autoregressive subspace of (c1 c1^T, c0) spans directions[:, :k]
    for every k (distinct eigenvalues, descending)."""
    d = c0.shape[0]
    root = sqrt_psd(c0)
    z, r = np.linalg.qr(root @ directions)
    z = z * np.sign(np.diag(r))
    strengths = np.linspace(3.0, 1.0, d)
    return root @ z * strengths


@pytest.fixture(scope="module")
def layer():
    return synthetic.random_layer_moments(10, 3, 400, seed=1)


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------


def test_grid_equals_ntps_at_every_k(layer):
    sxx, sxy, c0, c1 = layer[:4]
    for k_u in (None, 1, 2):
        grid = ntps_grid(sxx, sxy, c0, c1, k_u=k_u)
        assert grid.shape == (10,)
        per_k = [ntps_score(sxx, sxy, c0, c1, k_v=k, k_u=k_u) for k in range(1, 11)]
        np.testing.assert_allclose(grid, per_k, rtol=0, atol=1e-12)
    full = ntps_full_grid(sxx, sxy, c0, c1)
    assert full.shape == (10, 3)
    for k_u in (1, 2, 3):
        np.testing.assert_allclose(full[:, k_u - 1], ntps_grid(sxx, sxy, c0, c1, k_u=k_u), atol=1e-12)
    spectral = ntps_spectral_grid(sxx, sxy, c0, c1)
    per_k = [ntps_spectral(sxx, sxy, c0, c1, k_v=k) for k in range(1, 11)]
    np.testing.assert_allclose(spectral, per_k, atol=1e-12)


def test_grid_equals_independent_per_k_pinv_projector(layer):
    sxx, sxy, c0, c1 = layer[:4]
    _, v = generalized_top(c1 @ c1.T, c0)
    grid = ntps_grid(sxx, sxy, c0, c1)
    spectral = ntps_spectral_grid(sxx, sxy, c0, c1)
    for k in range(1, 11):
        assert grid[k - 1] == pytest.approx(direct_ntps(sxx, sxy, v[:, :k]), abs=1e-9)
        assert spectral[k - 1] == pytest.approx(direct_spectral(sxx, sxy, v[:, :k]), abs=1e-9)
    assert np.all(np.diff(grid) >= -1e-12) and grid[-1] == pytest.approx(1.0, abs=1e-12)
    assert 0.0 < grid[0] < 1.0


def test_grid_with_null_space_directions_interleaved():
    """Sigma of rank 6 (n = 6 texts < d = 12); the autoregressive ranks alternately add a
    direction inside and outside the range of Sigma. A plain Householder QR of Sigma^{1/2} V would
    lose the nesting after the first dependent column; the grid must match the per-k projector."""
    rng = np.random.default_rng(7)
    n, d, n_classes = 6, 12, 2
    x = rng.standard_normal((n, d))
    labels = np.array([0, 1, 0, 1, 1, 0])
    sxx, sxy, y = moments_from_data(x, labels, n_classes)
    _, _, right = np.linalg.svd(x)
    row_space = right[:n].T @ orthonormal(n, n, rng)
    null_space = right[n:].T @ orthonormal(d - n, d - n, rng)
    directions = np.empty((d, d))
    directions[:, 0::2], directions[:, 1::2] = row_space, null_space
    c0 = synthetic.random_spd(d, rng, condition=10.0)
    c1 = ar_moments_with_nested_spans(c0, directions, rng)
    _, v = generalized_top(c1 @ c1.T, c0)

    grid = ntps_grid(sxx, sxy, c0, c1)
    expected = [data_space_ntps(x, y, v[:, :k]) for k in range(1, d + 1)]
    np.testing.assert_allclose(grid, expected, atol=1e-8)
    # the case does exercise dependent columns: every second V direction adds nothing
    kept = projector_basis(sxx, v).kept
    assert kept.tolist() == [True, False] * n
    # plateaus at the null-space steps
    np.testing.assert_allclose(grid[1::2], grid[0::2], atol=1e-9)


def test_ntps_one_when_V_contains_perception_subspace_and_zero_when_orthogonal():
    rng = np.random.default_rng(3)
    d, n_classes = 10, 3
    sxx = synthetic.random_spd(d, rng, condition=50.0)
    sxy = rng.standard_normal((d, n_classes))
    root = sqrt_psd(sxx)
    q, _, _ = np.linalg.svd(np.linalg.solve(root, sxy), full_matrices=False)
    complement = scipy.linalg.null_space(q.T)
    c0 = synthetic.random_spd(d, rng, condition=20.0)  # deliberately not Sigma

    # V_k spans Sigma^{-1/2} [Q, complement]: contains the perception subspace from k = 3 on
    inside = np.linalg.solve(root, np.hstack([q, complement]))
    c1 = ar_moments_with_nested_spans(c0, inside, rng)
    grid = ntps_grid(sxx, sxy, c0, c1)
    np.testing.assert_allclose(grid[2:], 1.0, atol=1e-10)
    assert ntps_score(sxx, sxy, c0, c1, k_v=3) == pytest.approx(1.0, abs=1e-10)
    assert ntps_spectral(sxx, sxy, c0, c1, k_v=3) == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(grid[:2], [1 / 3, 2 / 3], atol=1e-10)  # one direction of Q each

    # V_k spans Sigma^{-1/2} [complement, Q]: orthogonal to it up to k = d - 3
    outside = np.linalg.solve(root, np.hstack([complement, q]))
    c1 = ar_moments_with_nested_spans(c0, outside, rng)
    grid = ntps_grid(sxx, sxy, c0, c1)
    np.testing.assert_allclose(grid[: d - 3], 0.0, atol=1e-10)
    assert ntps_score(sxx, sxy, c0, c1, k_v=d - 3) == pytest.approx(0.0, abs=1e-10)
    assert grid[-1] == pytest.approx(1.0, abs=1e-10)


# --------------------------------------------------------------------------------------------
# Invariance under a change of the feature basis
# --------------------------------------------------------------------------------------------


def transform(moments, a, targets_too=True):
    """Moments of x -> A x, s -> A s and (if targets_too) next-token targets h -> A h."""
    sxx, sxy, c0, c1 = moments
    return a @ sxx @ a.T, a @ sxy, a @ c0 @ a.T, a @ c1 @ (a.T if targets_too else np.eye(len(a)))


def change_of_basis(kind, d, rng):
    if kind == "orthogonal":
        return orthonormal(d, d, rng)
    if kind == "scalar":
        return 37.0 * np.eye(d)
    if kind == "diagonal":
        return np.diag(np.logspace(-1, 1, d))
    return orthonormal(d, d, rng) @ np.diag(np.logspace(0, 1, d)) @ orthonormal(d, d, rng)


@pytest.mark.parametrize("kind", ["orthogonal", "scalar", "diagonal", "general"])
def test_invariance_to_invertible_change_of_basis(layer, kind):
    """The perception side (Q, Pi_V for V -> A^{-T} V, excess loss) is invariant under any
    invertible A. The autoregressive encoder is covariant in its input s, but its regression
    target h is weighted by the Euclidean norm (c1 c1^T -> A c1 A^T A c1^T A^T), so moving the
    hidden states h -> A h leaves the whole grid unchanged only for orthogonal or scalar A."""
    from ntps.bounds import excess_loss

    rng = np.random.default_rng(11)
    d = 10
    a = change_of_basis(kind, d, rng)
    moments = tuple(layer[:4])
    conformal = kind in ("orthogonal", "scalar")
    moved = transform(moments, a, targets_too=conformal)
    np.testing.assert_allclose(ntps_grid(*moved), ntps_grid(*moments), atol=1e-8)
    np.testing.assert_allclose(ntps_spectral_grid(*moved), ntps_spectral_grid(*moments), atol=1e-8)
    np.testing.assert_allclose(ntps_full_grid(*moved), ntps_full_grid(*moments), atol=1e-8)
    if not conformal:
        # documented limit: a non-conformal change of the targets h changes the AR subspace
        changed = ntps_grid(*transform(moments, a, targets_too=True))
        assert np.abs(changed - ntps_grid(*moments)).max() > 1e-3
    # an encoder moves as V -> A^{-T} V
    v = rng.standard_normal((d, 4))
    v_moved = np.linalg.solve(a.T, v)
    sxx, sxy = moments[:2]
    assert excess_loss(moved[0], moved[1], v_moved) == pytest.approx(excess_loss(sxx, sxy, v), rel=1e-8)
    assert ntps_of_encoder(moved[0], moved[1], v_moved) == pytest.approx(ntps_of_encoder(sxx, sxy, v), abs=1e-9)
    assert ntps_spectral_of_encoder(moved[0], moved[1], v_moved) == pytest.approx(
        ntps_spectral_of_encoder(sxx, sxy, v), abs=1e-9
    )


# --------------------------------------------------------------------------------------------
# Building blocks against scipy
# --------------------------------------------------------------------------------------------


def test_subspaces_are_the_generalized_eigenvectors(layer):
    sxx, sxy, c0, c1 = layer[:4]
    values, vectors = generalized_top(sxy @ sxy.T, sxx)
    u = perception_subspace(sxx, sxy)
    assert u.vectors.shape == (10, 3)
    np.testing.assert_allclose(u.values, values[:3], rtol=1e-9)
    np.testing.assert_allclose(u.vectors.T @ sxx @ u.vectors, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(np.abs(u.vectors.T @ sxx @ vectors[:, :3]), np.eye(3), atol=1e-7)

    values, vectors = generalized_top(c1 @ c1.T, c0)
    v = autoregressive_subspace(c0, c1, k=4)
    np.testing.assert_allclose(v.values, values[:4], rtol=1e-8)
    np.testing.assert_allclose(np.abs(v.vectors.T @ c0 @ vectors[:, :4]), np.eye(4), atol=1e-7)

    target = whitened_targets(sxx, sxy)
    m = np.linalg.solve(sqrt_psd(sxx), sxy)
    np.testing.assert_allclose(target.matrix, m, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(target.singular_values, np.linalg.svd(m, compute_uv=False), rtol=1e-9)
    assert target.rank == 3 and target.left.shape == (10, 3)


def test_ntps_of_encoder_equals_direct_and_data_space():
    rng = np.random.default_rng(5)
    n, d = 40, 8
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    labels = np.arange(n) % 3
    sxx, sxy, y = moments_from_data(x, labels, 3)
    for k in (1, 3, 8):
        v = rng.standard_normal((d, k))
        for k_u in (1, 2, None):
            expected = direct_ntps(sxx, sxy, v, k_u=k_u)
            assert ntps_of_encoder(sxx, sxy, v, k_u=k_u) == pytest.approx(expected, abs=1e-9)
            assert data_space_ntps(x, y, v, k_u=k_u) == pytest.approx(expected, abs=1e-9)
        assert ntps_spectral_of_encoder(sxx, sxy, v) == pytest.approx(direct_spectral(sxx, sxy, v), abs=1e-9)
    basis = projector_basis(sxx, v).basis
    np.testing.assert_allclose(basis @ basis.T, projector(sqrt_psd(sxx) @ v), atol=1e-9)


def test_rank_deficient_and_duplicated_features():
    """n < d and duplicated feature columns: handled on the range of Sigma."""
    rng = np.random.default_rng(9)
    base = rng.standard_normal((7, 6))
    x = np.hstack([base, base[:, :3]])  # d = 9, rank 6
    labels = np.array([0, 1, 2, 0, 1, 2, 0])
    sxx, sxy, y = moments_from_data(x, labels, 3)
    for k in (1, 2, 5, 9):
        v = rng.standard_normal((9, k))
        assert ntps_of_encoder(sxx, sxy, v) == pytest.approx(data_space_ntps(x, y, v), abs=1e-8)


# --------------------------------------------------------------------------------------------
# The released code's score
# --------------------------------------------------------------------------------------------


def released_dense_score(sxx, sxy, c0, c1, fraction):
    """Transcription of the released K_sweep.py dense branch (nullspace_eig_generalized and the
    fraction loop), float32 throughout, as published."""
    sxy, sxx, c1, c0 = (np.asarray(a, dtype=np.float32) for a in (sxy, sxx, c1, c0))

    def eig_generalized(a, b, tol=1e-8):
        vals_b, vecs_b = scipy.linalg.eigh(b)
        idx = vals_b > tol
        w = vecs_b[:, idx] @ np.linalg.inv(np.sqrt(np.diag(vals_b[idx])))
        _, y = scipy.linalg.eigh(w.T @ a @ w)
        return w @ y

    u = eig_generalized(sxy @ sxy.T, sxx)
    v = eig_generalized(c1 @ c1.T, c0)
    u_k = u[:, : int(fraction * u.shape[1])]
    v_k = v[:, : int(fraction * v.shape[1])]
    p_k = v_k @ np.linalg.pinv(v_k)
    return np.linalg.norm(p_k @ u_k, "fro") ** 2 / np.linalg.norm(u_k, "fro") ** 2


def test_reference_equals_released_algorithm_when_well_posed():
    # C = 9 > d = 6: sxy sxy^T is full rank and every eigenvector is determined
    m = synthetic.random_layer_moments(6, 9, 500, seed=2, signal=2.0)
    sweep = ntps_reference_sweep(*m[:4])
    with np.errstate(invalid="ignore"):  # fractions below 1/6 take no column: 0/0 as released
        expected = [released_dense_score(*m[:4], f) for f in score.REFERENCE_FRACTIONS]
    assert np.isnan(sweep[:3]).all() and np.isnan(expected[:3]).all()
    np.testing.assert_allclose(sweep, expected, atol=1e-4)
    for f in (0.2, 0.5, 0.95):
        assert ntps_reference(*m[:4], f) == pytest.approx(released_dense_score(*m[:4], f), abs=1e-4)
    assert len(set(np.round(sweep, 3))) > 3  # not a constant: the comparison has teeth


def test_reference_is_ill_posed_but_ntps_is_not():
    """d = 24, C = 2: a 1e-9 relative perturbation of sxy moves the released score by O(0.1) at
    small fractions (the first U columns span part of the 22-fold degenerate null space of
    sxy sxy^T), while the theorem-consistent score moves by round-off."""
    fractions = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7]
    moved32, moved64 = [], []
    for seed in range(12):
        m = synthetic.random_layer_moments(24, 2, 300, seed=seed)
        rng = np.random.default_rng(100 + seed)
        sxy_perturbed = m.sxy * (1.0 + 1e-9 * rng.standard_normal(m.sxy.shape))
        before = ntps_reference_sweep(m.sxx, m.sxy, m.c0, m.c1, fractions)
        after = ntps_reference_sweep(m.sxx, sxy_perturbed, m.c0, m.c1, fractions)
        moved32.append(np.abs(after - before).max())
        before = ntps_reference_sweep(m.sxx, m.sxy, m.c0, m.c1, fractions, dtype=np.float64)
        after = ntps_reference_sweep(m.sxx, sxy_perturbed, m.c0, m.c1, fractions, dtype=np.float64)
        moved64.append(np.abs(after - before).max())
        if seed < 3:
            grid = ntps_grid(m.sxx, m.sxy, m.c0, m.c1)
            grid_perturbed = ntps_grid(m.sxx, sxy_perturbed, m.c0, m.c1)
            assert np.abs(grid - grid_perturbed).max() < 1e-6
    # float32 (as released): the perturbation survives the cast only where it flips an ulp,
    # and then it moves the score; in float64 it always does
    assert max(moved32) > 0.01
    assert max(moved64) > 0.01 and np.median(moved64) > 0.01


# --------------------------------------------------------------------------------------------
# Layers, backends, input handling
# --------------------------------------------------------------------------------------------


def test_ntps_layers_stacks_and_pads(layer):
    sxx, sxy, c0, c1 = layer[:4]
    # layer 1: c0 of rank 7 (3 directions of the prefix sums never vary)
    rng = np.random.default_rng(0)
    basis = orthonormal(10, 7, rng)
    c0_low = basis @ basis.T @ c0 @ basis @ basis.T
    c1_low = basis @ basis.T @ c1
    stacked = dict(
        sxx=np.stack([sxx, sxx]), sxy=np.stack([sxy, sxy]), c0=np.stack([c0, c0_low]), c1=np.stack([c1, c1_low])
    )
    grid = ntps_layers(stacked)
    assert grid.shape == (2, 10)
    np.testing.assert_allclose(grid[0], ntps_grid(sxx, sxy, c0, c1), atol=1e-12)
    np.testing.assert_allclose(grid[1, :7], ntps_grid(sxx, sxy, c0_low, c1_low), atol=1e-12)
    assert np.isnan(grid[1, 7:]).all()
    positional = ntps_layers(stacked["sxx"], stacked["sxy"], stacked["c0"], stacked["c1"], spectral=True)
    np.testing.assert_allclose(positional[0], ntps_spectral_grid(sxx, sxy, c0, c1), atol=1e-12)

    class PerLayer:  # the shape of ntps.moments.Moments: layer indices and one layer at a time
        layers = [3, 7]

        def layer(self, index):
            i = self.layers.index(index)
            return {name: stacked[name][i] for name in ("sxx", "sxy", "c0", "c1")}

    np.testing.assert_allclose(ntps_layers(PerLayer()), grid, atol=0, equal_nan=True)


def test_torch_backend_matches_numpy(layer):
    sxx, sxy, c0, c1 = layer[:4]
    np.testing.assert_allclose(
        ntps_grid(sxx, sxy, c0, c1, backend="torch", device="cpu"), ntps_grid(sxx, sxy, c0, c1), atol=1e-10
    )
    np.testing.assert_allclose(
        ntps_full_grid(sxx, sxy, c0, c1, backend="torch"), ntps_full_grid(sxx, sxy, c0, c1), atol=1e-10
    )
    # rank-deficient Sigma (the Gram-Schmidt fallback) and torch tensors as inputs
    m = synthetic.random_layer_moments(30, 4, 20, seed=4)  # 20 texts < 30 features
    tensors = [torch.from_numpy(a.copy()) for a in m[:4]]
    np.testing.assert_allclose(
        ntps_spectral_grid(*tensors, backend="torch"), ntps_spectral_grid(*m[:4]), atol=1e-10
    )
    np.testing.assert_allclose(ntps_grid(*tensors, backend="torch"), ntps_grid(*m[:4]), atol=1e-10)


def test_accepts_float32_and_torch_inputs(layer):
    sxx, sxy, c0, c1 = layer[:4]
    as32 = [a.astype(np.float32) for a in (sxx, sxy, c0, c1)]
    grid = ntps_grid(*(torch.from_numpy(a) for a in as32))
    np.testing.assert_allclose(grid, ntps_grid(*as32), atol=1e-12)
    np.testing.assert_allclose(grid, ntps_grid(sxx, sxy, c0, c1), atol=1e-5)
    lists = [a.tolist() for a in (sxx, sxy, c0, c1)]
    np.testing.assert_allclose(ntps_grid(*lists), ntps_grid(sxx, sxy, c0, c1), atol=1e-12)


def test_round_off_asymmetry_is_symmetrised_silently(layer):
    sxx, sxy, c0, c1 = layer[:4]
    noise = np.random.default_rng(0).standard_normal(sxx.shape) * 1e-9 * np.abs(sxx).max()
    np.testing.assert_allclose(
        ntps_grid(sxx + noise, sxy, c0, c1), ntps_grid(sxx + 0.5 * (noise + noise.T), sxy, c0, c1), atol=1e-12
    )


def test_inputs_are_never_mutated(layer):
    from ntps import bounds

    arrays = [np.array(a, copy=True) for a in layer[:4]]
    arrays[0] = arrays[0] + 1e-12 * np.triu(np.ones_like(arrays[0]), 1)  # round-off asymmetric
    v = np.random.default_rng(0).standard_normal((10, 3))
    copies = [a.copy() for a in arrays] + [v.copy()]
    sxx, sxy, c0, c1 = arrays
    calls = [
        lambda: ntps_score(sxx, sxy, c0, c1, 3),
        lambda: ntps_grid(sxx, sxy, c0, c1),
        lambda: ntps_grid(sxx, sxy, c0, c1, backend="torch"),
        lambda: ntps_full_grid(sxx, sxy, c0, c1),
        lambda: ntps_spectral(sxx, sxy, c0, c1, 3),
        lambda: ntps_spectral_grid(sxx, sxy, c0, c1),
        lambda: ntps_of_encoder(sxx, sxy, v),
        lambda: ntps_spectral_of_encoder(sxx, sxy, v),
        lambda: ntps_reference(sxx, sxy, c0, c1, 0.5),
        lambda: ntps_reference_sweep(sxx, sxy, c0, c1),
        lambda: perception_subspace(sxx, sxy),
        lambda: autoregressive_subspace(c0, c1),
        lambda: whitened_targets(sxx, sxy),
        lambda: projector_basis(sxx, v),
        lambda: ntps_layers(sxx[None], sxy[None], c0[None], c1[None]),
        lambda: bounds.excess_loss(sxx, sxy, v),
        lambda: bounds.excess_loss_bounds(sxx, sxy, v),
        lambda: bounds.bounds_grid(sxx, sxy, c0, c1),
    ]
    for call in calls:
        call()
        for original, now in zip(copies, arrays + [v]):
            np.testing.assert_array_equal(original, now)
    tensors = [torch.from_numpy(a.copy()) for a in arrays]
    before = [t.clone() for t in tensors]
    ntps_grid(*tensors, backend="torch")
    for t0, t1 in zip(before, tensors):
        assert torch.equal(t0, t1)


def _bad_input_cases(layer):
    sxx, sxy, c0, c1 = (np.array(a) for a in layer[:4])
    nan_sxx = sxx.copy()
    nan_sxx[2, 3] = np.nan
    inf_c1 = c1.copy()
    inf_c1[0, 0] = np.inf
    empty_class = sxy.copy()
    empty_class[:, 1] = 0.0
    indefinite = c0 - 2.0 * np.linalg.eigvalsh(c0).max() * np.outer(np.eye(10)[0], np.eye(10)[0])
    return [
        (lambda: ntps_score(sxx, sxy.T, c0, c1, 1), r"sxy has shape \(3, 10\).*did you pass its transpose"),
        (lambda: ntps_score(sxx[:, :9], sxy, c0, c1, 1), r"sxx must be a square"),
        (lambda: ntps_score(sxx, sxy, c0[:9, :9], c1, 1), r"c0 is \(9, 9\) but sxx is \(10, 10\)"),
        (lambda: ntps_score(sxx, sxy, c0, c1[:, :9], 1), r"c1 has shape \(10, 9\)"),
        (lambda: ntps_score(sxx, sxy[:9], c0, c1, 1), r"sxy has shape \(9, 3\) but sxx is \(10, 10\)"),
        (lambda: ntps_score(sxx, sxy, c0, c1, 0), r"k_v must be in \[1, 10\]"),
        (lambda: ntps_score(sxx, sxy, c0, c1, 11), r"k_v must be in \[1, 10\]"),
        (lambda: ntps_score(sxx, sxy, c0, c1, 1.5), r"k_v must be an integer in \[1, 10\]"),
        (lambda: ntps_score(sxx, sxy, c0, c1, 2, k_u=4), r"k_u must be in \[1, 3\]"),
        (lambda: ntps_grid(sxx, sxy, c0, c1, k_u=0), r"k_u must be in \[1, 3\]"),
        (lambda: ntps_score(nan_sxx, sxy, c0, c1, 1), r"sxx contains 1 non-finite"),
        (lambda: ntps_grid(sxx, sxy, c0, inf_c1), r"c1 contains 1 non-finite"),
        (lambda: ntps_score(sxx, 0 * sxy, c0, c1, 1), r"sxy is all zero: the labels carry no mass"),
        (lambda: ntps_grid(sxx, empty_class, c0, c1), r"sxy column\(s\) \[1\] are all zero.*no examples"),
        (lambda: ntps_score(sxx, sxy, c1, c0, 1), r"c0 is not symmetric"),
        (lambda: ntps_score(sxx, sxy, c0, 0 * c1, 1), r"c1 is all zero.*no autoregressive signal"),
        (lambda: ntps_score(0 * sxx, sxy, c0, c1, 1), r"sxx is all zero.*no mass"),
        (lambda: ntps_grid(sxx, sxy, indefinite, c1), r"c0 is not positive semi-definite"),
        (lambda: ntps_of_encoder(sxx, sxy, np.ones((3, 10))), r"encoder must be \(d, k\).*transpose"),
        (lambda: ntps_reference(sxx, sxy, c0, c1, 0.0), r"fraction must be in \(0, 1\]"),
        (lambda: ntps_reference(sxx, sxy, c0, c1, 0.05), r"takes no column.*use fraction >= 0.1"),
        (lambda: ntps_grid(sxx, sxy, c0, c1, rtol=2.0), r"rtol must be"),
        (lambda: ntps_grid(sxx, sxy, c0, c1, backend="jax"), r"backend must be 'numpy' or 'torch'"),
        (lambda: ntps_layers(sxx[None], sxy[None], c0[None], np.stack([c1, c1])), r"number of layers"),
        (lambda: ntps_layers(sxx[None], (0 * sxy)[None], c0[None], c1[None]), r"layer 0: sxy is all zero"),
        (lambda: ntps_layers({"sxx": sxx[None]}), r"no 'sxy'"),
        (lambda: perception_subspace(sxx, sxy, k=4), r"k_u must be in \[1, 3\]"),
    ]


def test_bad_inputs_raise_clear_errors(layer):
    for call, message in _bad_input_cases(layer):
        with pytest.raises(ValueError, match=message):
            call()


def test_bad_inputs_are_caught_on_the_torch_path_too(layer):
    sxx, sxy, c0, c1 = (torch.from_numpy(np.array(a)) for a in layer[:4])
    nan_sxx = sxx.clone()
    nan_sxx[1, 1] = float("nan")
    empty_class = sxy.clone()
    empty_class[:, 1] = 0.0
    cases = [
        ((nan_sxx, sxy, c0, c1), r"sxx contains 1 non-finite"),
        ((sxx, empty_class, c0, c1), r"sxy column\(s\) \[1\] are all zero"),
        ((sxx, sxy, c1, c0), r"c0 is not symmetric"),
        ((sxx, sxy.T, c0, c1), r"did you pass its transpose"),
        ((sxx, sxy, c0, 0 * c1), r"c1 is all zero"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            ntps_grid(*args, backend="torch")
    with pytest.raises(ValueError, match=r"k_u must be in \[1, 3\]"):
        ntps_grid(sxx, sxy, c0, c1, k_u=5, backend="torch")


def test_score_layers_against_explicit_encoders():
    from ntps.moments import Moments
    from ntps.score import score_layers

    rng = np.random.default_rng(11)
    d, n = 8, 60
    sums = {name: [] for name in ("sum_xx", "sum_xy", "sum_ss", "sum_sh")}
    for _ in range(3):
        x, y, s = rng.standard_normal((n, d)), np.eye(3)[rng.integers(0, 3, n)], rng.standard_normal((5, d))
        sums["sum_xx"].append(x.T @ x)
        sums["sum_xy"].append(x.T @ y)
        sums["sum_ss"].append(s.T @ s)  # rank 5 < d: k = 6.. d are beyond d_eff
        sums["sum_sh"].append(s.T @ rng.standard_normal((5, d)))
    stats = Moments(**sums, layers=[0, 4, 9], n_texts=n, n_pairs=5)
    table = score_layers(stats, k=[1, 3, 5, 7])
    assert len(table) == 3 * 4 and list(table.layer.unique()) == [0, 4, 9]
    for (layer, k), row in table.set_index(["layer", "k"]).iterrows():
        one = stats.layer(layer)
        if k > 5:
            assert np.isnan(row.ntps) and np.isnan(row.ntps_spectral)
            continue
        encoder = autoregressive_subspace(one["c0"], one["c1"], k).vectors
        assert row.ntps == pytest.approx(ntps_of_encoder(one["sxx"], one["sxy"], encoder), abs=1e-9)
        assert row.ntps_spectral == pytest.approx(ntps_spectral_of_encoder(one["sxx"], one["sxy"], encoder), abs=1e-9)
        assert row.k_fraction == k / d
    with pytest.raises(ValueError, match="absolute dimension"):
        score_layers(stats, k=0.5)


# --------------------------------------------------------------------------------------------
# The null: what a random encoder scores
# --------------------------------------------------------------------------------------------


def _few_texts_problem(n=12, d=20, c=3, seed=5):
    """Perception moments of n < d texts: Sigma has rank n."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    y = np.eye(c)[np.arange(n) % c]
    return x.T @ x / n, x.T @ y / n


def test_ntps_null_is_the_mean_over_haar_random_subspaces():
    sxx, sxy = _few_texts_problem()
    p = np.linalg.matrix_rank(sxx)
    assert p == 12
    for k in (1, 4, 9):
        draws = score.random_encoder_ntps(sxx, sxy, k, draws=4000, kind="uniform", seed=k)
        standard_error = draws.std() / np.sqrt(draws.size)
        assert abs(draws.mean() - score.ntps_null(k, p)) < 4 * standard_error + 1e-12
        assert ((draws >= -1e-12) & (draws <= 1 + 1e-12)).all()
    # the whole range: every subspace of dimension p is the range itself, NTPS 1
    np.testing.assert_allclose(score.random_encoder_ntps(sxx, sxy, p, draws=5, kind="uniform"), 1.0, atol=1e-10)


def test_a_gaussian_raw_encoder_is_an_explicit_projector_computation():
    sxx, sxy = _few_texts_problem(n=30, d=10)
    k, seed = 3, 11
    value = score.random_encoder_ntps(sxx, sxy, k, draws=1, kind="gaussian", seed=seed)[0]
    v = np.random.default_rng(seed).standard_normal((10, k))
    root = scipy.linalg.sqrtm(sxx).real
    image = root @ v
    projector = image @ np.linalg.pinv(image)
    m = np.linalg.pinv(root) @ sxy
    u, s, _ = np.linalg.svd(m, full_matrices=False)
    q = u[:, s > 1e-10 * s[0]]
    assert value == pytest.approx(np.sum((projector @ q) ** 2) / q.shape[1], abs=1e-8)
    with pytest.raises(ValueError, match="kind"):
        score.random_encoder_ntps(sxx, sxy, k, kind="normal")


def test_ntps_null_and_lift_by_hand():
    assert score.ntps_null(288, 320) == pytest.approx(0.9)
    assert score.ntps_null(400, 320) == 1.0
    np.testing.assert_allclose(score.ntps_null([1, 2, 3], 6), [1 / 6, 2 / 6, 3 / 6])
    assert score.ntps_lift(0.25, 0.25) == 0.0
    assert score.ntps_lift(1.0, 0.25) == 1.0
    assert score.ntps_lift(0.625, 0.25) == pytest.approx(0.5)
    assert np.isnan(score.ntps_lift(1.0, 1.0))
    with pytest.raises(ValueError, match="at least 1"):
        score.ntps_null(0, 5)


def test_grids_report_the_rank_of_sigma_and_score_layers_the_null():
    rng = np.random.default_rng(2)
    n, d = 15, 24
    x = rng.standard_normal((n, d))
    y = np.eye(2)[np.arange(n) % 2]
    s = rng.standard_normal((200, d))
    grids = score.ntps_grids(x.T @ x / n, x.T @ y / n, s.T @ s / 200, s[:-1].T @ s[1:] / 200)
    assert grids.sigma_rank == np.linalg.matrix_rank(x) == n
    # at k >= p every encoder sees the whole range: 1 for every features
    np.testing.assert_allclose(grids.theorem[n - 1:], 1.0, atol=1e-10)
    from ntps.moments import Moments

    stats = Moments(sum_xx=[x.T @ x], sum_xy=[x.T @ y], sum_ss=[s.T @ s], sum_sh=[s[:-1].T @ s[1:]],
                    layers=[0], n_texts=n, n_pairs=199)
    table = score.score_layers(stats, k=[3, 10, 20])
    np.testing.assert_allclose(table["null"], [3 / n, 10 / n, 1.0])
    assert (table["p"] == n).all()
    expected_lift = (table["ntps"].iloc[0] - 3 / n) / (1 - 3 / n)
    assert table["lift"].iloc[0] == pytest.approx(expected_lift)
    assert np.isnan(table["lift"].iloc[2])
