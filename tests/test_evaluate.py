"""Correlations, bootstrap intervals and the selection rules: coverage on synthetic data, agreement
with scipy.stats, and held-out selection that never sees the dataset it is evaluated on."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from ntps import evaluate


# --------------------------------------------------------------------------------------------
# correlations
# --------------------------------------------------------------------------------------------
def test_batch_correlation_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 4, 9).astype(float)  # many ties
        y = x + rng.integers(-2, 3, 9)
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        got = {m: evaluate.batch_correlation(x[None], y[None], m)[0] for m in evaluate.METHODS}
        assert got["spearman"] == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
        assert got["kendall"] == pytest.approx(scipy.stats.kendalltau(x, y).statistic, abs=1e-12)
        assert got["pearson"] == pytest.approx(scipy.stats.pearsonr(x, y).statistic, abs=1e-12)
    assert np.isnan(evaluate.batch_correlation(np.ones((1, 5)), np.arange(5.0)[None], "spearman")[0])
    assert np.isnan(evaluate.batch_correlation(np.ones((1, 5)) * 0.1, np.arange(5.0)[None], "pearson")[0])


def test_correlations_table_is_deterministic_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(30)
    y = x + rng.standard_normal(30)
    x0 = x.copy()
    table = evaluate.correlations(x, y, n_boot=500, seed=3)
    assert list(table.index) == list(evaluate.METHODS)
    for method in evaluate.METHODS:
        row = table.loc[method]
        assert row["low"] < row["estimate"] < row["high"]
        assert row["n"] == 30 and row["n_boot_valid"] == 500
    assert table.loc["spearman", "p_value"] == pytest.approx(scipy.stats.spearmanr(x, y).pvalue)
    pd.testing.assert_frame_equal(table, evaluate.correlations(x, y, n_boot=500, seed=3))
    assert np.array_equal(x, x0)
    with pytest.raises(ValueError, match="NaN"):
        evaluate.correlations(np.r_[x[:5], np.nan], y[:6])
    with pytest.raises(ValueError, match="pairs"):
        evaluate.correlations(x, y[:-1])
    with pytest.raises(ValueError, match="at least 3"):
        evaluate.correlations(x[:2], y[:2])
    with pytest.raises(ValueError, match="unknown correlation"):
        evaluate.correlations(x, y, methods=["cosine"])


def test_bootstrap_intervals_cover_at_about_the_nominal_rate():
    coverage = evaluate.bootstrap_coverage(40, rho=0.5, replications=250, n_boot=300, confidence=0.9, seed=11)
    # 250 replications: the binomial standard error at 0.9 is 0.019; the percentile bootstrap is
    # known to under-cover a little for Pearson's r at moderate n
    for method in evaluate.METHODS:
        assert 0.82 <= coverage.loc[method, "coverage"] <= 0.96, coverage
    assert coverage.loc["kendall", "truth"] == pytest.approx(2 / np.pi * np.arcsin(0.5))


def test_coverage_check_can_fail():
    # the same machinery judged against a wrong truth (rho itself for Kendall's tau) misses badly
    rng = np.random.default_rng(12)
    misses = 0
    for _ in range(100):
        s = rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], size=60)
        row = evaluate.correlations(s[:, 0], s[:, 1], methods=["kendall"], n_boot=300,
                                    seed=int(rng.integers(1 << 30))).loc["kendall"]
        misses += not (row["low"] <= 0.8 <= row["high"])
    assert misses > 50


# --------------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------------
def make_table(n_datasets=8, layers=(0, 1, 2, 3), ks=(1, 2, 3), good=(2, 3), seed=0):
    """Score = target + noise at the planted good config; pure noise elsewhere. The target depends
    on the layer only (as probe accuracy does)."""
    rng = np.random.default_rng(seed)
    rows = []
    names = [f"d{i}" for i in range(n_datasets)]
    target = {(name, layer): rng.uniform(0.5, 1.0) for name in names for layer in layers}
    for name in names:
        for layer in layers:
            for k in ks:
                noise = rng.standard_normal() * (0.01 if (layer, k) == good else 1.0)
                rows.append({"task": name, "layer": layer, "k": k,
                             "score": target[name, layer] + noise, "accuracy": target[name, layer]})
    return pd.DataFrame(rows)


def test_in_sample_selection_finds_the_planted_configuration():
    table = make_table()
    before = table.copy()
    sel = evaluate.select_in_sample(table, score="score", target="accuracy")
    assert sel.configs.drop_duplicates().to_dict("records") == [{"layer": 2, "k": 3}]
    assert sel.correlation > 0.9
    assert len(sel.pairs) == 8 and set(sel.pairs["task"]) == {f"d{i}" for i in range(8)}
    pd.testing.assert_frame_equal(table, before)
    # a target where low is good: the most negative correlation is chosen
    flipped = table.assign(loss=-table["accuracy"])
    sel = evaluate.select_in_sample(flipped, score="score", target="loss", higher_is_better=False)
    assert sel.configs.drop_duplicates().to_dict("records") == [{"layer": 2, "k": 3}] and sel.correlation < -0.9


def test_leave_one_task_out_never_sees_the_left_out_task():
    table = make_table(seed=1)
    baseline = evaluate.select_leave_one_task_out(table, score="score", target="accuracy")
    for held_out in sorted(table["task"].unique()):
        # poison everything about the held-out dataset: its choice must not move
        poisoned = table.copy()
        rows = poisoned["task"] == held_out
        rng = np.random.default_rng(abs(hash(held_out)) % 1000)
        poisoned.loc[rows, "score"] = rng.standard_normal(rows.sum()) * 1e6
        poisoned.loc[rows & (poisoned["k"] == 1), "accuracy"] = np.nan
        again = evaluate.select_leave_one_task_out(poisoned, score="score", target="accuracy")
        assert again.configs.loc[held_out].to_dict() == baseline.configs.loc[held_out].to_dict()
    # and each fold's choice is what best_config makes of the other datasets alone
    for held_out, chosen in baseline.configs.iterrows():
        others = table[table["task"] != held_out]
        assert evaluate.best_config(others, score="score", target="accuracy") == chosen.to_dict()


def test_leave_one_task_out_with_a_spy():
    table = make_table(seed=2)
    seen = []

    def spy(others):
        seen.append(set(others["task"]))
        return evaluate.best_config(others, score="score", target="accuracy")

    sel = evaluate.select_leave_one_task_out(table, score="score", target="accuracy", choose=spy)
    names = sorted(table["task"].unique())
    assert len(seen) == len(names)
    for held_out, visible in zip(names, seen):
        assert held_out not in visible and visible == set(names) - {held_out}
    # the pairs are each dataset's own values at its fold's configuration
    for _, row in sel.pairs.iterrows():
        match = table[(table["task"] == row["task"]) & (table["layer"] == row["layer"]) & (table["k"] == row["k"])]
        assert match["score"].item() == row["score"] and match["accuracy"].item() == row["accuracy"]
    default = evaluate.select_leave_one_task_out(table, score="score", target="accuracy")
    pd.testing.assert_frame_equal(sel.configs, default.configs)


def test_held_out_selection_is_not_optimistic_on_pure_noise():
    # no configuration predicts anything: in-sample selection still reports a large correlation,
    # held-out selection does not (on average over many tables)
    in_sample, held_out = [], []
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        rows = [{"task": f"d{i}", "layer": layer, "k": k, "score": rng.standard_normal(),
                 "accuracy": acc} for i, acc in enumerate(rng.uniform(size=8)) for layer in range(5) for k in range(4)]
        table = pd.DataFrame(rows)
        in_sample.append(evaluate.select_in_sample(table, score="score", target="accuracy").correlation)
        held_out.append(evaluate.select_leave_one_task_out(table, score="score", target="accuracy").correlation)
    assert np.mean(in_sample) > 0.6
    assert abs(np.nanmean(held_out)) < 0.25


def test_ties_are_broken_by_pearson_then_order():
    rows = []
    for i, acc in enumerate([0.1, 0.2, 0.3, 0.4, 0.5]):
        rows.append({"task": f"d{i}", "layer": 0, "score": acc ** 3, "accuracy": acc})  # Spearman 1, Pearson < 1
        rows.append({"task": f"d{i}", "layer": 1, "score": 2 * acc, "accuracy": acc})  # Spearman 1, Pearson 1
    table = pd.DataFrame(rows)
    assert evaluate.best_config(table, score="score", target="accuracy", config=["layer"]) == {"layer": 1}


def test_fixed_and_compare_selections():
    table = make_table(seed=3)
    fixed = evaluate.select_fixed(table, {"layer": 1, "k": 2}, score="score", target="accuracy")
    assert fixed.configs.drop_duplicates().to_dict("records") == [{"layer": 1, "k": 2}]
    manual = table[(table.layer == 1) & (table.k == 2)].sort_values("task")
    assert fixed.correlation == pytest.approx(scipy.stats.spearmanr(manual.score, manual.accuracy).statistic)
    summary, selections = evaluate.compare_selections(table, score="score", target="accuracy",
                                                      fixed={"layer": 1, "k": 2}, n_boot=200)
    assert list(summary.index) == ["in-sample", "leave-one-task-out", "fixed"]
    assert summary.loc["fixed", "estimate"] == pytest.approx(fixed.correlation)
    assert summary.loc["in-sample", "estimate"] == pytest.approx(selections["in-sample"].correlation)
    assert (summary["low"] <= summary["estimate"] + 1e-12).all() and (summary["estimate"] <= summary["high"] + 1e-12).all()


def test_selection_input_errors():
    table = make_table()
    with pytest.raises(ValueError, match="lacks the columns"):
        evaluate.select_in_sample(table, score="ntps", target="accuracy")
    with pytest.raises(ValueError, match="repeat"):
        evaluate.select_in_sample(pd.concat([table, table.head(1)]), score="score", target="accuracy")
    with pytest.raises(ValueError, match="at least 4 tasks"):
        evaluate.select_leave_one_task_out(table[table.task.isin(["d0", "d1", "d2"])], score="score",
                                           target="accuracy")
    with pytest.raises(ValueError, match="no configuration"):
        evaluate.best_config(table.assign(score=1.0), score="score", target="accuracy")
    with pytest.raises(ValueError, match="empty"):
        evaluate.select_in_sample(table.iloc[:0], score="score", target="accuracy")


def test_round_off_differences_are_ties():
    x = np.array([1.0, 1.0 - 1e-16, 1.0 - 2.2e-16, 1.0, 1.0 - 1.1e-16])  # an NTPS of 1, up to round-off
    y = np.array([0.9, 0.5, 0.7, 0.6, 0.8])
    for method in ("spearman", "kendall"):
        assert np.isnan(evaluate.correlation(x, y, method))
    table = evaluate.correlations(x, y, n_boot=50)
    assert np.isnan(table.loc["spearman", "estimate"]) and np.isnan(table.loc["kendall", "estimate"])
    z = np.array([0.1, 0.1 + 1e-14, 0.3, 0.2, 0.5])  # a round-off pair tied, real differences kept
    assert evaluate.correlation(z, y, "kendall") == pytest.approx(
        scipy.stats.kendalltau([0.1, 0.1, 0.3, 0.2, 0.5], y).statistic)


def test_permutation_test_accounts_for_the_search():
    planted = make_table(seed=4)
    result = evaluate.permutation_test(planted, score="score", target="accuracy", n_permutations=99, seed=0)
    assert result.observed == pytest.approx(
        evaluate.select_in_sample(planted, score="score", target="accuracy").correlation)
    assert result.p_value <= 0.05 and result.null.shape == (99,)
    held = evaluate.permutation_test(planted, score="score", target="accuracy", rule="leave-one-task-out",
                                     n_permutations=49, seed=0)
    assert held.observed == pytest.approx(
        evaluate.select_leave_one_task_out(planted, score="score", target="accuracy").correlation)
    # pure noise: the search still finds large in-sample correlations, and the test is not fooled
    rng = np.random.default_rng(5)
    rows = [{"task": f"d{i}", "layer": layer, "k": k, "score": rng.standard_normal(), "accuracy": acc}
            for i, acc in enumerate(rng.uniform(size=8)) for layer in range(5) for k in range(4)]
    noise = evaluate.permutation_test(pd.DataFrame(rows), score="score", target="accuracy", n_permutations=99)
    assert noise.observed > 0.5 and np.median(noise.null) > 0.5 and noise.p_value > 0.05
    with pytest.raises(ValueError, match="rule"):
        evaluate.permutation_test(planted, score="score", target="accuracy", rule="fixed")


def test_partial_correlation_is_the_correlation_of_residuals():
    from ntps.evaluate import partial_correlation

    rng = np.random.default_rng(4)
    z = rng.standard_normal(14)
    x = 0.8 * z + rng.standard_normal(14)
    y = 0.6 * z + 0.5 * x + rng.standard_normal(14)

    def residual(a, b):  # what is left of a after least squares on [1, b]
        design = np.column_stack([np.ones_like(b), b])
        return a - design @ np.linalg.lstsq(design, a, rcond=None)[0]

    pearson = partial_correlation(x, y, z, method="pearson", n_boot=200)
    expected = np.corrcoef(residual(x, z), residual(y, z))[0, 1]
    assert pearson.estimate == pytest.approx(expected, abs=1e-12)
    rank = lambda a: scipy.stats.rankdata(a)
    spearman = partial_correlation(x, y, z, n_boot=200)
    expected = np.corrcoef(residual(rank(x), rank(z)), residual(rank(y), rank(z)))[0, 1]
    assert spearman.estimate == pytest.approx(expected, abs=1e-12)
    assert spearman.low <= spearman.estimate <= spearman.high and spearman.n == 14
    # y built from z alone: nothing is left to correlate with x
    only_z = partial_correlation(x, 2 * z + 1, z, method="pearson", n_boot=50)
    assert np.isnan(only_z.estimate)
    with pytest.raises(ValueError, match="method"):
        partial_correlation(x, y, z, method="kendall")
