"""The cached pipeline step and the tidy tables, on a tiny random model and the stand-in tasks."""

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ntps import experiments, peers, probes, score
from ntps.features import hidden_states, mean_pool

ROOT = Path(__file__).parent / "data" / "offline"
TASKS = ["rt_sentiment", "spam_assassin", "debate_party", "fortunes_topic"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NTPS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def source():
    return experiments.ModelSource("tiny-llama")


def stats(task, split, source, **kwargs):
    return experiments.task_statistics("tiny-llama", task, split, model=source, data_root=ROOT, max_length=24,
                                       **kwargs)


def test_task_statistics_features_and_moments_are_right(cache, source):
    from ntps import data

    result = stats("fortunes_topic", "train", source)
    dataset = data.load("fortunes_topic", "train", root=ROOT)
    model, tokenizer = source.get()
    # independent: a padded forward pass of all texts at once and a masked mean
    states, mask = hidden_states(model, tokenizer, dataset.texts, max_length=24)
    pooled = mean_pool(states, mask).double().numpy().transpose(1, 0, 2)  # (N, L, d)
    assert result.features.dtype == np.float32 and result.features.shape == pooled.shape
    np.testing.assert_allclose(result.features, pooled, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(result.labels, dataset.labels)
    x = result.features[:, 2].astype(np.float64)
    np.testing.assert_allclose(result.moments.layer(2)["sxx"], x.T @ x / len(x), rtol=1e-5, atol=1e-7)
    assert result.info["n_texts"] == len(dataset) and result.info["classes"] == dataset.classes
    assert result.info["cached"] is False and result.info["extract_seconds"] > 0


def test_cache_hit_is_fast_identical_and_safe(cache, source):
    first = stats("rt_sentiment", "train", source)
    start = time.perf_counter()
    again = experiments.task_statistics("tiny-llama", "rt_sentiment", "train", data_root=ROOT, max_length=24)
    assert time.perf_counter() - start < 1.0
    assert again.info["cached"] is True and again.info["extract_seconds"] == first.info["extract_seconds"]
    np.testing.assert_array_equal(again.features, first.features)
    np.testing.assert_array_equal(again.moments.sum_ss, first.moments.sum_ss)
    folders = list((cache / "experiments").rglob("info.json"))
    assert len(folders) == 1
    files = sorted(p.name for p in folders[0].parent.rglob("*") if p.is_file())
    assert files == ["features.safetensors", "info.json", "moments.json", "moments.safetensors"]
    info = json.loads(folders[0].read_text())
    assert info["ntps_version"] and info["task"] == "rt_sentiment" and info["init"] == "pretrained"
    # a corrupted or foreign entry is recomputed, not trusted
    info["key"] = "0" * 64
    folders[0].write_text(json.dumps(info))
    assert stats("rt_sentiment", "train", source).info["cached"] is False
    tensors = folders[0].parent / "features.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])
    assert stats("rt_sentiment", "train", source).info["cached"] is False
    assert stats("rt_sentiment", "train", source).info["cached"] is True
    with pytest.raises(ValueError, match="keyed wrongly"):
        stats("rt_sentiment", "test", source, init="random", seed=2, refresh=True)


def test_the_key_separates_settings(cache, source):
    a = stats("debate_party", "train", source)
    b = stats("debate_party", "train", source, layers=[0, 2])
    c = stats("debate_party", "test", source)
    assert b.info["key"] != a.info["key"] and c.info["key"] != a.info["key"]
    assert b.moments.layers == [0, 2] and b.features.shape[1] == 2
    np.testing.assert_allclose(b.features[:, 1], a.features[:, 2], rtol=1e-5, atol=1e-6)
    d = stats("debate_party", "train", source, feature_layers=[1])
    assert d.moments.layers == [0, 1, 2] and d.info["feature_layers"] == [1]
    np.testing.assert_allclose(d.features[:, 0], a.features[:, 1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="subset"):
        stats("debate_party", "train", source, layers=[0], feature_layers=[1])
    with pytest.raises(ValueError, match="init"):
        stats("debate_party", "train", source, init="xavier")


def test_random_init_control(cache):
    model, tokenizer = experiments.ModelSource("tiny-llama").get()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    one = experiments.random_init(model, seed=3)
    two = experiments.random_init(model, seed=3)
    other = experiments.random_init(model, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert type(one) is type(model) and one.config.to_dict() == model.config.to_dict()
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(one.state_dict()[weight], two.state_dict()[weight])
    assert not torch.equal(one.state_dict()[weight], other.state_dict()[weight])
    assert not torch.equal(one.state_dict()[weight], model.state_dict()[weight])
    random = experiments.task_statistics("tiny-llama", "spam_assassin", "train", data_root=ROOT, max_length=24,
                                         init="random", seed=3)
    pretrained = experiments.task_statistics("tiny-llama", "spam_assassin", "train", data_root=ROOT, max_length=24)
    assert random.info["key"] != pretrained.info["key"] and "random-seed3" in str(list(cache.rglob("info.json")))
    assert not np.allclose(random.features, pretrained.features)
    # the cached random features are those of random_init(seed=3)
    direct = experiments.task_statistics("tiny-llama", "spam_assassin", "train", data_root=ROOT, max_length=24,
                                         model=(one, tokenizer), init="random", seed=3, refresh=True)
    np.testing.assert_allclose(direct.features, random.features, rtol=1e-5, atol=1e-6)


@pytest.fixture
def suite(cache, source):
    train = {t: stats(t, "train", source) for t in TASKS}
    test = {t: stats(t, "test", source) for t in TASKS}
    return train, test


def test_ntps_table_matches_the_score_functions(suite):
    train, _ = suite
    fractions = experiments.k_fraction_grid(4)
    assert np.allclose(experiments.k_fraction_grid(19), np.arange(0.05, 0.96, 0.05))
    table, timings = experiments.ntps_table({t: s.moments for t, s in train.items()}, k_fractions=fractions,
                                            reference_fractions=[0.25, 0.5], reference_layers=[1])
    moments = train["debate_party"].moments
    for layer in moments.layers:
        one = moments.layer(layer)
        grid, spectral = score.ntps_grid(**one), score.ntps_spectral_grid(**one)
        for f in fractions:
            k = min(max(round(f * moments.hidden_size), 1), grid.size)
            row = table[(table.task == "debate_party") & (table.layer == layer) & (table.k_fraction == f)]
            assert row[row.variant == "theorem"]["ntps"].item() == pytest.approx(grid[k - 1], abs=1e-10)
            assert row[row.variant == "spectral"]["ntps"].item() == pytest.approx(spectral[k - 1], abs=1e-10)
            assert row[row.variant == "theorem"]["k"].item() == k
    ref = table[(table.variant == "reference") & (table.task == "debate_party")]
    assert sorted(ref.layer.unique()) == [1] and sorted(ref.k_fraction) == [0.25, 0.5]
    expected = score.ntps_reference_sweep(**moments.layer(1), fractions=[0.25, 0.5])
    np.testing.assert_allclose(ref.sort_values("k_fraction")["ntps"], expected)
    assert set(timings.variant) == {"theorem", "spectral", "reference"} and (timings.seconds >= 0).all()
    with pytest.raises(ValueError, match="unknown NTPS variants"):
        experiments.ntps_table({"x": moments}, variants=["best"])
    with pytest.raises(ValueError, match="k_fractions"):
        experiments.ntps_table({"x": moments}, k_fractions=[0.0])


def test_probe_and_peer_tables(suite):
    train, test = suite
    table, timings = experiments.probe_table(train, test, ridge=0.1)
    assert len(table) == len(TASKS) * 3 and set(timings.probe) == {"logistic", "least squares"}
    tr, te = train["fortunes_topic"], test["fortunes_topic"]
    lg = probes.logistic_probe(tr.features[:, 2], tr.labels, te.features[:, 2], te.labels,
                               num_classes=tr.moments.num_classes)
    ms = probes.mse_probe(tr.features[:, 2], tr.labels, te.features[:, 2], te.labels, ridge=0.1,
                          num_classes=tr.moments.num_classes)
    row = table[(table.task == "fortunes_topic") & (table.layer == 2)].iloc[0]
    assert row.train_accuracy == lg.train_accuracy and row.test_accuracy == lg.test_accuracy
    assert row.test_mse == pytest.approx(ms.test_mse) and row.train_mse == pytest.approx(ms.train_mse)
    majority_class = np.bincount(tr.labels).argmax()
    assert row.majority_accuracy == pytest.approx(np.mean(te.labels == majority_class))
    assert row.test_gain == pytest.approx(lg.test_accuracy - row.majority_accuracy)
    base = experiments.task_baselines(train)
    assert len(base) == len(TASKS) * 3
    one = base[base.task == "fortunes_topic"].iloc[0]
    assert one.neg_classes == -tr.moments.num_classes
    assert one.majority_share == pytest.approx(np.bincount(tr.labels).max() / len(tr.labels))
    peer, peer_timings = experiments.peer_table(train, knn_k=3)
    row = peer[(peer.task == "rt_sentiment") & (peer.layer == 1)].iloc[0]
    x, y = train["rt_sentiment"].features[:, 1], train["rt_sentiment"].labels
    assert row.logme == pytest.approx(peers.logme(x, y)) and row.rankme == pytest.approx(peers.rankme(x))
    assert row.h_score == pytest.approx(peers.h_score(x, y)) and row.knn_accuracy == peers.knn_accuracy(x, y, k=3)
    assert set(peer_timings.metric) == set(experiments.PEER_METRICS)


def test_reference_sensitivity(suite):
    train, _ = suite
    one = train["fortunes_topic"].moments.layer(2)
    kept = {k: v.copy() for k, v in one.items()}
    table = experiments.reference_sensitivity(one, fractions=[0.25, 0.5, 0.75], n_perturbations=3, seed=1,
                                              dtypes=[np.float32, np.float64])
    assert sorted(table.draw.unique()) == [0, 1, 2, 3]
    assert set(table.variant) == {"reference (float32)", "reference (float64)", "theorem"}
    for dtype in (np.float32, np.float64):
        base = table[(table.draw == 0) & (table.variant == f"reference ({np.dtype(dtype).name})")]
        np.testing.assert_allclose(base.sort_values("k_fraction")["ntps"],
                                   score.ntps_reference_sweep(**one, fractions=[0.25, 0.5, 0.75], dtype=dtype))
    theorem = table[table.variant == "theorem"].groupby("k_fraction")["ntps"]
    assert (theorem.max() - theorem.min()).max() < 1e-6  # the theorem-consistent score does not move
    assert all(np.array_equal(one[k], kept[k]) for k in one)


def test_selection_table_runs_every_rule_and_marks_constant_targets():
    from ntps import evaluate

    rng = np.random.default_rng(0)
    tasks = [f"t{i}" for i in range(6)]
    ntps_rows = [{"task": t, "layer": l, "variant": v, "k_fraction": f, "k": 1, "ntps": rng.uniform()}
                 for t in tasks for l in range(3) for v in ("theorem", "spectral") for f in (0.25, 0.5)]
    probe_rows = [{"task": t, "layer": l, "train_accuracy": 1.0, "test_accuracy": rng.uniform(),
                   "test_gain": rng.uniform(), "train_mse": rng.uniform(), "test_mse": rng.uniform(), "converged": True}
                  for t in tasks for l in range(3)]
    peer_rows = [{"task": t, "layer": l, "logme": rng.normal()} for t in tasks for l in range(3)]
    base_rows = [{"task": t, "layer": l, "neg_classes": -float(i % 3 + 2)} for i, t in enumerate(tasks) for l in range(3)]
    ntps_t, probe_t, peer_t, base_t = (pd.DataFrame(r) for r in (ntps_rows, probe_rows, peer_rows, base_rows))
    summary, selections = experiments.selection_table(ntps_t, probe_t, peer_t, baselines=base_t, fixed_layer=1,
                                                        fixed_k_fraction=0.4, n_boot=100)
    assert set(summary.score) == {"ntps:theorem", "ntps:spectral", "logme", "neg_classes"}
    assert set(summary[summary.score == "neg_classes"].family) == {"baseline"}
    assert len(summary) == 4 * 5 * 3
    constant = summary[summary.target == "train_accuracy"]
    assert constant.estimate.isna().all() and (constant.note == "target constant across tasks").all()
    row = summary[(summary.score == "ntps:theorem") & (summary.target == "test_accuracy") & (summary.rule == "fixed")]
    table = ntps_t[ntps_t.variant == "theorem"].merge(probe_t, on=["task", "layer"])
    direct = evaluate.select_fixed(table, {"layer": 1, "k_fraction": 0.5}, score="ntps", target="test_accuracy")
    assert row.estimate.item() == pytest.approx(direct.correlation)
    mse = summary[(summary.score == "logme") & (summary.target == "test_mse") & (summary.rule == "in-sample")]
    logme_table = peer_t.merge(probe_t, on=["task", "layer"])
    best = evaluate.select_in_sample(logme_table, score="logme", target="test_mse", config=["layer"],
                                     higher_is_better=False)
    assert mse.estimate.item() == pytest.approx(best.correlation)
    assert ("ntps:theorem", "test_accuracy") in selections
    assert experiments.nearest([0.05, 0.25, 0.5], 0.4) == 0.5 and experiments.nearest([3, 1, 2], 1.5) == 1.0


def test_a_tokenizer_from_elsewhere_is_part_of_the_key(cache, tmp_path):
    # A model saved without a tokenizer (as OpenELM ships) takes one by name; other token ids give
    # other statistics, so the tokenizer must separate cache entries, and a ModelSource built with
    # one tokenizer must not be filed under another.
    from ntps.tiny import tiny_model

    model, tokenizer = tiny_model("llama", seed=1)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "with-bos")
    no_bos = type(tokenizer)(tokenizer_object=tokenizer.backend_tokenizer, pad_token="<pad>")
    no_bos.backend_tokenizer.post_processor = None
    no_bos.save_pretrained(tmp_path / "without-bos")
    name = str(tmp_path / "model")

    def run(tokenizer_folder, **kwargs):
        return experiments.task_statistics(name, "debate_party", "train", data_root=ROOT, max_length=None,
                                           tokenizer=str(tmp_path / tokenizer_folder), **kwargs)

    with_bos, without_bos = run("with-bos"), run("without-bos")
    assert with_bos.info["key"] != without_bos.info["key"]
    assert with_bos.info["settings"]["tokenizer"] == str((tmp_path / "with-bos").resolve())
    # the beginning-of-text token adds one token, hence one pair, per text
    assert with_bos.moments.n_pairs - without_bos.moments.n_pairs == with_bos.moments.n_texts
    direct = experiments.task_statistics(name, "debate_party", "train", data_root=ROOT, max_length=None,
                                         model=(model, tokenizer), refresh=True)
    assert "tokenizer" not in direct.info["settings"]  # keys made without one are unchanged
    np.testing.assert_array_equal(direct.moments.sum_ss, with_bos.moments.sum_ss)
    again = run("with-bos", model=experiments.ModelSource(name, tokenizer=str(tmp_path / "with-bos")))
    assert again.info["cached"] and np.array_equal(again.moments.sum_sh, with_bos.moments.sum_sh)
    # another spelling of the same folder is the same key
    respelled = experiments.task_statistics(name, "debate_party", "train", data_root=ROOT, max_length=None,
                                            tokenizer=str(tmp_path / "without-bos" / ".." / "with-bos"))
    assert respelled.info["cached"] and respelled.info["key"] == with_bos.info["key"]
    with pytest.raises(ValueError, match="tokenizer from .*with-bos.*keyed wrongly"):
        run("without-bos", model=experiments.ModelSource(name, tokenizer=str(tmp_path / "with-bos")), refresh=True)


def test_run_statistics_is_the_loop_of_task_statistics(cache, source):
    run = experiments.run_statistics(["tiny-llama"], ["rt_sentiment", "fortunes_topic"], data_root=ROOT,
                                     max_length=24)
    assert run.failed == {} and set(run.train["tiny-llama"]) == {"rt_sentiment", "fortunes_topic"}
    for task in ("rt_sentiment", "fortunes_topic"):
        for split, store in (("train", run.train), ("test", run.test)):
            direct = stats(task, split, source)  # the same call, one at a time: must hit the same cache entry
            assert direct.info["cached"] is True
            np.testing.assert_array_equal(store["tiny-llama"][task].features, direct.features)
        assert run.test["tiny-llama"][task].moments is None  # test moments are not kept
        assert run.train["tiny-llama"][task].moments.n_texts == len(run.train["tiny-llama"][task].labels)
    rows = run.extraction.set_index(["task", "split"])
    assert len(rows) == 4 and not rows["cached"].any()
    assert rows.loc[("rt_sentiment", "train"), "texts"] == run.train["tiny-llama"]["rt_sentiment"].labels.size


def test_run_statistics_records_or_raises_a_failing_model(cache):
    with pytest.raises(Exception, match="tiny-lama|Did you mean"):
        experiments.run_statistics(["tiny-lama"], ["rt_sentiment"], data_root=ROOT, max_length=24)
    run = experiments.run_statistics(["tiny-lama", "tiny-llama"], ["rt_sentiment"], data_root=ROOT, max_length=24,
                                     splits=["train"], skip_failed=True)
    assert list(run.failed) == ["tiny-lama"] and list(run.train) == ["tiny-llama"] and run.test == {}


def test_correlation_records_read_the_chosen_configuration():
    from ntps.results import TABLE_SCHEMAS

    rng = np.random.default_rng(3)
    tasks, layers, fractions = [f"t{i}" for i in range(6)], [0, 1, 2], [0.25, 0.5]
    ntps_t = pd.DataFrame([{"task": t, "layer": l, "variant": "theorem", "k_fraction": f, "k": 0,
                            "ntps": rng.uniform()} for t in tasks for l in layers for f in fractions])
    probe_t = pd.DataFrame([{"task": t, "layer": l, "train_accuracy": 1.0, "test_accuracy": rng.uniform(),
                             "train_mse": rng.uniform(), "test_mse": rng.uniform(), "converged": True,
                             "majority_accuracy": 0.5, "test_gain": rng.uniform(),
                             "test_kappa": rng.uniform()} for t in tasks for l in layers])
    _, selections = experiments.selection_table(ntps_t, probe_t, fixed_layer=1, fixed_k_fraction=0.5, n_boot=50,
                                                targets={"test_accuracy": True})
    records = experiments.correlation_records(selections, probe_t, model="m")
    assert len(records) == 3 * len(tasks)
    for record in records:
        assert set(TABLE_SCHEMAS["correlation"]) <= set(record)
        # independent lookup: the NTPS table at the recorded configuration, the probe table at its layer
        at = ntps_t[(ntps_t.task == record["task"]) & (ntps_t.layer == record["layer"])
                    & np.isclose(ntps_t.k_fraction, record["k_fraction"])]
        assert record["ntps"] == pytest.approx(float(at.ntps.iloc[0]))
        probe = probe_t[(probe_t.task == record["task"]) & (probe_t.layer == record["layer"])].iloc[0]
        assert record["test_accuracy"] == pytest.approx(probe.test_accuracy)
    fixed = [r for r in records if r["rule"] == "fixed"]
    assert {(r["layer"], r["k_fraction"]) for r in fixed} == {(1, 0.5)}
    # in-sample: one configuration for every task, the one with the best correlation over all of them
    in_sample = {(r["layer"], r["k_fraction"]) for r in records if r["rule"] == "in-sample"}
    assert len(in_sample) == 1


def _layers_table(rng, tasks=("a", "b", "c", "d"), n_layers=5):
    return pd.DataFrame([{"model": "m", "task": t, "layer": l, "k_fraction": f, "ntps": rng.uniform(),
                          "test_accuracy": rng.uniform(), "majority_accuracy": 0.5}
                         for t in tasks for l in range(n_layers) for f in (0.1, 0.5)])


def test_layer_choice_against_a_loop():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(7)
    layers = _layers_table(rng)
    choice = experiments.layer_choice(layers, k_fraction=0.12, near=0.05).set_index("task")
    for task, group in layers[np.isclose(layers.k_fraction, 0.1)].groupby("task"):
        rows = list(group.itertuples())
        by_ntps = max(rows, key=lambda r: r.ntps)
        by_probe = max(rows, key=lambda r: r.test_accuracy)
        assert choice.loc[task, "ntps_best_layer"] == by_ntps.layer
        assert choice.loc[task, "probe_best_layer"] == by_probe.layer
        assert choice.loc[task, "accuracy_lost"] == pytest.approx(by_probe.test_accuracy - by_ntps.test_accuracy)
        assert choice.loc[task, "within_few_points"] == (by_probe.test_accuracy - by_ntps.test_accuracy <= 0.05)
        expected = spearmanr([r.ntps for r in rows], [r.test_accuracy for r in rows]).statistic
        assert choice.loc[task, "spearman_over_layers"] == pytest.approx(expected)


def test_should_you_use_ntps_reads_the_saved_results(cache):
    from ntps import results

    rng = np.random.default_rng(8)
    layers = _layers_table(rng)
    results.save_table("layers", layers, profile="t")
    selection = [{"model": "m", "score": s, "family": "x", "target": "test_accuracy", "rule": "leave-one-task-out",
                  "estimate": e, "low": e - 0.3, "high": min(e + 0.3, 1.0)}
                 for s, e in (("ntps:theorem", 0.41), ("logme", 0.12), ("rankme", -0.2))]
    results.save_table("selection", selection, profile="t", meta={
        "model": "m", "n_train": 320, "width": 576, "costs": {"forward_seconds": 800.0, "ntps_seconds": 17.6,
                                                              "probe_seconds": 5.4}})
    text = experiments.should_you_use_ntps("t")
    choice = experiments.layer_choice(layers, k_fraction=0.1)
    rho = choice["spearman_over_layers"]
    assert f"from {rho.min():+.2f} to {rho.max():+.2f}" in text
    assert "+0.41 [+0.11, +0.71]" in text and "LogME +0.12" in text and "RankMe -0.20" in text
    assert "N / d = 0.56" in text and "17.6 s" in text and "5.4 s" in text
    assert "has not been run" in experiments.should_you_use_ntps("never-run")


def test_a_users_own_table_goes_through_the_cached_pipeline(cache, source, tmp_path):
    from ntps import data

    rows = data.load("fortunes_topic", "train", root=ROOT)
    table = pd.DataFrame({"text": rows.texts, "label": [rows.classes[y] for y in rows.labels],
                          "split": ["train" if i % 3 else "test" for i in range(len(rows))]})
    path = tmp_path / "my_topics.csv"
    table.to_csv(path, index=False)
    run = experiments.run_statistics(["tiny-llama"], [str(path)], max_length=24)
    train = run.train["tiny-llama"]["my_topics"]  # keyed by the file's name
    assert train.info["n_texts"] == int((table.split == "train").sum())
    assert run.test["tiny-llama"]["my_topics"].info["n_texts"] == int((table.split == "test").sum())
    # the same rows as a DataFrame (another name, so another cache entry) give the same features
    again = experiments.task_statistics("tiny-llama", table, "train", model=source, max_length=24)
    assert again.info["task"] == "dataframe" and again.info["cached"] is False
    np.testing.assert_allclose(again.features, train.features, rtol=1e-6)
    # a changed table is a new cache entry, never the old statistics
    changed = table.assign(text=table.text + " (edited)")
    fresh = experiments.task_statistics("tiny-llama", changed, "train", model=source, max_length=24)
    assert fresh.info["cached"] is False and fresh.info["key"] != train.info["key"]


def test_below_rank_keeps_only_fractions_under_every_rank():
    table = pd.DataFrame({
        "task": ["a"] * 3 + ["b"] * 3 + ["a"], "layer": [0] * 7,
        "variant": ["theorem"] * 6 + ["reference"],
        "k_fraction": [0.1, 0.3, 0.5, 0.1, 0.3, 0.5, 0.9], "k": [10, 30, 50, 10, 30, 50, np.nan],
        "ntps": [0.2, 0.5, 1.0, 0.3, 0.9, 1.0, 0.7], "p": [60, 60, 60, 40, 40, 40, np.nan]})
    kept, dropped = experiments.below_rank(table)
    assert dropped == [0.5]  # k = 50 >= p = 40 on task b: dropped for every task
    assert sorted(kept.loc[kept.variant == "theorem", "k_fraction"].unique()) == [0.1, 0.3]
    assert (kept.variant == "reference").sum() == 1
    # brute force: every kept theorem row has k < p
    assert (kept.dropna(subset=["p"]).eval("k < p")).all()
