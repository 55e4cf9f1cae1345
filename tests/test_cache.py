"""ntps.cache: where the cache lives (one rule for make and for commands typed by hand), and digest,
the one hashing rule of the cache keys, checked against hashlib by hand."""

import hashlib
import json
from pathlib import Path

import numpy as np

from ntps import cache
from ntps.cache import digest


def test_digest_is_sha256_of_the_documented_encoding():
    texts = ["a film", "caf\u00e9 \ud800"]  # a lone surrogate is kept, not rejected
    labels = np.array([3, 1, 2], dtype=np.int64)
    settings = {"steps": 48, "lr": 0.003, "targets": ["q_proj", "v_proj"], "root": Path("/data"), "none": None}
    expected = hashlib.sha256()
    expected.update(b"a film\0")
    expected.update("caf\u00e9 \ud800".encode("utf-8", "surrogatepass") + b"\0")
    expected.update(labels.tobytes())
    expected.update(b'{"lr": 0.003, "none": null, "root": "/data", "steps": 48, "targets": ["q_proj", "v_proj"]}')
    expected.update(b"\x00\xffraw")
    assert digest(*texts, labels, settings, b"\x00\xffraw") == expected.hexdigest()
    assert digest() == hashlib.sha256().hexdigest()
    assert digest(settings) == hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def test_digest_ignores_dict_key_order_but_not_part_order_or_boundaries():
    a = {"model": "m", "train": {"seed": 0, "rank": 8, "alpha": 16}, "layers": [2, 1]}
    b = {"layers": [2, 1], "train": {"alpha": 16, "seed": 0, "rank": 8}, "model": "m"}
    assert list(a) != list(b) and digest(a) == digest(b)
    assert digest({**a, "layers": [1, 2]}) != digest(a)  # list order is content
    assert digest("ab", "c") != digest("a", "bc")  # texts are NUL-terminated
    assert digest("x", a) != digest(a, "x")


def test_digest_of_an_array_is_that_of_its_contiguous_values():
    grid = np.arange(12, dtype=np.int64).reshape(3, 4)
    column = grid[:, 1]  # a strided view
    assert not column.flags.c_contiguous
    assert digest(column) == hashlib.sha256(np.array([1, 5, 9], dtype=np.int64).tobytes()).hexdigest()
    assert digest(grid.astype(np.int32)) != digest(grid)  # the caller fixes the dtype


def test_cache_root_rule(monkeypatch, tmp_path):
    monkeypatch.setenv("NTPS_CACHE", str(tmp_path / "chosen"))
    assert cache.cache_root() == tmp_path / "chosen"
    monkeypatch.delenv("NTPS_CACHE")
    checkout = Path(cache.__file__).resolve().parent.parent
    # the tests run from a checkout (editable install): the checkout's own .cache/ntps, as make uses
    assert (checkout / "_config.yml").is_file()
    assert cache.cache_root() == checkout / ".cache" / "ntps"
    makefile = (checkout / "Makefile").read_text()
    assert "export NTPS_CACHE := $(CURDIR)/.cache/ntps" in makefile
    # a wheel install (no checkout around the package): the user's cache
    monkeypatch.setattr(cache, "_checkout", lambda: None)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_root() == tmp_path / "home" / ".cache" / "ntps"
