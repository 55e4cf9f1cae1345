"""Where the cache lives: one rule, the same for `make` and for a command typed by hand."""

from pathlib import Path

from ntps import cache


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
