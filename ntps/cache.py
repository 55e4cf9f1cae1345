"""Where the companion keeps what it fetches and computes, and how it writes it safely.

Everything cached (the offline model, datasets, moments) lives under one folder, chosen by one
rule (:func:`cache_root`): ``$NTPS_CACHE`` when set; else, when the package is used from a checkout
of the book (an editable install, as ``make setup`` makes), ``.cache/ntps`` in that checkout, the
folder ``make`` uses; else (a wheel install, as on Colab) ``~/.cache/ntps``. So ``make book`` and
``.venv/bin/ntps`` typed by hand in a checkout share one cache. Writes are atomic: a file or folder is built under a temporary
name next to its destination and renamed into place, so an interrupted run never
leaves a half-written cache entry that a later run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["cache_root", "cache_dir", "atomic_file", "atomic_dir", "sha256_of", "digest"]


def _checkout() -> Path | None:
    """The checkout of the book this package is imported from, if any (editable install)."""
    folder = Path(__file__).resolve().parent.parent
    return folder if (folder / "_config.yml").is_file() and (folder / "notebooks").is_dir() else None


def cache_root() -> Path:
    """``$NTPS_CACHE``; else ``<checkout>/.cache/ntps`` when imported from a checkout of the book;
    else ``~/.cache/ntps``."""
    if os.environ.get("NTPS_CACHE"):
        return Path(os.environ["NTPS_CACHE"]).expanduser()
    checkout = _checkout()
    return checkout / ".cache" / "ntps" if checkout is not None else Path.home() / ".cache" / "ntps"


def cache_dir(*parts: str) -> Path:
    """Return (and create) ``<cache root>/<parts...>`` (:func:`cache_root`)."""
    path = cache_root().joinpath(*parts)
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


def digest(*parts) -> str:
    """Hex SHA-256 of ``parts``, each encoded as below and fed in order: the one way the companion
    turns settings and data into a cache key.

    * ``str``: its UTF-8 bytes followed by a NUL byte, so ``digest(*texts)`` tells ``["ab", "c"]``
      from ``["a", "bc"]`` (lone surrogates are kept, ``surrogatepass``);
    * ``bytes``, ``bytearray``, ``memoryview``: as they are;
    * ``numpy.ndarray``: its elements' bytes in C order; fix the dtype first (labels as ``int64``):
      the shape and dtype are not part of the digest;
    * anything else (dict, list, tuple, number, bool, None): JSON with sorted keys, so the order of
      a dict's keys does not matter; a value JSON cannot encode (a path) is written as its ``str``.
      Give arrays as parts of their own: inside a dict they would be ``str``'d, which elides.

    Examples
    --------
    >>> import hashlib
    >>> digest({"b": 1, "a": 2}) == digest({"a": 2, "b": 1}) == hashlib.sha256(b'{"a": 2, "b": 1}').hexdigest()
    True
    >>> digest("ab", "c") == digest("a", "bc")
    False
    """
    import numpy as np

    hasher = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):
            hasher.update(part.encode("utf-8", "surrogatepass"))
            hasher.update(b"\0")
        elif isinstance(part, (bytes, bytearray, memoryview)):
            hasher.update(part)
        elif isinstance(part, np.ndarray):
            hasher.update(np.ascontiguousarray(part).tobytes())
        else:
            hasher.update(json.dumps(part, sort_keys=True, default=str).encode())
    return hasher.hexdigest()
