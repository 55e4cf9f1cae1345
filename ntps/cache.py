"""Where the companion keeps what it fetches and computes, and how it writes it safely.

Everything cached (the offline model, datasets, moments) lives under one folder:
``$NTPS_CACHE`` when set (the Makefile points it at ``.cache/ntps`` in the checkout),
else ``~/.cache/ntps``. Writes are atomic: a file or folder is built under a temporary
name next to its destination and renamed into place, so an interrupted run never
leaves a half-written cache entry that a later run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["cache_dir", "atomic_file", "atomic_dir", "sha256_of"]


def cache_dir(*parts: str) -> Path:
    """Return (and create) ``<cache root>/<parts...>``.

    The root is ``$NTPS_CACHE`` if set, else ``~/.cache/ntps``.
    """
    root = os.environ.get("NTPS_CACHE") or Path.home() / ".cache" / "ntps"
    path = Path(root).expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_file(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success rename it onto ``destination``.

    On an exception the temporary file is removed and ``destination`` is left as it was.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, destination)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``destination`` as a whole."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent))
    os.chmod(tmp_path, 0o777 & ~_umask())
    try:
        yield tmp_path
        if destination.exists():
            # Keep the old copy until the new one is in place, then drop it.
            old = destination.with_name(f".{destination.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(destination, old)
            os.replace(tmp_path, destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_path, destination)
    finally:
        if tmp_path.exists():
            shutil.rmtree(tmp_path, ignore_errors=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def sha256_of(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (model files are ~100 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()
