"""Probes against independent computations: least squares via numpy's lstsq / normal equations,
logistic regression on separable and shuffled data, standardisation by the train split only."""

import numpy as np
import pytest

from ntps import probes
from ntps.probes import probe_layers, standardize


def blobs(n, d, classes=3, shift=1.5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.standard_normal((classes, d)) * shift
    x = centres[y] + rng.standard_normal((n, d)) * np.linspace(0.5, 3.0, d) + 10.0
    return x, y


def test_standardize_uses_train_statistics_only():
    rng = np.random.default_rng(0)
    train = rng.standard_normal((20, 3)) * [1.0, 5.0, 0.0] + [1.0, -2.0, 7.0]
    test = rng.standard_normal((6, 3))
    before = train.copy(), test.copy()
    z_train, z_test = probes.standardize(train, test)
    assert np.allclose(z_train.mean(0), 0) and np.allclose(z_train.std(0)[:2], 1)
    assert np.allclose(z_train[:, 2], 0)  # zero-variance column only centred
    expected = (test - train.mean(0)) / np.where(train.std(0) > 0, train.std(0), 1.0)
    assert np.allclose(z_test, expected)
    assert np.array_equal(before[0], train) and np.array_equal(before[1], test)


def lstsq_mse(xtr, ytr, xte, yte, c):
    """Independent: numpy's least squares on [standardised x, 1] with one-hot targets."""
    mean, std = xtr.mean(0), xtr.std(0)
    design = np.c_[(xtr - mean) / std, np.ones(len(xtr))]
    coef, *_ = np.linalg.lstsq(design, np.eye(c)[ytr], rcond=None)
    test_design = np.c_[(xte - mean) / std, np.ones(len(xte))]
    train = np.mean(np.sum((np.eye(c)[ytr] - design @ coef) ** 2, axis=1))
    test = np.mean(np.sum((np.eye(c)[yte] - test_design @ coef) ** 2, axis=1))
    return train, test


def test_mse_probe_equals_least_squares():
    x, y = blobs(120, 6)
    result = probes.mse_probe(x[:90], y[:90], x[90:], y[90:])
    train, test = lstsq_mse(x[:90], y[:90], x[90:], y[90:], 3)
    assert result.train_mse == pytest.approx(train, rel=1e-10)
    assert result.test_mse == pytest.approx(test, rel=1e-10)
    # summed over classes: sklearn's mean_squared_error (averaged over classes too) is this / C
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import mean_squared_error

    z = probes.standardize(x[:90])[0]
    fit = LinearRegression().fit(z, np.eye(3)[y[:90]])
    assert mean_squared_error(np.eye(3)[y[:90]], fit.predict(z)) * 3 == pytest.approx(result.train_mse, rel=1e-8)


def test_mse_probe_ridge_against_normal_equations():
    x, y = blobs(50, 4, seed=1)
    ridge = 0.3
    mean, std = x[:40].mean(0), x[:40].std(0)
    z = (x - mean) / std
    n = 40
    # unpenalised intercept: augmented normal equations with zero penalty on the last coefficient
    design = np.c_[z[:40], np.ones(n)]
    penalty = np.diag([ridge * n] * 4 + [0.0])
    coef = np.linalg.solve(design.T @ design + penalty, design.T @ np.eye(3)[y[:40]])
    pred = np.c_[z[40:], np.ones(10)] @ coef
    result = probes.mse_probe(x[:40], y[:40], x[40:], y[40:], ridge=ridge)
    assert result.train_mse == pytest.approx(np.mean(np.sum((np.eye(3)[y[:40]] - design @ coef) ** 2, 1)), rel=1e-10)
    assert result.test_mse == pytest.approx(np.mean(np.sum((np.eye(3)[y[40:]] - pred) ** 2, 1)), rel=1e-10)


def test_mse_probe_interpolates_when_n_is_below_d():
    x, y = blobs(30, 50, seed=2)
    result = probes.mse_probe(x[:20], y[:20], x[20:], y[20:])
    assert result.train_mse == pytest.approx(0.0, abs=1e-18)
    # the test error is the minimum-norm solution's (pinv on the centred standardised design)
    z_train, z_test = probes.standardize(x[:20], x[20:])
    target = np.eye(3)[y[:20]]
    coef = np.linalg.pinv(z_train - z_train.mean(0)) @ (target - target.mean(0))
    pred = (z_test - z_train.mean(0)) @ coef + target.mean(0)
    assert result.test_mse == pytest.approx(np.mean(np.sum((np.eye(3)[y[20:]] - pred) ** 2, 1)), rel=1e-8)
    assert probes.mse_probe(x[:20], y[:20], ridge=1.0).train_mse > 0.01


def test_logistic_probe_separable_shuffled_and_deterministic():
    x, y = blobs(200, 5, classes=2, shift=6.0, seed=3)
    good = probes.logistic_probe(x[:150], y[:150], x[150:], y[150:])
    assert good.train_accuracy >= 0.97 and good.test_accuracy >= 0.95 and good.converged
    assert probes.logistic_probe(x[:150], y[:150], x[150:], y[150:]) == good
    # labels shuffled independently of the features: held-out accuracy near chance, in-sample above it
    rng = np.random.default_rng(4)
    noise = rng.standard_normal((400, 40))
    labels = rng.integers(0, 2, 400)
    chance = probes.logistic_probe(noise[:200], labels[:200], noise[200:], labels[200:])
    assert abs(chance.test_accuracy - 0.5) < 0.1
    assert chance.train_accuracy > chance.test_accuracy + 0.1  # in-sample is optimistic


def test_logistic_probe_against_a_manual_fit():
    from sklearn.linear_model import LogisticRegression

    x, y = blobs(90, 4, seed=5)
    mean, std = x[:60].mean(0), x[:60].std(0)
    fit = LogisticRegression(C=0.5, max_iter=5000, tol=1e-8).fit((x[:60] - mean) / std, y[:60])
    expected = np.mean(fit.predict((x[60:] - mean) / std) == y[60:])
    assert probes.logistic_probe(x[:60], y[:60], x[60:], y[60:], C=0.5, tol=1e-8).test_accuracy == \
        pytest.approx(expected)


def test_test_points_do_not_influence_the_model():
    x, y = blobs(100, 3, seed=6)
    a = probes.logistic_probe(x[:60], y[:60], x[60:80], y[60:80])
    b = probes.logistic_probe(x[:60], y[:60], x[80:], y[80:])
    both = probes.logistic_probe(x[:60], y[:60], x[60:], y[60:])
    assert both.test_accuracy == pytest.approx((a.test_accuracy + b.test_accuracy) / 2)
    assert a.train_accuracy == b.train_accuracy == both.train_accuracy
    m1 = probes.mse_probe(x[:60], y[:60], x[60:80], y[60:80])
    m2 = probes.mse_probe(x[:60], y[:60], x[80:], y[80:])
    mb = probes.mse_probe(x[:60], y[:60], x[60:], y[60:])
    assert mb.test_mse == pytest.approx((m1.test_mse + m2.test_mse) / 2)


def test_probe_layers_equals_per_layer_probes():
    rng = np.random.default_rng(7)
    y = np.arange(60) % 3
    stack = rng.standard_normal((60, 4, 5)) + y[:, None, None] * np.array([0.0, 0.5, 1.0, 2.0])[None, :, None]
    before = stack.copy()
    out = probes.probe_layers(stack[:40], y[:40], stack[40:], y[40:], ridge=0.1)
    for layer in range(4):
        lg = probes.logistic_probe(stack[:40, layer], y[:40], stack[40:, layer], y[40:])
        ms = probes.mse_probe(stack[:40, layer], y[:40], stack[40:, layer], y[40:], ridge=0.1)
        assert out["train_accuracy"][layer] == lg.train_accuracy and out["test_accuracy"][layer] == lg.test_accuracy
        assert out["train_mse"][layer] == pytest.approx(ms.train_mse) and out["test_mse"][layer] == \
            pytest.approx(ms.test_mse)
    assert out["test_accuracy"][3] > out["test_accuracy"][0]
    assert np.array_equal(stack, before)
    only_train = probes.probe_layers(stack[:40], y[:40], mse=False)
    assert np.isnan(only_train["test_accuracy"]).all() and np.isnan(only_train["train_mse"]).all()


def test_bad_input_is_rejected():
    x, y = blobs(20, 3)
    with pytest.raises(ValueError, match="one class"):
        probes.logistic_probe(x, np.zeros(20, int))
    with pytest.raises(ValueError, match="one label per row"):
        probes.mse_probe(x, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        probes.mse_probe(np.where(np.eye(20, 3) > 0, np.nan, x), y)
    with pytest.raises(ValueError, match="both x_test and y_test"):
        probes.logistic_probe(x, y, x)
    with pytest.raises(ValueError, match=r"must lie in 0\.\.2"):
        probes.logistic_probe(x, y, x, y + 1)
    with pytest.raises(ValueError, match="feature shapes differ"):
        probes.mse_probe(x, y, x[:, :2], y)
    with pytest.raises(ValueError, match="empty"):
        probes.mse_probe(np.zeros((0, 3)), np.zeros(0, int))
    with pytest.raises(ValueError, match="ridge"):
        probes.mse_probe(x, y, ridge=-1.0)
    with pytest.raises(ValueError, match=r"\(N, L, d\)"):
        probes.probe_layers(x, y)


def test_majority_accuracy_against_counting():
    from ntps.probes import majority_accuracy

    rng = np.random.default_rng(5)
    for _ in range(20):
        train, test = rng.integers(0, 4, 30), rng.integers(0, 4, 17)
        counts = [sum(1 for y in train if y == c) for c in range(4)]
        majority = counts.index(max(counts))  # first of the tied maxima, as a loop finds it
        assert majority_accuracy(train, test) == sum(1 for y in test if y == majority) / len(test)
        assert majority_accuracy(train) == max(counts) / len(train)
    with pytest.raises(ValueError, match="non-empty"):
        majority_accuracy([])


def test_cohen_kappa_matches_scikit_learn_and_the_probe_reports_it():
    from sklearn.metrics import cohen_kappa_score

    from ntps.probes import cohen_kappa

    rng = np.random.default_rng(7)
    for classes in (2, 3, 6):
        truth, predicted = rng.integers(0, classes, 80), rng.integers(0, classes, 80)
        predicted[:40] = truth[:40]
        assert cohen_kappa(truth, predicted) == pytest.approx(cohen_kappa_score(truth, predicted), abs=1e-12)
    assert cohen_kappa([1, 1, 0], [1, 1, 1]) == 0.0  # a constant answer has no skill, whatever the balance
    assert np.isnan(cohen_kappa([2, 2], [2, 2]))
    y = np.arange(90) % 3
    features = rng.standard_normal((90, 2, 4))
    features[:, 1, 0] += 3 * y
    out = probe_layers(features[:60], y[:60], features[60:], y[60:], mse=False)
    for layer in range(2):
        z_train, z_test = standardize(features[:60, layer], features[60:, layer])
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1.0, solver="lbfgs", max_iter=2000, tol=1e-6).fit(z_train, y[:60])
        assert out["test_kappa"][layer] == pytest.approx(cohen_kappa_score(y[60:], model.predict(z_test)), abs=1e-9)
