"""The README's "Your own data" block runs as written, on a CSV it has never seen."""

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SECTION = README.split("## Your own data", 1)[1]
PYTHON_BLOCK = re.search(r"```python\n(.*?)```", SECTION, re.S).group(1)


def _offline_model_ready() -> bool:
    from ntps.cache import cache_root

    return (cache_root() / "models" / "smollm2-135m" / "ntps_source.json").is_file()


@pytest.mark.skipif(not _offline_model_ready(), reason="offline model not fetched (run `make setup`)")
def test_your_own_data_block_runs_on_a_new_csv(tmp_path):
    good = ["A warm, funny and moving film", "I loved every minute of it", "Beautifully shot and well acted",
            "The best thing I have seen this year", "Clever, kind and full of life", "A joy from start to end"]
    bad = ["Dull, long and pointless", "The plot makes no sense at all", "A waste of two hours",
           "Nothing happens, slowly, for ages", "Loud, empty and far too long", "I wanted to leave after ten minutes"]
    # 48 reviews: enough token pairs for C_0 to have rank above k = 58 at every layer
    rows = [(f"{text}, as review {i} says again and again.", label) for i in range(4)
            for label, texts in (("pos", good), ("neg", bad)) for text in texts]
    with open(tmp_path / "reviews.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    env = dict(os.environ)
    env.setdefault("NTPS_CACHE", str(__import__("ntps.cache", fromlist=["cache_root"]).cache_root()))
    out = subprocess.run([sys.executable, "-c", PYTHON_BLOCK], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "N = 48 texts, d = 576, C = 2 classes, k = 58"
    values = [line.split() for line in lines[2:]]
    assert [int(layer) for layer, _ in values] == list(range(31))  # every hidden state of SmolLM2-135M
    assert all(0.0 <= float(value) <= 1.0 + 1e-9 for _, value in values)  # no NaN: k is below every d_eff
