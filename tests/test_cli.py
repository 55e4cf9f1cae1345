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
    assert "layer" in printed and "k=1" in printed
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
