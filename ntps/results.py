"""Small result tables that one notebook computes and a later one reads back.

The correlation and LoRA notebooks save their per-task summaries here; the paper notebook sets
them beside the published numbers. Tables are lists of flat records (JSON), keyed by a name and
the parameter profile, written atomically into ``cache_dir("results")``; nothing is pickled.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .cache import atomic_file, cache_dir

__all__ = ["save_table", "load_table", "ResultsNotFoundError"]


class ResultsNotFoundError(FileNotFoundError):
    """The notebook that produces a table has not been run (with this profile) yet."""


def _path(name: str, profile: str) -> Path:
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"result names are letters, digits, '-' and '_'; got {name!r}")
    return cache_dir("results") / f"{name}.{profile}.json"


def _plain(value):
    """JSON-safe scalars: numpy numbers become Python numbers, NaN becomes None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_table(name: str, records, *, profile: str, meta: dict | None = None) -> Path:
    """Save ``records`` (a list of dicts, or a pandas DataFrame) as ``name`` for ``profile``."""
    if hasattr(records, "to_dict"):
        records = records.to_dict(orient="records")
    rows = [{str(k): _plain(v) for k, v in row.items()} for row in records]
    path = _path(name, profile)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"name": name, "profile": profile, "meta": meta or {}, "records": rows},
                                  indent=1, default=str) + "\n")
    return path


def load_table(name: str, *, profile: str) -> tuple[list[dict], dict]:
    """Return ``(records, meta)`` saved by :func:`save_table`."""
    path = _path(name, profile)
    if not path.is_file():
        raise ResultsNotFoundError(f"no saved table {name!r} for profile {profile!r} ({path}): run the notebook "
                                   "that produces it first (make book runs them in order)")
    content = json.loads(path.read_text())
    return content["records"], content.get("meta", {})
