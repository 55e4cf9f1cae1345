"""Honest statistics for "does a score predict probe quality across tasks?".

The paper correlates NTPS with linear-probe quality across tasks, one point per task, after
choosing the layer and k on the same tasks the correlation is then computed on. This module
provides the pieces to do it properly:

* :func:`correlations`: Spearman, Kendall (tau-b) and Pearson correlations (point estimates and
  p-values from ``scipy.stats``) with percentile bootstrap confidence intervals, resampling the
  tasks (the pairs) with replacement;
* :func:`select_in_sample`: the paper's rule, the configuration (e.g. layer and k) whose
  correlation over all tasks is largest, and that correlation;
* :func:`select_leave_one_task_out`: for each task, choose the configuration on the **other**
  tasks only and read the left-out task's (score, target) pair at that configuration; the
  correlation of these held-out pairs estimates how well the whole procedure, selection included,
  predicts on a new task;
* :func:`select_fixed`: a configuration fixed in advance (a baseline that needs no selection);
* :func:`bootstrap_coverage`: how often the intervals cover the truth on bivariate normal data;
* :func:`permutation_test`: the correlation a selection rule finds when the targets are shuffled
  across tasks, i.e. what the search over configurations alone produces.

Tables are long ``pandas.DataFrame`` s with one row per (task, configuration): a ``task``
column, the configuration columns (e.g. ``layer``, ``k``), a score column (e.g. ``ntps``) and a
target column (e.g. ``test_accuracy``). The target may depend on the configuration (probe accuracy
at the layer the score was taken at, as in the paper).

Caveat, stated once: with a handful of tasks (14 offline, 12 in the paper) rank correlations take
few distinct values and bootstrap intervals are wide and, at such n, tend to under-cover
(:func:`bootstrap_coverage` measures by how much). Intervals of in-sample selections condition on
the chosen configuration and ignore the selection, so they are optimistic.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd
import scipy.stats

__all__ = [
    "METHODS",
    "correlation",
    "format_interval",
    "batch_correlation",
    "correlations",
    "partial_correlation",
    "bootstrap_coverage",
    "population_correlation",
    "Selection",
    "config_correlations",
    "best_config",
    "select_in_sample",
    "select_leave_one_task_out",
    "select_fixed",
    "compare_selections",
    "PermutationTest",
    "permutation_test",
]

METHODS = ("spearman", "kendall", "pearson")


# --------------------------------------------------------------------------------------------
# correlations of paired samples
# --------------------------------------------------------------------------------------------
def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.array(x, dtype=np.float64, copy=True).reshape(-1)
    y = np.array(y, dtype=np.float64, copy=True).reshape(-1)
    if x.size != y.size:
        raise ValueError(f"x has {x.size} values and y {y.size}: a correlation needs pairs")
    if x.size < 3:
        raise ValueError(f"a correlation with a confidence interval needs at least 3 pairs, got {x.size}")
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} pairs hold NaN or infinite values (positions "
                         f"{np.flatnonzero(bad)[:5].tolist()}); drop them first")
    return x, y


def format_interval(estimate, low=None, high=None) -> str:
    """``"+0.52 [+0.10, +0.85]"``; "undefined" for a missing estimate.

    Takes the three numbers, or one row (mapping or ``pandas`` row) with ``estimate``, ``low``
    and ``high``, as the tables of this module have.

    Examples
    --------
    >>> format_interval(0.5, 0.1, 0.85)
    '+0.50 [+0.10, +0.85]'
    >>> format_interval({"estimate": float("nan"), "low": 0.0, "high": 0.0})
    'undefined'
    """
    if low is None and high is None and not isinstance(estimate, (int, float, np.floating)):
        if estimate is None:
            return "undefined"
        estimate, low, high = estimate["estimate"], estimate["low"], estimate["high"]
    if estimate is None or not np.isfinite(estimate):
        return "undefined"
    return f"{estimate:+.2f} [{low:+.2f}, {high:+.2f}]"


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown correlation {method!r}; use one of {METHODS}")
    return method


def correlation(x, y, method: str = "spearman") -> float:
    """One correlation coefficient of the pairs (x_i, y_i), via ``scipy.stats``.

    spearman: Pearson correlation of the (average) ranks; kendall: tau-b; pearson: the product
    moment. NaN when x or y is constant.
    """
    x, y = _pair(x, y)
    return float(batch_correlation(x[None], y[None], _check_method(method))[0])


TIE_RTOL = 1e-10


def _snap(a: np.ndarray) -> np.ndarray:
    """Round each row to TIE_RTOL of its largest magnitude, so that values equal up to
    floating-point round-off (an NTPS of 1 - 1e-16 and one of 1) count as ties in rank statistics."""
    a = np.asarray(a, dtype=np.float64)
    scale = np.max(np.abs(np.where(np.isfinite(a), a, 0.0)), axis=-1, keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    return np.round(a / scale / TIE_RTOL) * TIE_RTOL * scale


def _ranks(a: np.ndarray) -> np.ndarray:
    return scipy.stats.rankdata(_snap(a), axis=-1)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    num = np.sum(xc * yc, axis=-1)
    den = np.sqrt(np.sum(xc**2, axis=-1) * np.sum(yc**2, axis=-1))
    # relative test for a constant row: round-off of a constant row's centring is ~eps * |mean|
    scale_x = np.maximum(np.abs(x).max(axis=-1), np.finfo(float).tiny)
    scale_y = np.maximum(np.abs(y).max(axis=-1), np.finfo(float).tiny)
    flat = (np.sqrt(np.sum(xc**2, axis=-1)) <= 1e-12 * scale_x * np.sqrt(x.shape[-1])) | \
           (np.sqrt(np.sum(yc**2, axis=-1)) <= 1e-12 * scale_y * np.sqrt(y.shape[-1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    r = np.clip(r, -1.0, 1.0)
    r[flat] = np.nan
    return r


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = _snap(x), _snap(y)
    i, j = np.triu_indices(x.shape[-1], k=1)
    sx = np.sign(x[..., j] - x[..., i])
    sy = np.sign(y[..., j] - y[..., i])
    num = np.sum(sx * sy, axis=-1)
    den = np.sqrt(np.sum(sx**2, axis=-1) * np.sum(sy**2, axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    r[den == 0] = np.nan
    return r


def batch_correlation(x, y, method: str = "spearman") -> np.ndarray:
    """Correlations of many paired samples at once: rows of x and y (..., n) -> (...).

    Same values as ``scipy.stats.spearmanr`` / ``kendalltau`` (tau-b, ties handled) /
    ``pearsonr`` on each row; NaN for a row where x or y is constant. For the rank statistics,
    values within ``TIE_RTOL = 1e-10`` of the row's largest magnitude of each other are ties (so
    round-off never creates an order). Used for the bootstrap and for scoring thousands of
    configurations.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"x has shape {x.shape} and y {y.shape}")
    method = _check_method(method)
    if method == "pearson":
        return _pearson_rows(x, y)
    if method == "spearman":
        return _pearson_rows(_ranks(x), _ranks(y))
    return _kendall_rows(x, y)


def _scipy_test(x, y, method):
    if np.isnan(batch_correlation(x[None], y[None], method)[0]):  # constant (up to round-off)
        return float("nan"), float("nan")
    if method != "pearson":
        x, y = _snap(x), _snap(y)
    if method == "spearman":
        result = scipy.stats.spearmanr(x, y)
    elif method == "kendall":
        result = scipy.stats.kendalltau(x, y)
    else:
        result = scipy.stats.pearsonr(x, y)
    return float(result.statistic), float(result.pvalue)


def correlations(x, y, *, methods: Sequence[str] = METHODS, n_boot: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> pd.DataFrame:
    """Correlations of (x_i, y_i) across tasks with percentile bootstrap confidence intervals.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Paired values, one pair per task (e.g. NTPS and probe accuracy).
    methods : sequence of {"spearman", "kendall", "pearson"}
    n_boot : int
        Bootstrap resamples: n pairs drawn with replacement, the same draws for every method.
    confidence : float
        The interval's nominal coverage (percentiles ``(1 -+ confidence)/2``).
    seed : int
        Seed of ``numpy.random.default_rng``; the result is deterministic.

    Returns
    -------
    pandas.DataFrame
        Indexed by method, with ``estimate`` and ``p_value`` (``scipy.stats``: the t/normal
        approximations of spearmanr, kendalltau and pearsonr), ``low``, ``high``, ``n`` and
        ``n_boot_valid`` (resamples where the coefficient is defined: a resample made of one
        repeated pair, or with constant x or y, has none and is dropped).
    """
    x, y = _pair(x, y)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(int(n_boot), x.size))
    rows = []
    for method in methods:
        method = _check_method(method)
        estimate, p_value = _scipy_test(x, y, method)
        boot = batch_correlation(x[idx], y[idx], method)
        boot = boot[np.isfinite(boot)]
        tail = (1.0 - confidence) / 2.0
        low, high = (np.quantile(boot, [tail, 1.0 - tail]) if boot.size else (np.nan, np.nan))
        rows.append({"method": method, "estimate": estimate, "low": float(low), "high": float(high),
                     "p_value": p_value, "n": int(x.size), "n_boot_valid": int(boot.size)})
    return pd.DataFrame(rows).set_index("method")


def _partial_rows(x: np.ndarray, y: np.ndarray, z: np.ndarray, method: str) -> np.ndarray:
    """Row-wise partial correlation of x and y given z (Pearson on ranks for Spearman)."""
    if method == "spearman":
        x, y, z = _ranks(x), _ranks(y), _ranks(z)
    r_xy, r_xz, r_yz = _pearson_rows(x, y), _pearson_rows(x, z), _pearson_rows(y, z)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (r_xy - r_xz * r_yz) / np.sqrt((1.0 - r_xz**2) * (1.0 - r_yz**2))


def partial_correlation(x, y, z, *, method: str = "spearman", n_boot: int = 2000, confidence: float = 0.95,
                        seed: int = 0) -> pd.Series:
    """Correlation of x and y across tasks once z is held fixed, with a bootstrap interval.

    The partial correlation ``(r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2))``: the
    correlation of what is left of x and of y after a linear fit on z. With ``method="spearman"``
    the three are ranked first (the rank partial correlation). Typical use: NTPS against probe
    accuracy given the majority-class share, which alone predicts much of the accuracy across tasks.
    The interval is the percentile bootstrap over tasks (resamples where it is undefined are
    dropped). Returns a Series: estimate, low, high, n, n_boot_valid.

    Examples
    --------
    >>> import numpy as np
    >>> from ntps.evaluate import partial_correlation
    >>> z = np.arange(10.0)
    >>> x, y = z + np.array([1, -1] * 5), z + np.array([1, -1] * 5)  # alike beyond z
    >>> round(float(partial_correlation(x, y, z, method="pearson", n_boot=10).estimate), 6)
    1.0
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
    x, y = _pair(x, y)
    _, z = _pair(x, z)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    estimate = float(_partial_rows(x[None], y[None], z[None], method)[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(int(n_boot), x.size))
    boot = _partial_rows(x[idx], y[idx], z[idx], method)
    boot = boot[np.isfinite(boot)]
    tail = (1.0 - confidence) / 2.0
    low, high = (np.quantile(boot, [tail, 1.0 - tail]) if boot.size else (np.nan, np.nan))
    return pd.Series({"estimate": estimate, "low": float(low), "high": float(high), "n": int(x.size),
                      "n_boot_valid": int(boot.size)})


def population_correlation(rho: float, method: str) -> float:
    """The population value of each coefficient for a bivariate normal with correlation rho:
    Pearson rho, Kendall ``(2/pi) arcsin(rho)``, Spearman ``(6/pi) arcsin(rho/2)``."""
    method = _check_method(method)
    if method == "pearson":
        return float(rho)
    if method == "kendall":
        return float(2.0 / np.pi * np.arcsin(rho))
    return float(6.0 / np.pi * np.arcsin(rho / 2.0))


def bootstrap_coverage(n: int, rho: float = 0.5, *, replications: int = 300, n_boot: int = 500,
                       confidence: float = 0.95, methods: Sequence[str] = METHODS, seed: int = 0) -> pd.DataFrame:
    """Empirical coverage of the percentile bootstrap intervals of :func:`correlations`.

    Draws ``replications`` samples of n pairs from a bivariate normal with correlation rho, builds
    each interval as :func:`correlations` does (n pairs resampled with replacement, resamples
    without a defined coefficient dropped, the same percentiles), vectorised over replications, and
    counts how often it contains :func:`population_correlation`. Returns a DataFrame indexed by
    method: ``coverage``, ``nominal``, ``truth``, ``mean_width``, ``n``.
    """
    if n < 3:
        raise ValueError(f"n must be at least 3, got {n}")
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must lie in (-1, 1), got {rho}")
    rng = np.random.default_rng(seed)
    tail = (1.0 - confidence) / 2.0
    reps, n_boot = int(replications), int(n_boot)
    # all replications at once (in chunks, to bound memory): samples (R, n), resamples (R, B, n)
    z = rng.standard_normal((reps, n, 2))
    x = z[..., 0]
    y = rho * z[..., 0] + np.sqrt(1.0 - rho**2) * z[..., 1]
    idx = rng.integers(0, n, size=(reps, n_boot, n))
    hits = {m: 0 for m in methods}
    widths = {m: [] for m in methods}
    chunk = max(1, 2_000_000 // (n_boot * n * n))
    for start in range(0, reps, chunk):
        rows = np.arange(start, min(start + chunk, reps))[:, None, None]
        bx, by = x[rows, idx[rows[:, 0, 0]]], y[rows, idx[rows[:, 0, 0]]]
        for method in methods:
            boot = batch_correlation(bx, by, method)  # (chunk, B), NaN for degenerate resamples
            low = np.nanquantile(boot, tail, axis=1)
            high = np.nanquantile(boot, 1.0 - tail, axis=1)
            truth = population_correlation(rho, method)
            hits[method] += int(np.sum((low <= truth) & (truth <= high)))
            widths[method].extend((high - low).tolist())
    return pd.DataFrame([{"method": m, "coverage": hits[m] / replications, "nominal": confidence,
                          "truth": population_correlation(rho, m), "mean_width": float(np.mean(widths[m])), "n": n}
                         for m in methods]).set_index("method")


# --------------------------------------------------------------------------------------------
# choosing the configuration (layer, k, ...)
# --------------------------------------------------------------------------------------------
class Selection(NamedTuple):
    """The outcome of a selection rule.

    rule: "in-sample", "leave-one-task-out" or "fixed".
    pairs: one row per task with the configuration used for it, its score and its target.
    correlation: the chosen coefficient over ``pairs`` (method of the selection).
    configs: the configuration chosen for each task (identical rows for in-sample and fixed).
    """

    rule: str
    pairs: pd.DataFrame
    correlation: float
    configs: pd.DataFrame


def _prepare(table: pd.DataFrame, score: str, target: str, config: Sequence[str], task: str):
    if not isinstance(table, pd.DataFrame):
        raise ValueError("table must be a pandas DataFrame with one row per (task, configuration)")
    config = list(config)
    needed = [task, *config, score, target]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks the columns {missing}; it has {list(table.columns)}")
    if not config:
        raise ValueError("config must name at least one configuration column (e.g. ['layer', 'k'])")
    if table.empty:
        raise ValueError("table is empty")
    data = table[needed].copy()
    duplicated = data.duplicated([task, *config])
    if duplicated.any():
        raise ValueError(f"{int(duplicated.sum())} rows repeat a (task, configuration): "
                         f"first {data.loc[duplicated, [task, *config]].iloc[0].tolist()}")
    return data, config


def _matrices(data: pd.DataFrame, score: str, target: str, config: list[str], task: str):
    """score and target as (n_configs, n_tasks) matrices; configs in sorted order."""
    tasks = sorted(data[task].unique(), key=str)
    wide_x = data.pivot_table(index=config, columns=task, values=score, aggfunc="first", dropna=False)
    wide_y = data.pivot_table(index=config, columns=task, values=target, aggfunc="first", dropna=False)
    wide_x = wide_x.reindex(columns=tasks).sort_index()
    wide_y = wide_y.reindex(index=wide_x.index, columns=tasks)
    return wide_x, wide_y, tasks


def config_correlations(table: pd.DataFrame, *, score: str, target: str, config: Sequence[str] = ("layer", "k"),
                        task: str = "task", method: str = "spearman") -> pd.DataFrame:
    """The correlation across tasks of every configuration: a DataFrame indexed by config with
    columns ``correlation`` (method) and ``pearson`` (tie-breaker), NaN where a configuration lacks a
    finite value for some task or is constant."""
    data, config = _prepare(table, score, target, config, task)
    wide_x, wide_y, _ = _matrices(data, score, target, config, task)
    x, y = wide_x.to_numpy(float), wide_y.to_numpy(float)
    if x.shape[1] < 3:
        raise ValueError(f"a correlation across tasks needs at least 3 tasks, got {x.shape[1]}")
    complete = np.all(np.isfinite(x) & np.isfinite(y), axis=1)
    r = np.full(x.shape[0], np.nan)
    p = np.full(x.shape[0], np.nan)
    if complete.any():
        r[complete] = batch_correlation(x[complete], y[complete], _check_method(method))
        p[complete] = batch_correlation(x[complete], y[complete], "pearson")
    return pd.DataFrame({"correlation": r, "pearson": p}, index=wide_x.index)


def best_config(table: pd.DataFrame, *, score: str, target: str, config: Sequence[str] = ("layer", "k"),
                task: str = "task", method: str = "spearman", higher_is_better: bool = True) -> dict:
    """The configuration with the largest correlation across the tasks in ``table``.

    ``higher_is_better=False`` (a target such as MSE, where a good score should go with a low
    target) maximises minus the correlation. Ties (rank correlations over few tasks take few
    values) are broken by the Pearson correlation, then by the sorted order of the configurations.
    Configurations without a finite correlation are never chosen. Returns ``{column: value}``.
    """
    data, config = _prepare(table, score, target, config, task)
    wide_x, wide_y, _ = _matrices(data, score, target, config, task)
    return _best(wide_x.to_numpy(float), wide_y.to_numpy(float), wide_x.index, config, method, higher_is_better)


def _best(x: np.ndarray, y: np.ndarray, index: pd.Index, config: list[str], method: str,
          higher_is_better: bool) -> dict:
    """best_config on (n_configs, n_tasks) matrices."""
    if x.shape[1] < 3:
        raise ValueError(f"a correlation across tasks needs at least 3 tasks, got {x.shape[1]}")
    complete = np.all(np.isfinite(x) & np.isfinite(y), axis=1)
    sign = 1.0 if higher_is_better else -1.0
    primary = np.full(x.shape[0], np.nan)
    secondary = np.full(x.shape[0], np.nan)
    if complete.any():
        primary[complete] = sign * batch_correlation(x[complete], y[complete], _check_method(method))
        secondary[complete] = sign * batch_correlation(x[complete], y[complete], "pearson")
    valid = np.isfinite(primary)
    if not valid.any():
        raise ValueError("no configuration has a defined correlation on these tasks (constant or missing values)")
    top = np.max(primary[valid])
    tied = valid & (primary >= top - 1e-12)
    tie_break = np.where(tied & np.isfinite(secondary), secondary, -np.inf)
    if np.all(tie_break == -np.inf):
        chosen = int(np.flatnonzero(tied)[0])
    else:
        chosen = int(np.flatnonzero(tie_break == tie_break.max())[0])
    key = index[chosen]
    key = key if isinstance(key, tuple) else (key,)
    return {name: (value.item() if hasattr(value, "item") else value) for name, value in zip(config, key)}


def _lookup(data: pd.DataFrame, task_col: str, task_value, chosen: dict) -> pd.Series:
    mask = data[task_col] == task_value
    for name, value in chosen.items():
        mask &= data[name] == value
    rows = data[mask]
    if len(rows) != 1:
        raise ValueError(f"task {task_value!r} has {len(rows)} rows for configuration {chosen}")
    return rows.iloc[0]


def _selection(rule, data, score, target, config, task, method, choices: dict) -> Selection:
    rows = []
    for name, chosen in choices.items():
        row = _lookup(data, task, name, chosen)
        rows.append({task: name, **chosen, score: float(row[score]), target: float(row[target])})
    pairs = pd.DataFrame(rows)
    finite = np.isfinite(pairs[score]) & np.isfinite(pairs[target])
    value = float(batch_correlation(pairs.loc[finite, score].to_numpy()[None], pairs.loc[finite, target].to_numpy()[None],
                                    method)[0]) if finite.sum() >= 3 else float("nan")
    configs = pairs[[task, *config]].set_index(task)
    return Selection(rule, pairs, value, configs)


def select_in_sample(table: pd.DataFrame, *, score: str, target: str, config: Sequence[str] = ("layer", "k"),
                     task: str = "task", method: str = "spearman", higher_is_better: bool = True) -> Selection:
    """The paper's rule: one configuration chosen to maximise the correlation over **all** tasks,
    and that (optimistic) correlation. See :func:`best_config` for ties and ``higher_is_better``."""
    data, config = _prepare(table, score, target, config, task)
    chosen = best_config(data, score=score, target=target, config=config, task=task, method=method,
                         higher_is_better=higher_is_better)
    tasks = sorted(data[task].unique(), key=str)
    return _selection("in-sample", data, score, target, config, task, method, {d: chosen for d in tasks})


def select_leave_one_task_out(table: pd.DataFrame, *, score: str, target: str,
                                 config: Sequence[str] = ("layer", "k"), task: str = "task",
                                 method: str = "spearman", higher_is_better: bool = True,
                                 choose: Callable[[pd.DataFrame], dict] | None = None) -> Selection:
    """Held-out selection: for each task d, choose the configuration on the other tasks only
    (``choose(table without d)``, default :func:`best_config`), then take d's own (score, target) at
    that configuration. The correlation of these n held-out pairs (each task at the configuration
    chosen without it) is the honest estimate of the selection procedure. The rows of d are removed
    before ``choose`` sees the table, so nothing about d (values, NaNs, its name) enters its choice.
    """
    data, config = _prepare(table, score, target, config, task)
    tasks = sorted(data[task].unique(), key=str)
    if len(tasks) < 4:
        raise ValueError(f"leave-one-task-out needs at least 4 tasks (3 to choose on), got {len(tasks)}")
    choices = {}
    if choose is None:
        wide_x, wide_y, columns = _matrices(data, score, target, config, task)
        x, y = wide_x.to_numpy(float), wide_y.to_numpy(float)
    for position, held_out in enumerate(tasks):
        if choose is None:
            # the same computation as best_config(table without held_out), on its columns only
            keep = [j for j, name in enumerate(columns) if name != held_out]
            choices[held_out] = _best(x[:, keep], y[:, keep], wide_x.index, config, method, higher_is_better)
            continue
        others = data[data[task] != held_out].reset_index(drop=True)
        chosen = dict(choose(others))
        if set(chosen) != set(config):
            raise ValueError(f"choose returned {sorted(chosen)}, expected the configuration columns {config}")
        choices[held_out] = {name: chosen[name] for name in config}
    return _selection("leave-one-task-out", data, score, target, config, task, method, choices)


def select_fixed(table: pd.DataFrame, chosen: dict, *, score: str, target: str, task: str = "task",
                 method: str = "spearman") -> Selection:
    """A configuration fixed in advance (``chosen``, e.g. ``{"layer": 15, "k": 288}``) for every
    task: no selection at all, the baseline the other rules must beat."""
    config = list(chosen)
    data, config = _prepare(table, score, target, config, task)
    tasks = sorted(data[task].unique(), key=str)
    return _selection("fixed", data, score, target, config, task, method, {d: dict(chosen) for d in tasks})


def compare_selections(table: pd.DataFrame, *, score: str, target: str, fixed: dict | None = None,
                       config: Sequence[str] = ("layer", "k"), task: str = "task", method: str = "spearman",
                       higher_is_better: bool = True, n_boot: int = 2000, confidence: float = 0.95,
                       seed: int = 0) -> tuple[pd.DataFrame, dict[str, Selection]]:
    """In-sample, leave-one-task-out and (if given) fixed selection side by side.

    Returns ``(summary, selections)``: summary has one row per rule with the correlation
    (``method``) over the rule's pairs, its bootstrap interval (:func:`correlations`, resampling
    tasks), the p-value and the configurations used; selections maps rule -> :class:`Selection`.
    """
    selections = {
        "in-sample": select_in_sample(table, score=score, target=target, config=config, task=task,
                                      method=method, higher_is_better=higher_is_better),
        "leave-one-task-out": select_leave_one_task_out(table, score=score, target=target, config=config,
                                                              task=task, method=method,
                                                              higher_is_better=higher_is_better),
    }
    if fixed is not None:
        selections["fixed"] = select_fixed(table, fixed, score=score, target=target, task=task, method=method)
    rows = []
    for rule, sel in selections.items():
        finite = sel.pairs[[score, target]].notna().all(axis=1)
        stats = correlations(sel.pairs.loc[finite, score], sel.pairs.loc[finite, target], methods=[method],
                             n_boot=n_boot, confidence=confidence, seed=seed).loc[method]
        used = sel.configs.drop_duplicates()
        rows.append({"rule": rule, "estimate": stats["estimate"], "low": stats["low"], "high": stats["high"],
                     "p_value": stats["p_value"], "n": int(stats["n"]),
                     "configs": "; ".join(", ".join(f"{k}={v}" for k, v in row.items()) for _, row in used.iterrows())})
    return pd.DataFrame(rows).set_index("rule"), selections


class PermutationTest(NamedTuple):
    """A selection-aware test: the observed correlation of a rule against its null distribution."""

    observed: float
    null: np.ndarray  # (n_permutations,) the rule's correlation with the targets shuffled across tasks
    p_value: float  # (1 + #{null >= observed}) / (1 + n_permutations), in the rule's good direction


def permutation_test(table: pd.DataFrame, *, score: str, target: str, config: Sequence[str] = ("layer", "k"),
                     task: str = "task", method: str = "spearman", higher_is_better: bool = True,
                     rule: str = "in-sample", n_permutations: int = 500, seed: int = 0) -> PermutationTest:
    """What correlation would the selection rule report if the score told nothing about the target?

    Under the null, which task's targets go with which task's scores is arbitrary: each
    permutation reassigns the targets of whole tasks (all configurations of task j get the
    targets of task pi(j)), reruns the rule (``"in-sample"`` or ``"leave-one-task-out"``,
    including its search over every configuration) and records its correlation. The p-value counts
    the permutations at least as good as the observed value (``higher_is_better`` decides the
    direction), with the usual +1 correction. This accounts for the selection, which the p-values
    of ``scipy.stats`` at a chosen configuration do not.
    """
    if rule not in ("in-sample", "leave-one-task-out"):
        raise ValueError(f"rule must be 'in-sample' or 'leave-one-task-out', got {rule!r}")
    data, config = _prepare(table, score, target, config, task)
    wide_x, wide_y, tasks = _matrices(data, score, target, config, task)
    x, y = wide_x.to_numpy(float), wide_y.to_numpy(float)
    n = len(tasks)
    if rule == "leave-one-task-out" and n < 4:
        raise ValueError(f"leave-one-task-out needs at least 4 tasks, got {n}")
    method = _check_method(method)

    def run(y_matrix: np.ndarray) -> float:
        if rule == "in-sample":
            chosen = _best(x, y_matrix, wide_x.index, config, method, higher_is_better)
            row = wide_x.index.get_loc(tuple(chosen[c] for c in config) if len(config) > 1 else chosen[config[0]])
            return float(batch_correlation(x[row][None], y_matrix[row][None], method)[0])
        xs, ys = np.empty(n), np.empty(n)
        for j in range(n):
            keep = [i for i in range(n) if i != j]
            chosen = _best(x[:, keep], y_matrix[:, keep], wide_x.index, config, method, higher_is_better)
            row = wide_x.index.get_loc(tuple(chosen[c] for c in config) if len(config) > 1 else chosen[config[0]])
            xs[j], ys[j] = x[row, j], y_matrix[row, j]
        return float(batch_correlation(xs[None], ys[None], method)[0])

    observed = run(y)
    rng = np.random.default_rng(seed)
    null = np.empty(int(n_permutations))
    for i in range(int(n_permutations)):
        null[i] = run(y[:, rng.permutation(n)])
    sign = 1.0 if higher_is_better else -1.0
    finite = null[np.isfinite(null)]
    p_value = (1 + np.sum(sign * finite >= sign * observed - 1e-12)) / (1 + finite.size)
    return PermutationTest(observed, null, float(p_value))
