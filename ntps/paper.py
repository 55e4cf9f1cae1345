"""The paper's published numbers, recomputed, and its Figure 1 rebuilt.

The values behind Figures 1-3 of Cheng et al. (arXiv 2505.17169), released by the authors
(github.com/Yu-AngCheng/NTPS, folder ``fig_plot/``, MIT licence), ship with the package as CSV
files (``ntps/paper_data/``, provenance in its ``README.md``). This module

* loads them: :func:`load_figure1`, :func:`load_figure2`, :func:`load_figure3`;
* turns each panel into (model, task, NTPS, target) pairs, :func:`paper_pairs`, and computes the
  per-model correlations across tasks with bootstrap intervals, :func:`per_model_correlations` (built
  on :func:`ntps.evaluate.correlations`);
* checks the recomputed Spearman values against the printed ones, :func:`spearman_check`, with
  :data:`PRINTED_SPEARMAN`;
* measures what the per-panel choice of (layer, k) does: :func:`configuration_differences` and
  :func:`swapped_panels`;
* reads the companion's own result tables into the same pairs, :func:`companion_pairs`;
* rebuilds Figure 1: word features projected on the top perception and autoregressive directions
  of a layer, :func:`word_projections`, and how far apart two word groups lie,
  :func:`group_separation`.

Panels and sign conventions (:data:`PANELS`): ``"2-acc"`` pairs NTPS with the in-sample accuracy of
a logistic-regression probe; ``"2-mse"`` with the in-sample MSE of a least-squares probe (so a
negative correlation is the agreement the paper means: higher NTPS, lower loss); ``"3"`` with
**minus** the LoRA gain, gain = LoRA test accuracy - linear-probe test accuracy, which is the
convention that reproduces the printed values of Figure 3 (a high NTPS predicts a small gain).
"""

from __future__ import annotations

from importlib import resources
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "MODELS",
    "MODEL_LABELS",
    "PANELS",
    "Panel",
    "PRINTED_SPEARMAN",
    "PRINTED_SOURCE",
    "FIGURE1_GROUPS",
    "COMPANION_COLUMNS",
    "load_figure1",
    "load_figure2",
    "load_figure3",
    "paper_pairs",
    "per_model_correlations",
    "spearman_check",
    "configuration_differences",
    "swapped_panels",
    "companion_pairs",
    "Directions",
    "top_directions",
    "word_features",
    "word_projections",
    "group_separation",
]

#: The paper's eight models (hub ids), in the order of its figures.
MODELS = (
    "Qwen/Qwen2-0.5B",
    "Qwen/Qwen2-1.5B",
    "Qwen/Qwen2-7B",
    "apple/OpenELM-270M",
    "apple/OpenELM-450M",
    "apple/OpenELM-1_1B",
    "apple/OpenELM-3B",
    "meta-llama/Meta-Llama-3-8B",
)

#: Short names for tables and plots.
MODEL_LABELS = {
    "Qwen/Qwen2-0.5B": "Qwen2-0.5B",
    "Qwen/Qwen2-1.5B": "Qwen2-1.5B",
    "Qwen/Qwen2-7B": "Qwen2-7B",
    "apple/OpenELM-270M": "OpenELM-270M",
    "apple/OpenELM-450M": "OpenELM-450M",
    "apple/OpenELM-1_1B": "OpenELM-1_1B",
    "apple/OpenELM-3B": "OpenELM-3B",
    "meta-llama/Meta-Llama-3-8B": "Llama-3-8B",
}


class Panel(NamedTuple):
    """One panel of the paper's figures: what NTPS is paired with.

    name: ``"2-acc"``, ``"2-mse"`` or ``"3"``; title: a short label for plots; target: what the
    correlation is computed against (the ``target`` column of :func:`paper_pairs`); agreement: the
    sign of the correlation that means "NTPS predicts the target as the paper claims".
    """

    name: str
    title: str
    target: str
    agreement: int


#: The three panels and their sign conventions.
PANELS = {
    "2-acc": Panel("2-acc", "Fig. 2: NTPS vs probe accuracy", "in-sample logistic-probe accuracy (train split)", +1),
    "2-mse": Panel("2-mse", "Fig. 2: NTPS vs probe MSE", "in-sample least-squares probe MSE (train split)", -1),
    "3": Panel("3", "Fig. 3: NTPS vs minus LoRA gain",
               "minus the LoRA gain, -(LoRA test accuracy - linear-probe test accuracy)", +1),
}

#: The Spearman correlations printed in the paper's Figures 2 (accuracy panel) and 3, per model.
#: The MSE panel's printed values are not recorded (see :data:`PRINTED_SOURCE`).
PRINTED_SPEARMAN = {
    "2-acc": dict(zip(MODELS, (0.69, 0.64, 0.82, 0.57, 0.52, 0.73, 0.66, 0.72))),
    "3": dict(zip(MODELS, (0.77, 0.67, 0.59, 0.87, 0.87, 0.90, 0.52, 0.40))),
}

PRINTED_SOURCE = (
    "The per-model Spearman correlations printed in Figure 2 (NTPS against probe accuracy) and "
    "Figure 3 (NTPS against minus the LoRA gain) of Cheng et al., arXiv 2505.17169, in the model "
    "order of MODELS. No printed values of Figure 2's MSE panel are recorded: the released "
    "repository has no Figure 2 notebook and the companion could not read them from the figure."
)

#: The word groups of the paper's Figure 1 (as in the released ``alignment_vis.py``).
FIGURE1_GROUPS = {
    "Joy": ("lovely", "enjoyable", "amazing", "delighted"),
    "Sad": ("horrible", "disappointing", "unhappy", "lonely"),
    "Be": ("am", "is", "are", "was", "were"),
}

#: The columns :func:`companion_pairs` reads from the companion's result tables, with the names it
#: also accepts for each. ``correlation`` needs at least one of the two probe targets.
COMPANION_COLUMNS = {
    "correlation": {
        "model": ("model",),
        "task": ("task", "dataset"),
        "ntps": ("ntps",),
        "probe_train_accuracy": ("probe_train_accuracy", "train_accuracy"),
        "probe_train_mse": ("probe_train_mse", "train_mse"),
        "probe_test_accuracy": ("probe_test_accuracy", "test_accuracy"),
        "probe_test_mse": ("probe_test_mse", "test_mse"),
        "selection": ("selection", "rule"),
    },
    "lora": {
        "model": ("model",),
        "task": ("task", "dataset"),
        "ntps": ("ntps",),
        "lora_test_accuracy": ("lora_test_accuracy",),
        "linear_probe_test_accuracy": ("linear_probe_test_accuracy", "probe_test_accuracy"),
        "selection": ("selection", "rule"),
    },
}

_DATA_FILES = {
    "figure1": "fig1_projections.csv",
    "figure2": "fig2_ntps_vs_probe.csv",
    "figure3": "fig3_ntps_vs_lora_gain.csv",
}


# --------------------------------------------------------------------------------------------
# the published tables
# --------------------------------------------------------------------------------------------
def _read(which: str) -> pd.DataFrame:
    path = resources.files("ntps") / "paper_data" / _DATA_FILES[which]
    if not path.is_file():
        raise FileNotFoundError(f"the published table {_DATA_FILES[which]} is missing from the installed package "
                                "(ntps/paper_data/): reinstall ntps with its package data")
    with path.open("r", encoding="utf-8") as handle:
        # The released data call a task a "dataset"; the companion calls it a task everywhere.
        return pd.read_csv(handle).rename(columns={"dataset": "task"})


def load_figure1() -> pd.DataFrame:
    """The published Figure 1 coordinates: 26 rows, columns ``space`` ("U" or "V"), ``group``
    ("Joy", "Sad", "Be"), ``index`` (the word's position in its group), ``coord1``, ``coord2``
    and ``word`` (from :data:`FIGURE1_GROUPS`)."""
    table = _read("figure1")
    table["word"] = [FIGURE1_GROUPS[g][i] for g, i in zip(table["group"], table["index"])]
    return table


def load_figure2() -> pd.DataFrame:
    """The published Figure 2 values: 192 rows (2 panels x 8 models x 12 tasks), columns
    ``figure`` ("2-acc" or "2-mse"), ``model``, ``task``, ``ntps``, ``metric``
    ("probe_train_accuracy" or "probe_train_mse") and ``value``."""
    return _read("figure2")


def load_figure3() -> pd.DataFrame:
    """The published Figure 3 values: 96 rows (8 models x 12 tasks), columns ``model``,
    ``task``, ``ntps``, ``lora_test_accuracy``, ``linear_probe_test_accuracy`` and the derived
    ``gain`` = LoRA test accuracy - linear-probe test accuracy."""
    table = _read("figure3")
    table["gain"] = table["lora_test_accuracy"] - table["linear_probe_test_accuracy"]
    return table


def paper_pairs(panels: Sequence[str] | None = None) -> pd.DataFrame:
    """The published (NTPS, target) pairs of the chosen panels (default all three), long format.

    Columns ``panel``, ``model``, ``task``, ``ntps``, ``target`` (see :data:`PANELS`: probe
    accuracy, probe MSE, or minus the LoRA gain), ``source`` = "paper" and ``selection`` = "paper".
    Models come in the paper's order.
    """
    panels = list(PANELS) if panels is None else list(panels)
    unknown = [p for p in panels if p not in PANELS]
    if unknown:
        raise ValueError(f"unknown panels {unknown}; the paper's panels are {list(PANELS)}")
    frames = []
    figure2 = load_figure2() if any(p.startswith("2-") for p in panels) else None
    for panel in panels:
        if panel == "3":
            table = load_figure3()
            frame = table[["model", "task", "ntps"]].assign(target=-table["gain"])
        else:
            table = figure2[figure2["figure"] == panel]
            frame = table[["model", "task", "ntps"]].assign(target=table["value"])
        frames.append(frame.assign(panel=panel))
    pairs = pd.concat(frames, ignore_index=True).assign(source="paper", selection="paper")
    return _ordered(pairs[["panel", "model", "task", "ntps", "target", "source", "selection"]])


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    """Sort by panel (PANELS order), then model (paper order, other models after), stable."""
    panel_rank = {p: i for i, p in enumerate(PANELS)}
    model_rank = {m: i for i, m in enumerate(MODELS)}
    keys = pd.DataFrame({"p": table["panel"].map(lambda p: panel_rank.get(p, len(panel_rank))),
                         "m": table["model"].map(lambda m: model_rank.get(m, len(model_rank)))})
    order = np.lexsort((keys["m"].to_numpy(), keys["p"].to_numpy()))
    return table.iloc[order].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# correlations
# --------------------------------------------------------------------------------------------
def per_model_correlations(pairs: pd.DataFrame, *, methods: Sequence[str] = ("spearman", "kendall", "pearson"),
                      n_boot: int = 2000, confidence: float = 0.95, seed: int = 0,
                      by: Sequence[str] = ("source", "selection", "panel", "model")) -> pd.DataFrame:
    """Per-group correlations of ``ntps`` against ``target`` across tasks, with bootstrap intervals.

    Parameters
    ----------
    pairs : pandas.DataFrame
        Long table with the columns ``ntps``, ``target`` and those grouping columns ``by`` that it
        has (from :func:`paper_pairs` or :func:`companion_pairs`; the others are skipped).
    methods : sequence of str
        Any of "spearman", "kendall" (tau-b), "pearson".
    n_boot : int
        Bootstrap resamples (tasks drawn with replacement, :func:`ntps.evaluate.correlations`).
    confidence : float
        Nominal coverage of the percentile intervals.
    seed : int
        Seed of the resampling, the same for every group (the result is deterministic).
    by : sequence of str
        The grouping columns.

    Returns
    -------
    pandas.DataFrame
        One row per group and method: the grouping columns, ``method``, ``estimate``, ``low``,
        ``high``, ``p_value``, ``n`` (tasks) and ``agrees`` (the estimate has the sign of
        agreement of its panel, see :data:`PANELS`; NaN for an unknown panel). Groups with fewer
        than 3 tasks get NaN. Rows come in the order of :data:`PANELS`, groups in their order of
        first appearance within a panel.
    """
    from .evaluate import correlations

    missing = [c for c in ("ntps", "target") if c not in pairs.columns]
    if missing:
        raise ValueError(f"pairs lacks the columns {missing}; it has {list(pairs.columns)}")
    keys = [c for c in by if c in pairs.columns]
    rows = []
    groups = pairs.groupby(keys, sort=False, dropna=False) if keys else [((), pairs)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        finite = group[np.isfinite(group["ntps"]) & np.isfinite(group["target"])]
        labels = dict(zip(keys, key))
        if len(finite) >= 3:
            stats = correlations(finite["ntps"], finite["target"], methods=methods, n_boot=n_boot,
                                 confidence=confidence, seed=seed)
        else:
            stats = pd.DataFrame({"estimate": np.nan, "low": np.nan, "high": np.nan, "p_value": np.nan,
                                  "n": len(finite)}, index=pd.Index(list(methods), name="method"))
        for method, row in stats.iterrows():
            panel = PANELS.get(labels.get("panel"))
            agrees = np.nan if panel is None or not np.isfinite(row["estimate"]) else \
                bool(np.sign(row["estimate"]) == panel.agreement)
            rows.append({**labels, "method": method, "estimate": float(row["estimate"]), "low": float(row["low"]),
                         "high": float(row["high"]), "p_value": float(row["p_value"]), "n": int(row["n"]),
                         "agrees": agrees})
    table = pd.DataFrame(rows)
    if "panel" in keys and not table.empty:  # panels in the paper's order, groups stable within
        rank = {p: i for i, p in enumerate(PANELS)}
        order = np.argsort(table["panel"].map(lambda p: rank.get(p, len(rank))).to_numpy(), kind="stable")
        table = table.iloc[order].reset_index(drop=True)
    return table


def spearman_check(*, decimals: int = 2) -> pd.DataFrame:
    """The per-model Spearman correlations recomputed from the published data, beside the printed ones.

    One row per (panel, model) of the panels with printed values (``"2-acc"`` and ``"3"``):
    ``recomputed`` (full precision, ``scipy.stats.spearmanr`` through :mod:`ntps.evaluate`),
    ``rounded`` (to ``decimals``), ``printed`` and ``matches`` (rounded == printed).
    """
    from .evaluate import correlation

    pairs = paper_pairs(list(PRINTED_SPEARMAN))
    rows = []
    for (panel, model), group in pairs.groupby(["panel", "model"], sort=False):
        value = correlation(group["ntps"], group["target"], "spearman")
        printed = PRINTED_SPEARMAN[panel][model]
        rounded = round(value, decimals)
        rows.append({"panel": panel, "model": model, "n": len(group), "recomputed": value, "rounded": rounded,
                     "printed": printed, "matches": bool(np.isclose(rounded, printed, rtol=0, atol=1e-9))})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# what the per-panel choice of (layer, k) does
# --------------------------------------------------------------------------------------------
def _panel_ntps(panel: str) -> pd.Series:
    pairs = paper_pairs([panel])
    return pairs.set_index(["model", "task"])["ntps"]


def configuration_differences(first: str = "2-acc", second: str = "2-mse", *, atol: float = 1e-9) -> pd.DataFrame:
    """How the NTPS values of two published panels differ, model by model.

    The paper chose a (layer, k) configuration per model and per panel; where the two panels used
    the same configuration their NTPS values agree for every task. One row per model (paper
    order): ``n`` (tasks in both panels), ``n_differ`` (tasks whose NTPS differ by more than
    ``atol``), ``differs`` (any does), ``max_abs_diff``, ``mean_abs_diff``, ``spearman`` (rank
    correlation of the two panels' NTPS across tasks) and the mean NTPS of each panel
    (``mean_<panel>``).
    """
    from .evaluate import correlation

    both = pd.concat([_panel_ntps(first), _panel_ntps(second)], axis=1, keys=[first, second], join="inner")
    rows = []
    for model in [m for m in MODELS if m in both.index.get_level_values("model")]:
        values = both.loc[model]
        diff = (values[first] - values[second]).abs()
        rows.append({"model": model, "n": len(values), "n_differ": int((diff > atol).sum()),
                     "differs": bool((diff > atol).any()), "max_abs_diff": float(diff.max()),
                     "mean_abs_diff": float(diff.mean()),
                     "spearman": correlation(values[first], values[second], "spearman")
                     if values[first].nunique() > 1 and values[second].nunique() > 1 else np.nan,
                     f"mean_{first}": float(values[first].mean()), f"mean_{second}": float(values[second].mean())})
    return pd.DataFrame(rows)


def swapped_panels(method: str = "spearman") -> pd.DataFrame:
    """Figure 2's correlations with each panel's own NTPS and with the other panel's NTPS.

    One row per model: ``acc_own`` = corr(NTPS of 2-acc, accuracy), ``acc_swapped`` = corr(NTPS of
    2-mse, accuracy), ``mse_own`` = corr(NTPS of 2-mse, MSE), ``mse_swapped`` = corr(NTPS of 2-acc,
    MSE). Had one configuration per model served both panels, own and swapped would be equal.
    """
    from .evaluate import correlation

    figure2 = load_figure2()
    wide = figure2.pivot_table(index=["model", "task"], columns="figure", values=["ntps", "value"])
    rows = []
    for model in [m for m in MODELS if m in wide.index.get_level_values("model")]:
        w = wide.loc[model]
        ntps_acc, ntps_mse = w[("ntps", "2-acc")], w[("ntps", "2-mse")]
        accuracy, mse = w[("value", "2-acc")], w[("value", "2-mse")]
        rows.append({"model": model, "acc_own": correlation(ntps_acc, accuracy, method),
                     "acc_swapped": correlation(ntps_mse, accuracy, method),
                     "mse_own": correlation(ntps_mse, mse, method),
                     "mse_swapped": correlation(ntps_acc, mse, method)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# the companion's own result tables
# --------------------------------------------------------------------------------------------
def _column(frame: pd.DataFrame, names: Sequence[str]) -> str | None:
    return next((name for name in names if name in frame.columns), None)


def companion_pairs(records, kind: str, *, source: str = "companion", probe: str = "train") -> pd.DataFrame:
    """A companion result table as (NTPS, target) pairs in the layout of :func:`paper_pairs`.

    Parameters
    ----------
    records : list of dict or pandas.DataFrame
        The records of ``ntps.results.load_table("correlation", ...)`` or
        ``load_table("lora", ...)``. The columns it must have are ``COMPANION_COLUMNS[kind]``:
        ``model``, ``task`` (or ``dataset``), ``ntps``, and for ``"correlation"`` at least one of
        ``probe_train_accuracy`` (or ``train_accuracy``) and ``probe_train_mse`` (or ``train_mse``),
        giving panels "2-acc" and "2-mse" (with ``probe="test"``: ``probe_test_accuracy`` or
        ``test_accuracy``, ``probe_test_mse`` or ``test_mse``); for ``"lora"`` both ``lora_test_accuracy`` and
        ``linear_probe_test_accuracy`` (or ``probe_test_accuracy``), giving panel "3" with target
        minus the gain. An optional ``selection`` (or ``rule``) column names how the configuration
        was chosen (e.g. "in-sample", "leave-one-task-out"); without it the selection is
        "as saved".
    kind : str
        "correlation" or "lora".
    source : str
        The value of the ``source`` column.
    probe : str
        For ``"correlation"``: ``"train"`` pairs NTPS with the probe scored on its own training
        texts, as the paper's Figure 2 does; ``"test"`` with the probe scored on held-out texts
        (in-sample accuracy is 1.0 on every task when the texts are fewer than the width, and then
        has no correlation with anything). Ignored for ``"lora"``, whose gain is always held out.

    Returns
    -------
    pandas.DataFrame
        Columns ``panel``, ``model``, ``task``, ``ntps``, ``target``, ``source``, ``selection``.

    Raises
    ------
    ValueError
        When a column is missing (the message names it) or the table is empty.
    """
    if kind not in COMPANION_COLUMNS:
        raise ValueError(f"kind must be one of {list(COMPANION_COLUMNS)}, got {kind!r}")
    if probe not in ("train", "test"):
        raise ValueError(f"probe must be 'train' or 'test', got {probe!r}")
    frame = records.copy() if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    if frame.empty:
        raise ValueError(f"the {kind!r} table holds no records")
    spec = COMPANION_COLUMNS[kind]
    found = {name: _column(frame, aliases) for name, aliases in spec.items()}
    required = ["model", "task", "ntps"] + (["lora_test_accuracy", "linear_probe_test_accuracy"]
                                               if kind == "lora" else [])
    missing = [f"{name} (or {' / '.join(spec[name][1:])})" if len(spec[name]) > 1 else name
               for name in required if found[name] is None]
    if kind == "correlation" and found[f"probe_{probe}_accuracy"] is None and found[f"probe_{probe}_mse"] is None:
        missing.append(f"probe_{probe}_accuracy or probe_{probe}_mse (or {probe}_accuracy / {probe}_mse)")
    if missing:
        raise ValueError(f"the {kind!r} table lacks the columns {missing}; it has {list(frame.columns)}")
    base = pd.DataFrame({"model": frame[found["model"]].astype(str), "task": frame[found["task"]].astype(str),
                         "ntps": pd.to_numeric(frame[found["ntps"]], errors="coerce"),
                         "selection": frame[found["selection"]].astype(str) if found["selection"] else "as saved"})
    frames = []
    if kind == "lora":
        gain = pd.to_numeric(frame[found["lora_test_accuracy"]], errors="coerce") - \
            pd.to_numeric(frame[found["linear_probe_test_accuracy"]], errors="coerce")
        frames.append(base.assign(panel="3", target=-gain))
    else:
        for panel, name in (("2-acc", f"probe_{probe}_accuracy"), ("2-mse", f"probe_{probe}_mse")):
            if found[name] is not None:
                frames.append(base.assign(panel=panel, target=pd.to_numeric(frame[found[name]], errors="coerce")))
    pairs = pd.concat(frames, ignore_index=True).assign(source=source)
    return _ordered(pairs[["panel", "model", "task", "ntps", "target", "source", "selection"]])


# --------------------------------------------------------------------------------------------
# Figure 1: words on the top perception and autoregressive directions
# --------------------------------------------------------------------------------------------
class Directions(NamedTuple):
    """The top-k perception and autoregressive directions of one layer (largest eigenvalue first).

    perception: (d, k) U, ``U^T sxx U = I``; perception_values: (k,) its generalised eigenvalues
    (the squared singular values of ``M = sxx^{-1/2} sxy``). autoregressive: (d, k) V,
    ``V^T c0 V = I``; autoregressive_values: (k,) its generalised eigenvalues.
    """

    perception: np.ndarray
    perception_values: np.ndarray
    autoregressive: np.ndarray
    autoregressive_values: np.ndarray


def _orient(vectors: np.ndarray) -> np.ndarray:
    """Flip each column so that its entry of largest magnitude is positive (a fixed sign rule)."""
    vectors = np.array(vectors, dtype=np.float64, copy=True)
    rows = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[rows, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return vectors * signs


def top_directions(sxx, sxy, c0, c1, k: int = 2, *, rtol: float | None = None) -> Directions:
    """The top-k perception and autoregressive directions of one layer's moments.

    ``U`` = :func:`ntps.score.perception_subspace` (sxx, sxy, k) and ``V`` =
    :func:`ntps.score.autoregressive_subspace` (c0, c1, k): generalised eigenvectors of
    (sxy sxy^T, sxx) and (c1 c1^T, c0), descending, normalised as the released code's ``eigsh``
    normalises them (``U^T sxx U = I``, ``V^T c0 V = I``). Eigenvectors have no sign: each column
    is flipped so that its largest-magnitude entry is positive. ``k`` must not exceed the rank of
    ``M = sxx^{-1/2} sxy`` (at most C, the number of classes; C = 2 gives rank 2 with these
    uncentred moments unless the two class means are parallel).
    """
    from .score import autoregressive_subspace, perception_subspace, whitened_targets

    rank = whitened_targets(sxx, sxy, rtol=rtol).rank
    if k > rank:
        raise ValueError(f"k = {k} perception directions asked for, but the whitened targets have rank {rank} "
                         "(at most the number of classes): use a task with more classes or a smaller k")
    u = perception_subspace(sxx, sxy, k, rtol=rtol)
    v = autoregressive_subspace(c0, c1, k, rtol=rtol)
    return Directions(_orient(u.vectors), np.asarray(u.values, dtype=np.float64), _orient(v.vectors),
                      np.asarray(v.values, dtype=np.float64))


def word_features(model, tokenizer, words: Sequence[str], *, layers: Sequence[int] | None = None) -> np.ndarray:
    """Mean-pooled hidden states of each word on its own: array (W, L, d), float64.

    Each word is encoded alone, with the tokenizer's special tokens (as the moments count them),
    and run through the model in its own forward pass (no padding); ``x_w = (1/T) sum_t h_t`` over
    its T tokens, at every hidden-state index in ``layers`` (0 = embedding output; default all).
    """
    import torch

    from .features import hidden_states, mean_pool

    if isinstance(words, str):
        raise TypeError("words must be a sequence of strings, not one string; wrap it in a list")
    words = list(words)
    if not words:
        raise ValueError("no words given")
    bad = [w for w in words if not isinstance(w, str) or not w.strip()]
    if bad:
        raise ValueError(f"words must be non-empty strings; got {bad[:5]}")
    rows = []
    with torch.no_grad():
        for word in words:
            states, mask = hidden_states(model, tokenizer, [word])
            rows.append(mean_pool(states, mask)[:, 0].double().cpu().numpy())  # (L+1, d)
    features = np.stack(rows)  # (W, L+1, d)
    if layers is None:
        return features
    layers = [int(l) for l in layers]
    outside = [l for l in layers if not 0 <= l < features.shape[1]]
    if outside:
        raise ValueError(f"layers {outside} do not exist: this model has hidden states 0..{features.shape[1] - 1}")
    return features[:, layers]


def word_projections(model, tokenizer, moments, *, layers: Sequence[int] | None = None,
                     groups: Mapping[str, Sequence[str]] = FIGURE1_GROUPS, k: int = 2,
                     rtol: float | None = None) -> pd.DataFrame:
    """Figure 1 rebuilt: each word's feature projected on the top-k U and V directions of layers.

    Parameters
    ----------
    model, tokenizer
        The causal LM and its tokenizer (``ntps.models.load``).
    moments : ntps.moments.Moments
        The layer moments of a labelled task from the same model (or anything with ``layers`` and
        ``layer(index)`` returning a dict with ``sxx``, ``sxy``, ``c0``, ``c1``).
    layers : sequence of int, optional
        Hidden-state indices to project at (default every layer of ``moments``).
    groups : mapping of str to sequence of str
        Group name to words (default :data:`FIGURE1_GROUPS`).
    k : int
        Directions per space (2 for a scatter plot).
    rtol : float, optional
        Relative tolerance of the ranks (``ntps.score``).

    Returns
    -------
    pandas.DataFrame
        One row per (layer, space, word): ``layer``, ``space`` ("U" perception, "V"
        autoregressive), ``group``, ``index`` (position in the group), ``word`` and ``coord1`` to
        ``coord<k>``, the inner products ``x_w^T u_j`` (or ``x_w^T v_j``) of the word's feature
        (:func:`word_features`) with the directions (:func:`top_directions`). They are plain
        inner products with the raw features, as in the released ``alignment_vis.py`` (no
        centring, no whitening of x), with the directions in descending order (``coord1`` is the
        top direction).
    """
    layers = list(moments.layers) if layers is None else [int(l) for l in layers]
    missing = [l for l in layers if l not in moments.layers]
    if missing:
        raise ValueError(f"layers {missing} are not in the moments (they hold {list(moments.layers)})")
    if not groups:
        raise ValueError("no word groups given")
    words = [(group, index, word) for group, members in groups.items() for index, word in enumerate(members)]
    features = word_features(model, tokenizer, [w for _, _, w in words], layers=layers)  # (W, L, d)
    if features.shape[-1] != np.asarray(moments.layer(layers[0])["sxx"]).shape[0]:
        raise ValueError(f"the words' features have width {features.shape[-1]} but the moments "
                         f"{np.asarray(moments.layer(layers[0])['sxx']).shape[0]}: use the same model for both")
    rows = []
    for position, layer in enumerate(layers):
        directions = top_directions(**moments.layer(layer), k=k, rtol=rtol)
        for space, basis in (("U", directions.perception), ("V", directions.autoregressive)):
            coords = features[:, position] @ basis  # (W, k)
            for (group, index, word), point in zip(words, coords):
                rows.append({"layer": layer, "space": space, "group": group, "index": index, "word": word,
                             **{f"coord{j + 1}": float(point[j]) for j in range(k)}})
    return pd.DataFrame(rows)


def group_separation(projections: pd.DataFrame, first: str = "Joy", second: str = "Sad", *,
                     by: Sequence[str] = ("layer", "space")) -> pd.DataFrame:
    """How far apart two word groups lie in each projection, in units of their own spread.

    For each group of rows ``by`` (e.g. one layer and space), with the coordinate columns
    ``coord*``: the distance between the two groups' centroids divided by the root-mean-square
    distance of their words to their own centroid,
    ``||c_a - c_b|| / sqrt(mean_w ||p_w - c_group(w)||^2)``. It does not change when a space is
    scaled or rotated, so panels with different units compare. With a handful of words per group it
    is a descriptive number, not a test. Returns ``by`` columns, ``separation``, ``n_first``,
    ``n_second``.
    """
    coords = [c for c in projections.columns if c.startswith("coord")]
    if not coords:
        raise ValueError("projections has no coord* columns")
    keys = [c for c in by if c in projections.columns]
    rows = []
    groups = projections.groupby(keys, sort=False) if keys else [((), projections)]
    for key, frame in groups:
        key = key if isinstance(key, tuple) else (key,)
        a = frame.loc[frame["group"] == first, coords].to_numpy(float)
        b = frame.loc[frame["group"] == second, coords].to_numpy(float)
        if len(a) < 2 or len(b) < 2:
            raise ValueError(f"need at least two words in each of {first!r} and {second!r}; got {len(a)} and {len(b)}")
        ca, cb = a.mean(0), b.mean(0)
        spread = np.sqrt(np.mean(np.concatenate([((a - ca) ** 2).sum(1), ((b - cb) ** 2).sum(1)])))
        value = float(np.linalg.norm(ca - cb) / spread) if spread > 0 else np.inf
        rows.append({**dict(zip(keys, key)), "separation": value, "n_first": len(a), "n_second": len(b)})
    return pd.DataFrame(rows)
