"""Where the companion keeps what it fetches and computes, and how it writes it safely.

Everything cached (the offline model, datasets, moments) lives under one folder, chosen by one
rule (:func:`cache_root`): ``$NTPS_CACHE`` when set; else, when the package is used from a checkout
of the book (an editable install, as ``make setup`` makes), ``.cache/ntps`` in that checkout, the
folder ``make`` uses; else (a wheel install, as on Colab) ``~/.cache/ntps``. So ``make book`` and
``.venv/bin/ntps`` typed by hand in a checkout share one cache. Writes are atomic: a file or folder is built under a temporary
name next to its destination and renamed into place, so an interrupted run never
leaves a half-written cache entry that a later run would trust.

:func:`output_lock` makes one process at a time the writer of an output folder (a sibling
``DIR.lock`` file holding the writer's pid and host).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["cache_root", "cache_dir", "atomic_file", "atomic_dir", "sha256_of", "digest", "output_lock",
           "OutputLockedError"]


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
    """Yield a temporary folder; on success it replaces ``destination`` as a whole.

    ``destination`` must be a folder or absent: an existing file is never replaced by a folder
    (``FileExistsError`` before anything is written).
    """
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise FileExistsError(f"{destination} is an existing file, not a folder: it is left as it is")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent))
    os.chmod(tmp_path, 0o777 & ~_umask())
    try:
        yield tmp_path
        if destination.exists():
            # Keep the old copy until the new one is in place, then drop it. A fresh empty name
            # (renaming a folder onto an empty folder is allowed): never a name someone else uses.
            old = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".old", dir=destination.parent))
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


# -- one writer per output folder -------------------------------------------------------------
class OutputLockedError(FileExistsError):
    """Another live process is writing the same output folder."""


def _lock_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OverflowError:
        return False
    return True


def _read_lock(handle) -> dict:
    handle.seek(0)
    text = handle.read()
    if not text.strip():
        return {}
    try:
        holder = json.loads(text)
    except ValueError:
        return {"unreadable": text[:80]}
    return holder if isinstance(holder, dict) else {"unreadable": text[:80]}


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, *, note=None) -> Iterator[Path]:
    """Hold ``<folder>.lock`` while writing ``folder``: one writer per output folder.

    The lock file (next to the folder, so that the folder itself can be replaced atomically)
    holds the writer's pid and host as JSON, and the writer holds an exclusive ``flock`` on it,
    which the kernel drops when the process dies however it ends. So:

    * a live writer (the flock is held, or on a file system without ``flock``, the recorded pid
      of this host is alive) makes a second writer fail with :class:`OutputLockedError`, whose
      message names the pid, the host and the lock file;
    * a stale lock (its process is gone) is taken over, and ``note`` (a callable, for example
      ``print`` to stderr) is told so;
    * the lock file is removed when the block ends.

    A file at the lock's path that is not an ntps lock (not JSON with a pid) is never
    overwritten: ``FileExistsError``.
    """
    import fcntl

    folder = Path(folder)
    path = _lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        handle = os.fdopen(fd, "r+", encoding="utf-8")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            flocked = True
        except BlockingIOError:
            holder = _read_lock(handle)
            handle.close()
            raise OutputLockedError(_locked_message(folder, path, holder)) from None
        except OSError as error:  # no flock on this file system: fall back to the recorded pid
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                handle.close()
                raise
            flocked = False
        # The file may have been removed (and a new one created) by a writer that finished between
        # our open and our flock: then we hold a lock on a dead inode; start again.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    try:
        holder = _read_lock(handle)
        if "unreadable" in holder:
            raise FileExistsError(f"{path} exists and is not an ntps lock file; ntps leaves it as it is: move it "
                                  f"away, or choose another output folder than {folder}")
        if holder and not flocked and holder.get("host") == socket.gethostname() and \
                _pid_alive(int(holder.get("pid", -1))) and int(holder.get("pid", -1)) != os.getpid():
            raise OutputLockedError(_locked_message(folder, path, holder))
        if holder and note is not None:
            note(f"took over the stale lock {path} of pid {holder.get('pid')} on {holder.get('host')}, "
                 "which is no longer running")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "folder": str(folder)}) + "\n")
        handle.flush()
    except BaseException:
        handle.close()
        raise
    try:
        yield path
    finally:
        # Remove the file before dropping the flock: a waiting writer then finds the inode gone.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        handle.close()


def _locked_message(folder: Path, path: Path, holder: dict) -> str:
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}" if holder else "another process"
    return (f"{folder} is being written by another ntps process ({who}; lock file {path}); wait for it to "
            f"finish, or if that process is gone, delete {path} and run again")
