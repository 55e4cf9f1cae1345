"""ntps.paper: the published numbers, their recomputed correlations, and the Figure 1 rebuild."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from ntps import paper

DATA = Path(__file__).parent / "data" / "offline"


# -- the published tables ----------------------------------------------------------------------
def test_loaders_shapes_and_columns():
    fig1, fig2, fig3 = paper.load_figure1(), paper.load_figure2(), paper.load_figure3()
    assert fig1.shape == (26, 6)
    assert list(fig1.columns) == ["space", "group", "index", "coord1", "coord2", "word"]
    assert fig1.groupby("space").size().to_dict() == {"U": 13, "V": 13}
    assert fig1.loc[(fig1["group"] == "Be") & (fig1["index"] == 4), "word"].unique().tolist() == ["were"]
    assert fig2.shape == (192, 6)
    assert list(fig2.columns) == ["figure", "model", "task", "ntps", "metric", "value"]
    assert fig2.groupby(["figure", "metric"]).size().to_dict() == {("2-acc", "probe_train_accuracy"): 96,
                                                                  ("2-mse", "probe_train_mse"): 96}
    assert set(fig2["model"]) == set(paper.MODELS) == set(fig3["model"])
    assert fig2["task"].nunique() == 12 and set(fig3["task"]) == set(fig2["task"])
    assert fig3.shape == (96, 6)
    np.testing.assert_allclose(fig3["gain"], fig3["lora_test_accuracy"] - fig3["linear_probe_test_accuracy"])
    for table in (fig1, fig2, fig3):
        numeric = table.select_dtypes("number")
        assert np.isfinite(numeric.to_numpy()).all()


def test_loaders_return_fresh_copies():
    first = paper.load_figure2()
    first.loc[0, "ntps"] = -1.0
    assert paper.load_figure2().loc[0, "ntps"] != -1.0


def test_paper_pairs_layout_and_signs():
    pairs = paper.paper_pairs()
    assert pairs.shape == (288, 7)
    assert pairs.groupby("panel").size().to_dict() == {"2-acc": 96, "2-mse": 96, "3": 96}
    assert list(pairs["panel"].unique()) == list(paper.PANELS)
    assert list(pairs.loc[pairs["panel"] == "2-acc", "model"].unique()) == list(paper.MODELS)
    fig3 = paper.load_figure3().set_index(["model", "task"])
    three = pairs[pairs["panel"] == "3"].set_index(["model", "task"])
    np.testing.assert_allclose(three["target"], -fig3.loc[three.index, "gain"])
    with pytest.raises(ValueError, match="unknown panels"):
        paper.paper_pairs(["4"])


# -- the "done when": the printed values, recomputed ------------------------------------
def test_recomputed_spearman_equals_printed_to_two_decimals():
    check = paper.spearman_check()
    assert len(check) == 16
    assert check["matches"].all(), check[~check["matches"]]
    assert (np.abs(check["recomputed"] - check["printed"]) <= 0.005).all()
    # the printed constant is in the paper's model order
    assert list(paper.PRINTED_SPEARMAN["2-acc"].values()) == [0.69, 0.64, 0.82, 0.57, 0.52, 0.73, 0.66, 0.72]
    assert list(paper.PRINTED_SPEARMAN["3"].values()) == [0.77, 0.67, 0.59, 0.87, 0.87, 0.90, 0.52, 0.40]


def test_figure3_needs_minus_the_gain():
    """With the gain itself (not minus it) every correlation flips sign and none is printed."""
    fig3 = paper.load_figure3()
    for model, group in fig3.groupby("model"):
        plain = group[["ntps", "gain"]].corr(method="spearman").iloc[0, 1]
        assert np.isclose(-plain, paper.PRINTED_SPEARMAN["3"][model], atol=0.005)


def test_per_model_correlations_matches_scipy_and_is_deterministic():
    import scipy.stats

    pairs = paper.paper_pairs(["2-mse"])
    table = paper.per_model_correlations(pairs, n_boot=300, seed=3)
    assert set(table["method"]) == {"spearman", "kendall", "pearson"}
    assert len(table) == 8 * 3
    assert {"source", "selection", "panel", "model", "estimate", "low", "high", "p_value", "n", "agrees"} <= \
        set(table.columns)
    one = pairs[pairs["model"] == paper.MODELS[0]]
    row = table[(table["model"] == paper.MODELS[0]) & (table["method"] == "kendall")].iloc[0]
    assert np.isclose(row["estimate"], scipy.stats.kendalltau(one["ntps"], one["target"]).statistic)
    assert row["low"] <= row["estimate"] <= row["high"]
    assert (table.loc[table["method"] == "spearman", "agrees"]).all()  # negative: higher NTPS, lower MSE
    again = paper.per_model_correlations(pairs, n_boot=300, seed=3)
    pd.testing.assert_frame_equal(table, again)


def test_per_model_correlations_small_groups_and_bad_input():
    pairs = pd.DataFrame({"panel": "2-acc", "model": "m", "task": ["a", "b"], "ntps": [0.1, 0.2],
                          "target": [0.5, 0.6]})
    table = paper.per_model_correlations(pairs, methods=("spearman",), n_boot=10)
    assert len(table) == 1 and np.isnan(table.loc[0, "estimate"]) and table.loc[0, "n"] == 2
    with pytest.raises(ValueError, match="lacks the columns"):
        paper.per_model_correlations(pairs.drop(columns="target"))


# -- the per-panel (layer, k) choice -------------------------------------------------------------
def test_six_of_eight_models_differ_between_the_figure2_panels():
    diff = paper.configuration_differences("2-acc", "2-mse")
    assert list(diff["model"]) == list(paper.MODELS)
    assert int(diff["differs"].sum()) == 6
    same = set(diff.loc[~diff["differs"], "model"])
    assert same == {"Qwen/Qwen2-1.5B", "Qwen/Qwen2-7B"}
    assert (diff.loc[~diff["differs"], "max_abs_diff"] == 0).all()
    assert (diff.loc[diff["differs"], "n_differ"] == 12).all()


def test_swapped_panels():
    swapped = paper.swapped_panels()
    check = paper.spearman_check().query("panel == '2-acc'").set_index("model")["recomputed"]
    np.testing.assert_allclose(swapped.set_index("model")["acc_own"], check.loc[list(swapped["model"])])
    same = swapped["model"].isin(["Qwen/Qwen2-1.5B", "Qwen/Qwen2-7B"])
    np.testing.assert_allclose(swapped.loc[same, "acc_own"], swapped.loc[same, "acc_swapped"])
    assert (swapped.loc[~same, "acc_own"] > swapped.loc[~same, "acc_swapped"]).all()


# -- the companion's tables ------------------------------------------------------------------------
def test_companion_pairs_correlation_and_lora():
    records = [{"model": "smollm2-135m", "task": f"t{i}", "ntps": i / 10, "train_accuracy": 0.5 + i / 20,
                "train_mse": 1 - i / 10, "rule": "leave-one-task-out", "layer": 3} for i in range(5)]
    pairs = paper.companion_pairs(records, "correlation")
    assert list(pairs.columns) == ["panel", "model", "task", "ntps", "target", "source", "selection"]
    assert pairs.groupby("panel").size().to_dict() == {"2-acc": 5, "2-mse": 5}
    assert set(pairs["selection"]) == {"leave-one-task-out"} and set(pairs["source"]) == {"companion"}
    table = paper.per_model_correlations(pairs, methods=("spearman",), n_boot=50)
    assert table.set_index("panel")["estimate"].to_dict() == pytest.approx({"2-acc": 1.0, "2-mse": -1.0})

    lora = pd.DataFrame({"model": "m", "task": list("abcd"), "ntps": [0.1, 0.2, 0.3, 0.4],
                         "lora_test_accuracy": [0.9, 0.9, 0.9, 0.9],
                         "linear_probe_test_accuracy": [0.5, 0.6, 0.7, 0.8]})
    three = paper.companion_pairs(lora, "lora")
    assert set(three["panel"]) == {"3"} and set(three["selection"]) == {"as saved"}
    np.testing.assert_allclose(three["target"], [-0.4, -0.3, -0.2, -0.1])


def test_companion_pairs_held_out_probe():
    records = [{"model": "m", "task": f"t{i}", "ntps": i / 10, "train_accuracy": 1.0, "train_mse": 0.0,
                "test_accuracy": 0.9 - i / 20, "test_mse": [0.3, 0.1, 0.4, 0.2, 0.5][i], "rule": "fixed"}
               for i in range(5)]
    train = paper.per_model_correlations(paper.companion_pairs(records, "correlation"), methods=("spearman",), n_boot=20)
    assert train["estimate"].isna().all()  # a constant in-sample target has no correlation
    test_pairs = paper.companion_pairs(records, "correlation", probe="test")
    np.testing.assert_allclose(test_pairs.loc[test_pairs.panel == "2-acc", "target"], [0.9, 0.85, 0.8, 0.75, 0.7])
    held = paper.per_model_correlations(test_pairs, methods=("spearman",), n_boot=20).set_index("panel")["estimate"]
    assert held["2-acc"] == pytest.approx(-1.0)
    assert held["2-mse"] == pytest.approx(scipy.stats.spearmanr(np.arange(5), [0.3, 0.1, 0.4, 0.2, 0.5])[0])
    with pytest.raises(ValueError, match="probe_test_accuracy or probe_test_mse"):
        paper.companion_pairs([{"model": "m", "task": "a", "ntps": 0.1, "train_accuracy": 1.0}], "correlation",
                              probe="test")
    with pytest.raises(ValueError, match="probe must be"):
        paper.companion_pairs(records, "correlation", probe="val")


def test_companion_pairs_names_missing_columns():
    with pytest.raises(ValueError, match="lacks the columns.*probe_train_accuracy or probe_train_mse"):
        paper.companion_pairs([{"model": "m", "task": "a", "ntps": 0.1}], "correlation")
    with pytest.raises(ValueError, match="lacks the columns.*lora_test_accuracy"):
        paper.companion_pairs([{"model": "m", "task": "a", "ntps": 0.1}], "lora")
    with pytest.raises(ValueError, match="holds no records"):
        paper.companion_pairs([], "lora")
    with pytest.raises(ValueError, match="kind must be one of"):
        paper.companion_pairs([{"model": "m"}], "peers")


# -- Figure 1 -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from ntps import data
    from ntps.extract import extract_moments as moments
    from ntps.models import load_model

    model, tokenizer = load_model("tiny-llama")
    train = data.load("rt_sentiment", "train", root=DATA)
    stats = moments(model, tokenizer, train.texts, train.labels, num_classes=2, progress=False)
    return model, tokenizer, stats


def test_word_projections_shapes_and_determinism(tiny):
    model, tokenizer, stats = tiny
    words = sum(len(w) for w in paper.FIGURE1_GROUPS.values())
    projections = paper.word_projections(model, tokenizer, stats, layers=[0, 2])
    assert projections.shape == (2 * 2 * words, 7)
    assert list(projections.columns) == ["layer", "space", "group", "index", "word", "coord1", "coord2"]
    assert projections.groupby(["layer", "space"]).size().tolist() == [words] * 4
    assert np.isfinite(projections[["coord1", "coord2"]].to_numpy()).all()
    again = paper.word_projections(model, tokenizer, stats, layers=[0, 2])
    pd.testing.assert_frame_equal(projections, again)
    every = paper.word_projections(model, tokenizer, stats)
    assert sorted(every["layer"].unique()) == stats.layers


def test_word_projections_are_inner_products_with_the_directions(tiny):
    model, tokenizer, stats = tiny
    layer = 1
    directions = paper.top_directions(**stats.layer(layer), k=2)
    one = stats.layer(layer)
    np.testing.assert_allclose(directions.perception.T @ one["sxx"] @ directions.perception, np.eye(2), atol=1e-8)
    np.testing.assert_allclose(directions.autoregressive.T @ one["c0"] @ directions.autoregressive, np.eye(2),
                               atol=1e-8)
    assert directions.perception_values[0] >= directions.perception_values[1] > 0
    features = paper.word_features(model, tokenizer, ["lovely", "were"], layers=[layer])
    assert features.shape == (2, 1, stats.hidden_size) and features.dtype == np.float64
    projections = paper.word_projections(model, tokenizer, stats, layers=[layer],
                                         groups={"a": ["lovely"], "b": ["were"]})
    u = projections[projections["space"] == "U"][["coord1", "coord2"]].to_numpy()
    np.testing.assert_allclose(u, features[:, 0] @ directions.perception)


def test_word_features_and_projection_errors(tiny):
    model, tokenizer, stats = tiny
    with pytest.raises(TypeError, match="not one string"):
        paper.word_features(model, tokenizer, "lovely")
    with pytest.raises(ValueError, match="non-empty strings"):
        paper.word_features(model, tokenizer, ["lovely", " "])
    with pytest.raises(ValueError, match="do not exist"):
        paper.word_features(model, tokenizer, ["lovely"], layers=[99])
    with pytest.raises(ValueError, match="not in the moments"):
        paper.word_projections(model, tokenizer, stats, layers=[7])
    with pytest.raises(ValueError, match="rank"):
        paper.top_directions(**stats.layer(0), k=3)


def test_group_separation():
    published = paper.group_separation(paper.load_figure1(), by=("space",)).set_index("space")["separation"]
    assert published["U"] > 3 * published["V"]  # the paper's figure: Joy and Sad apart along U only
    frame = pd.DataFrame({"group": ["Joy"] * 2 + ["Sad"] * 2, "coord1": [0.0, 0.0, 3.0, 3.0],
                          "coord2": [1.0, -1.0, 1.0, -1.0]})
    assert paper.group_separation(frame, by=()).loc[0, "separation"] == pytest.approx(3.0)
    scaled = frame.assign(coord1=10 * frame["coord1"], coord2=10 * frame["coord2"])
    assert paper.group_separation(scaled, by=()).loc[0, "separation"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="at least two words"):
        paper.group_separation(frame.iloc[:3], by=())
