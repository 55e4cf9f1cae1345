"""The command line, end to end on a tiny model and a local JSONL dataset."""

import json

import numpy as np
import pytest

from ntps.cli import main, read_local_dataset
from ntps.moments import Moments


@pytest.fixture()
def toy_jsonl(tmp_path):
    rows = [("a fine film", "pos"), ("a dull film", "neg"), ("wonderful", "pos"),
            ("awful acting and a plot that goes nowhere", "neg"), ("I liked it a lot", "pos"), ("no", "neg")]
    path = tmp_path / "toy.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in rows) + "\n")
    return path


def test_read_local_dataset_maps_string_labels(toy_jsonl):
    texts, labels, classes = read_local_dataset(toy_jsonl)
    assert classes == ["neg", "pos"]
    assert labels.tolist() == [1, 0, 1, 0, 1, 0] and texts[0] == "a fine film"


def test_extract_shards_merge_and_score(toy_jsonl, tmp_path, capsys):
    common = ["extract", "--model", "tiny-llama", "--dataset", str(toy_jsonl), "--batch-size", "2"]
    assert main(common + ["--out", str(tmp_path / "all")]) == 0
    for i in range(2):
        assert main(common + ["--out", str(tmp_path / f"part{i}"), "--shard", f"{i}/2"]) == 0
    assert main(["merge", str(tmp_path / "part0"), str(tmp_path / "part1"), "--out", str(tmp_path / "merged")]) == 0
    whole, merged = Moments.load(tmp_path / "all"), Moments.load(tmp_path / "merged")
    np.testing.assert_allclose(merged.sum_ss, whole.sum_ss, rtol=1e-12)
    assert not (tmp_path / "all.partial").exists()  # the checkpoint is removed once the moments are saved

    assert main(["score", "--moments", str(tmp_path / "all"), "--csv", str(tmp_path / "grid.csv")]) == 0
    printed = capsys.readouterr().out
    assert "layer" in printed and "peaks at layer" in printed
    header, *rows = (tmp_path / "grid.csv").read_text().splitlines()
    assert len(rows) == whole.num_layers
    from ntps.score import ntps_score

    layer0 = whole.layer(0)
    assert float(rows[0].split(",")[1]) == pytest.approx(ntps_score(**layer0, k_v=1), rel=1e-5)


def test_errors_are_reported_not_raised(toy_jsonl, tmp_path, capsys):
    assert main(["extract", "--model", "tiny-lama", "--dataset", str(toy_jsonl), "--out", str(tmp_path / "x")]) == 2
    assert "Did you mean 'tiny-llama'" in capsys.readouterr().err
    assert main(["extract", "--model", "tiny-llama", "--dataset", str(toy_jsonl), "--out", str(tmp_path / "x"),
                 "--shard", "2/2"]) == 2
    assert "need 0 <= i < n" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("x")
    assert main(["extract", "--model", "tiny-llama", "--dataset", str(bad), "--out", str(tmp_path / "y")]) == 2
    assert main(["merge", str(tmp_path / "nothing"), "--out", str(tmp_path / "z")]) == 2
    assert "does not hold saved moments" in capsys.readouterr().err


def test_score_summary_json_and_plot(toy_jsonl, tmp_path, capsys):
    import warnings

    from ntps.score import default_k, ntps_grid

    assert main(["extract", "--model", "tiny-llama", "--dataset", str(toy_jsonl), "--batch-size", "2",
                 "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    stats = Moments.load(tmp_path / "m")
    grids = {layer: ntps_grid(**stats.layer(layer)) for layer in stats.layers}  # independent: the grid per layer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["score", "--moments", str(tmp_path / "m"), "--json"]) == 0
    out = capsys.readouterr()
    document = json.loads(out.out)  # stdout is JSON and nothing else
    records, meta = document["records"], document["metadata"]
    assert len(records) == sum(len(g) for g in grids.values())
    for record in records:
        assert record["ntps"] == pytest.approx(grids[record["layer"]][record["k"] - 1], abs=1e-12)
    assert meta["n_texts"] == 6 and meta["hidden_size"] == stats.hidden_size and meta["num_classes"] == 2
    k = default_k(stats.hidden_size)
    at_k = {layer: g[k - 1] for layer, g in grids.items() if len(g) >= k}
    assert meta["summary_k"] == k and meta["peak_layer"] == max(at_k, key=at_k.get)
    assert meta["n_at_most_d"] is True

    # the summary for people: N, d, C, k, one line per layer, the peak, and the N <= d warning on stderr
    assert main(["score", "--moments", str(tmp_path / "m"), "--k", "2", "--plot", str(tmp_path / "heat.png")]) == 0
    out = capsys.readouterr()
    assert f"N = 6 texts, d = {stats.hidden_size}, C = 2 classes; k = 2 dimensions" in out.out
    peak = max(grids, key=lambda layer: grids[layer][1])
    assert f"peaks at layer {peak}" in out.out
    assert "N = 6 texts <= d" in out.err
    assert (tmp_path / "heat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second --plot onto its own heat map is fine; onto a user's picture it is refused, untouched
    assert main(["score", "--moments", str(tmp_path / "m"), "--plot", str(tmp_path / "heat.png")]) == 0
    mine = tmp_path / "holiday.png"
    mine.write_bytes(b"\x89PNG\r\n\x1a\nnot ours")
    assert main(["score", "--moments", str(tmp_path / "m"), "--plot", str(mine)]) == 2
    assert mine.read_bytes() == b"\x89PNG\r\n\x1a\nnot ours"
    assert "never overwrites" in capsys.readouterr().err


def test_every_option_has_a_help_text():
    import argparse

    from ntps import cli

    parser = cli._build_parser()
    for action in parser._subparsers._group_actions[0].choices.values():
        for option in action._actions:
            if isinstance(option, argparse._HelpAction):
                continue
            assert option.help, f"{action.prog} {option.option_strings or option.dest} has no help text"
