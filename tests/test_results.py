import math

import numpy as np
import pytest

from ntps.results import ResultsNotFoundError, load_table, save_table


def test_round_trip_with_numpy_scalars_and_nan(tmp_path, monkeypatch):
    monkeypatch.setenv("NTPS_CACHE", str(tmp_path))
    records = [{"task": "a", "ntps": np.float64(0.25), "n": np.int64(3)}, {"task": "b", "ntps": math.nan, "n": 4}]
    save_table("corr", records, profile="smoke", meta={"model": "tiny"})
    loaded, meta = load_table("corr", profile="smoke")
    assert loaded == [{"task": "a", "ntps": 0.25, "n": 3}, {"task": "b", "ntps": None, "n": 4}]
    assert meta == {"model": "tiny"}
    with pytest.raises(ResultsNotFoundError, match="run the notebook"):
        load_table("corr", profile="cpu")
    with pytest.raises(ValueError, match="letters, digits"):
        save_table("../escape", records, profile="smoke")


def test_known_tables_keep_their_schema(tmp_path, monkeypatch):
    from ntps.results import TABLE_SCHEMAS

    monkeypatch.setenv("NTPS_CACHE", str(tmp_path))
    full = {field: 1.0 for field in TABLE_SCHEMAS["lora"]}
    save_table("lora", [full], profile="smoke")
    assert load_table("lora", profile="smoke")[0] == [full]
    with pytest.raises(ValueError, match=r"record 1 lacks the fields \['gain'\]"):
        save_table("lora", [full, {k: v for k, v in full.items() if k != "gain"}], profile="smoke")
    # a file edited by hand (or written by an older chapter) is caught when read, naming the file
    path = tmp_path / "results" / "lora.smoke.json"
    path.write_text(path.read_text().replace('"gain"', '"gian"'))
    with pytest.raises(ValueError, match="lora.smoke.json"):
        load_table("lora", profile="smoke")
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_table("lora", profile="smoke")
