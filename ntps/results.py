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

__all__ = ["TABLE_SCHEMAS", "save_table", "load_table", "ResultsNotFoundError"]

#: The fields every record of a known table carries: written by one chapter, read by another
#: (``ntps.paper.companion_pairs`` reads both). ``save_table`` and ``load_table`` check them.
TABLE_SCHEMAS = {
    # 03_correlation: one row per (model, task, selection rule), NTPS at the configuration the
    # rule chose for that task (``ntps.experiments.correlation_records``).
    "correlation": {
        "model": "model name", "task": "task name", "rule": "in-sample, leave-one-task-out or fixed",
        "variant": "NTPS variant (theorem)", "selected_on": "the probe target the rule maximised",
        "layer": "hidden-state index", "k_fraction": "k / d", "ntps": "NTPS at (layer, k)",
        "train_accuracy": "in-sample probe accuracy", "test_accuracy": "held-out probe accuracy",
        "train_mse": "in-sample least-squares probe error", "test_mse": "held-out least-squares probe error",
        "test_gain": "held-out accuracy minus the majority-class accuracy",
        "test_kappa": "Cohen's kappa of the held-out predictions",
    },
    # 03_correlation: every score against every target under every selection rule
    # (``ntps.experiments.selection_table``), one row each; its meta holds the run's costs and sizes.
    "selection": {
        "model": "model name", "score": "ntps:<variant>, a peer metric or a baseline",
        "family": "ntps, peer or baseline", "target": "probe target", "rule": "selection rule",
        "estimate": "Spearman across tasks", "low": "interval, lower end", "high": "interval, upper end",
    },
    # 03_correlation: theorem-consistent NTPS and held-out probe accuracy of every (task, layer, k).
    "layers": {
        "model": "model name", "task": "task name", "layer": "hidden-state index", "k_fraction": "k / d",
        "ntps": "theorem-consistent NTPS", "test_accuracy": "held-out probe accuracy at the layer",
        "majority_accuracy": "held-out accuracy of the training majority class",
    },
    # 04_lora: one row per (model, task), NTPS at the configuration fixed in advance.
    "lora": {
        "model": "model name", "task": "task name", "selection": "how (layer, k) was chosen (fixed)",
        "ntps": "theorem-consistent NTPS before LoRA", "lora_test_accuracy": "held-out accuracy after LoRA",
        "linear_probe_test_accuracy": "held-out accuracy of the frozen model's linear probe",
        "gain": "lora_test_accuracy - linear_probe_test_accuracy", "ntps_after": "NTPS of the merged model",
    },
}


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
    _check_schema(name, rows, "save")
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
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): run the notebook that produces it again") from None
    _check_schema(name, content["records"], f"read from {path}")
    return content["records"], content.get("meta", {})


def _check_schema(name: str, rows: list[dict], what: str) -> None:
    schema = TABLE_SCHEMAS.get(name)
    if schema is None:
        return
    for number, row in enumerate(rows):
        missing = [field for field in schema if field not in row]
        if missing:
            raise ValueError(f"table {name!r} ({what}): record {number} lacks the fields {missing} of "
                             "ntps.results.TABLE_SCHEMAS")
