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
