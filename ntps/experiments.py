"""The cached pipeline steps the experiment notebooks share, and their tidy tables.

:func:`task_statistics` is the one expensive step: a forward pass of a model over one split of
one task, which yields the NTPS moments of every layer **and** the mean-pooled features of the same
pass (for probes and peer metrics). Its result is cached under ``$NTPS_CACHE/experiments``:

* keyed by the model name, revision, initialisation (``"pretrained"`` or ``"random"`` with its
  seed), the task, split, ``max_length``, ``max_examples``, the data subsample seed, a SHA-256 of
  the texts and labels actually used, the layer sets, the model dtype and ``ntps.__version__``
  (the batch size and the device are not part of the key: they change the sums only by
  floating-point round-off);
* written atomically (``ntps.cache.atomic_dir``) as safetensors (the moments' float64 sums; the
  features as float32 and the labels as int64) plus JSON (settings, counts, the time the pass
  took); never pickled, and loading one never runs code. A cache hit takes milliseconds.

The random-initialisation control (:func:`random_init`) is the same architecture and config with
freshly initialised weights (``AutoModelForCausalLM.from_config`` under ``torch.manual_seed``).

The table helpers turn per-task statistics into long ``pandas`` tables, timing every step:
:func:`ntps_table` (task, layer, variant, k) -> NTPS for the theorem-consistent, spectral and
released (reference) variants; :func:`probe_table` (task, layer) -> probe accuracy and MSE,
in-sample and held out; :func:`peer_table` (task, layer) -> LogME, H-score, ... ;
:func:`reference_sensitivity` the released variant's spread under tiny perturbations of sxy.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

from . import __version__
from .cache import atomic_dir, cache_dir, digest
from .moments import Moments

__all__ = [
    "CACHE_FORMAT",
    "INITS",
    "VARIANTS",
    "PEER_METRICS",
    "TaskStatistics",
    "ModelSource",
    "random_init",
    "statistics_key",
    "tokenizer_key",
    "task_statistics",
    "StatisticsRun",
    "run_statistics",
    "k_fraction_grid",
    "ntps_table",
    "below_rank",
    "probe_table",
    "peer_table",
    "reference_sensitivity",
    "TARGETS",
    "selection_table",
    "nearest",
    "task_baselines",
    "correlation_records",
    "layer_choice",
    "should_you_use_ntps",
    "committed_run",
]

# Probe targets and whether a high value is good (a good score should then correlate positively).
TARGETS = {"test_accuracy": True, "test_gain": True, "test_kappa": True, "train_accuracy": True, "test_mse": False,
           "train_mse": False}

CACHE_FORMAT = "ntps-task-statistics/1"
INITS = ("pretrained", "random")
VARIANTS = ("theorem", "spectral", "reference")
PEER_METRICS = ("logme", "h_score", "regularized_h_score", "rankme", "knn_accuracy")


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------
def random_init(model, seed: int = 0, *, trust_remote_code: bool = False):
    """A copy of ``model``'s architecture with freshly initialised weights (the random control).

    ``AutoModelForCausalLM.from_config(model.config)`` under ``torch.manual_seed(seed)`` (inside
    ``torch.random.fork_rng``, so the caller's random state is untouched), in the model's dtype, on
    its device, in eval mode. The transformers initialiser of the architecture decides the
    distribution (e.g. normal with ``config.initializer_range`` for Llama's linear layers).
    Deterministic for a seed. ``model`` itself is not modified.
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    parameter = next(model.parameters())
    config = copy.deepcopy(model.config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        fresh = AutoModelForCausalLM.from_config(config, dtype=parameter.dtype, trust_remote_code=trust_remote_code)
    fresh.to(parameter.device)
    fresh.eval()
    return fresh


class ModelSource:
    """Loads ``(model, tokenizer)`` on first use and keeps it: pass one to :func:`task_statistics`
    for every task so that the model loads once, and not at all when every result is cached.

    ``init="random"`` loads the pretrained model (for its config and tokenizer) and replaces it by
    :func:`random_init` with ``seed``. ``tokenizer`` takes the tokenizer from another hub id or
    folder (``ntps.models.load``'s ``tokenizer=``). An already loaded pair can be wrapped with
    ``loaded=``.
    """

    def __init__(self, model_name: str, *, init: str = "pretrained", seed: int = 0, dtype=None, device=None,
                 revision: str | None = None, trust_remote_code: bool = False, tokenizer: str | None = None,
                 loaded=None):
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.model_name, self.init, self.seed = str(model_name), init, int(seed)
        self.dtype, self.device, self.revision, self.trust_remote_code = dtype, device, revision, trust_remote_code
        self.tokenizer = None if tokenizer is None else str(tokenizer)
        self._pair = tuple(loaded) if loaded is not None else None
        self.load_seconds = 0.0

    @property
    def loaded(self) -> bool:
        return self._pair is not None

    def get(self):
        """``(model, tokenizer)``, loading them the first time."""
        if self._pair is None:
            from .features import resolve_device
            from .models import load_model

            start = time.perf_counter()
            device = resolve_device(self.device) if self.device is not None else None
            model, tokenizer = load_model(self.model_name, revision=self.revision, dtype=self.dtype, device=device,
                                    trust_remote_code=self.trust_remote_code, tokenizer=self.tokenizer)
            if self.init == "random":
                model = random_init(model, self.seed, trust_remote_code=self.trust_remote_code)
            self._pair = (model, tokenizer)
            self.load_seconds = time.perf_counter() - start
        return self._pair

    def release(self) -> None:
        """Drop the loaded model (frees its memory; a later ``get`` loads it again)."""
        self._pair = None

    def __repr__(self) -> str:
        return f"ModelSource({self.model_name!r}, init={self.init!r}, loaded={self.loaded})"


# --------------------------------------------------------------------------------------------
# the cached forward pass
# --------------------------------------------------------------------------------------------
class TaskStatistics(NamedTuple):
    """What one forward pass over one split of one task gives.

    - ``moments``: the ``ntps.moments.Moments`` of every extracted layer (sums over the N texts);
    - ``features``: (N, L_f, d) float32, mean-pooled features of the layers
      ``info["feature_layers"]``, in the order of the texts;
    - ``labels``: (N,) int64;
    - ``info``: settings, counts, classes and the seconds the pass took (``extract_seconds``) when
      it was computed (``cached`` says whether this call read it from the cache).
    """

    moments: Moments
    features: np.ndarray
    labels: np.ndarray
    info: dict


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "model"


def _dtype_name(dtype) -> str:
    if dtype is None:
        return "float32"  # ntps.models.load's default
    return str(dtype).removeprefix("torch.")


def _data_fingerprint(texts: Sequence[str], labels: np.ndarray) -> str:
    return digest(*texts, np.asarray(labels, dtype=np.int64))


def tokenizer_key(tokenizer) -> str | None:
    """How a ``tokenizer=`` source enters a cache key: a local folder by its absolute path (so that
    two spellings of one folder share a key), anything else (a hub id) as given."""
    if tokenizer is None:
        return None
    path = Path(str(tokenizer)).expanduser()
    return str(path.resolve()) if path.is_dir() else str(tokenizer)


def _check_source_tokenizer(model, tokenizer) -> None:
    if isinstance(model, ModelSource) and tokenizer_key(model.tokenizer) != tokenizer_key(tokenizer):
        raise ValueError(f"the ModelSource takes its tokenizer from {model.tokenizer or 'the model'}, but tokenizer="
                         f"{tokenizer!r} was asked for: the cache would be keyed wrongly")


def statistics_key(settings: Mapping) -> str:
    """SHA-256 of the settings that decide a cached result (sorted JSON)."""
    return digest(dict(settings))


def _entry_folder(settings: dict, key: str) -> Path:
    init = settings["init"] if settings["init"] == "pretrained" else f"random-seed{settings['seed']}"
    return cache_dir("experiments", _slug(settings["model"]), init) / \
        f"{_slug(settings['task'])}-{settings['split']}-{key[:16]}"


def _read_entry(folder: Path, key: str) -> TaskStatistics | None:
    from safetensors.numpy import load_file

    info_path = folder / "info.json"
    if not info_path.is_file() or not (folder / "features.safetensors").is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError:
        return None
    if info.get("format") != CACHE_FORMAT or info.get("key") != key:
        return None
    try:
        tensors = load_file(str(folder / "features.safetensors"))
        moments = Moments.load(folder / "moments")
        features, labels = tensors["features"], tensors["labels"]
    except Exception:  # noqa: BLE001 - a damaged entry (truncated file, missing tensor) is recomputed
        return None
    if features.ndim != 3 or len(features) != len(labels) or len(labels) != moments.n_texts:
        return None
    info["cached"] = True
    return TaskStatistics(moments, features, labels, info)


def task_statistics(model_name: str, task: str, split: str, *, model=None, max_length: int | None = 64,
                    max_examples: int | str | None = None, data_seed: int = 0, data_root: str | Path | None = None,
                    batch_size: int = 16, dtype=None, device=None, revision: str | None = None,
                    init: str = "pretrained", seed: int = 0, layers: Sequence[int] | None = None,
                    feature_layers: Sequence[int] | None = None, feature_stride: int = 1,
                    trust_remote_code: bool = False, tokenizer: str | None = None,
                    refresh: bool = False, progress: bool = False) -> TaskStatistics:
    """Moments and mean-pooled features of one split of one task, computed once and cached.

    Parameters
    ----------
    model_name : str
        What ``ntps.models.load`` accepts (offline name, tiny test model, folder, hub id); the name
        (with ``revision``) identifies the model in the cache key, so a local folder whose weights
        change needs ``refresh=True``.
    task : str, path, DataFrame, datasets.Dataset or TextDataset
        A task of ``ntps.data`` ("rt_sentiment", "sst2", ...), or your own data: anything
        :func:`ntps.load_dataset` reads. A table with a ``split`` column gives its rows of ``split``;
        without one, every row is used for either split (give the test texts as a table of their
        own, or add the column). Your data is keyed by its name and a fingerprint of its texts and
        labels, so a changed file is never read back from the cache.
    split : str
        "train" or "test".
    model
        ``None`` (load on a cache miss), an already loaded ``(model, tokenizer)`` pair, or a
        :class:`ModelSource` (loads once, shared across calls). It must match ``model_name``,
        ``init`` and ``seed``: they, not the object, make the cache key.
    max_length : int or None
        Truncate texts to this many tokens.
    max_examples, data_seed, data_root
        Passed to ``ntps.data.load`` (None = the task's default cap).
    batch_size, device
        How the pass runs (not part of the key).
    dtype, revision, trust_remote_code
        How the model loads (dtype and revision are in the key).
    tokenizer : str, optional
        A hub id or folder to take the tokenizer from (``ntps.models.load``'s ``tokenizer=``);
        in the key when given, since other token ids give other statistics. With an explicit
        ``(model, tokenizer)`` pair it only names the key, and must be the pair's tokenizer.
    init, seed
        "pretrained", or "random" for the random-initialisation control with this seed.
    layers : list of int, optional
        Hidden-state indices for the moments (default all).
    feature_layers : list of int, optional
        The subset of ``layers`` whose features are kept (default all).
    feature_stride : int
        Keep only every n-th of those (big models on many texts: the features are N x L x d float32).
    refresh : bool
        Recompute even when cached.

    Returns
    -------
    TaskStatistics
        Moments, features (N, L_f, d) float32, labels (N,), info.
    """
    from . import data

    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if split not in data.SPLITS:
        raise ValueError(f"split must be one of {data.SPLITS}, got {split!r}")
    # A registered task, or the user's own data (a file, a DataFrame, a datasets.Dataset, a
    # TextDataset): its name and a fingerprint of its texts and labels key the cache.
    dataset = data.load_dataset(task, split, max_examples=max_examples, seed=data_seed, root=data_root)
    task = task if isinstance(task, str) and not Path(task).suffix else dataset.name
    if len(dataset) == 0:
        raise ValueError(f"{task}/{split} holds no texts")
    layer_list = None if layers is None else sorted(int(l) for l in layers)
    feature_list = None if feature_layers is None else sorted(int(l) for l in feature_layers)
    if feature_list is not None and layer_list is not None and not set(feature_list) <= set(layer_list):
        raise ValueError(f"feature_layers {feature_list} must be a subset of layers {layer_list}")
    if isinstance(feature_stride, bool) or not isinstance(feature_stride, (int, np.integer)) or feature_stride < 1:
        raise ValueError(f"feature_stride must be a positive integer, got {feature_stride!r}")
    settings = {
        "format": CACHE_FORMAT, "model": str(model_name), "revision": revision, "init": init,
        "seed": int(seed) if init == "random" else None, "task": task, "split": split,
        "max_length": max_length, "max_examples": max_examples, "data_seed": int(data_seed),
        "data": _data_fingerprint(dataset.texts, dataset.labels), "layers": layer_list,
        "feature_layers": feature_list, "feature_stride": int(feature_stride), "dtype": _dtype_name(dtype),
        "ntps_version": __version__,
    }
    if tokenizer is not None:  # only when given, so that existing keys stay valid
        settings["tokenizer"] = tokenizer_key(tokenizer)
    key = statistics_key(settings)
    folder = _entry_folder(settings, key)
    if not refresh:
        hit = _read_entry(folder, key)
        if hit is not None:
            return hit

    if model is None:
        model = ModelSource(model_name, init=init, seed=seed, dtype=dtype, device=device, revision=revision,
                            trust_remote_code=trust_remote_code, tokenizer=tokenizer)
    if isinstance(model, ModelSource) and (model.init != init or (init == "random" and model.seed != int(seed))):
        raise ValueError(f"the ModelSource is init={model.init!r}, seed={model.seed}, but init={init!r}, seed={seed} "
                         "was asked for: the cache would be keyed wrongly")
    _check_source_tokenizer(model, tokenizer)
    pair = model.get() if isinstance(model, ModelSource) else tuple(model)
    if len(pair) != 2:
        raise ValueError("model must be None, a (model, tokenizer) pair or a ModelSource")
    lm, tokenizer = pair
    from .extract import extract_moments
    from .features import resolve_device

    start = time.perf_counter()
    stats, features = extract_moments(
        lm, tokenizer, dataset.texts, dataset.labels, num_classes=dataset.num_classes, batch_size=batch_size,
        max_length=max_length, layers=layer_list, device=resolve_device(device) if device is not None else None,
        progress=progress, return_features=True,
        metadata={"dataset": task, "split": split, "init": init, "init_seed": settings["seed"]})
    seconds = time.perf_counter() - start
    kept = (feature_list if feature_list is not None else list(stats.layers))[::int(feature_stride)]
    missing = [l for l in kept if l not in stats.layers]
    if missing:
        raise ValueError(f"feature_layers {missing} were not extracted (layers {stats.layers})")
    if kept != list(stats.layers):
        features = features[:, [stats.layers.index(l) for l in kept]]
    info = {**settings, "settings": settings, "key": key, "n_texts": stats.n_texts, "n_tokens": stats.n_texts + stats.n_pairs,
            "n_pairs": stats.n_pairs, "classes": list(dataset.classes), "feature_layers": kept,
            "moment_layers": list(stats.layers), "hidden_size": stats.hidden_size, "extract_seconds": seconds,
            "batch_size": batch_size, "device": str(next(lm.parameters()).device),
            "computed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    from safetensors.numpy import save_file

    features = np.ascontiguousarray(features, dtype=np.float32)
    labels = np.ascontiguousarray(dataset.labels, dtype=np.int64)
    with atomic_dir(folder) as tmp:
        stats.save(tmp / "moments")
        save_file({"features": features, "labels": labels}, str(tmp / "features.safetensors"))
        (tmp / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    info["cached"] = False
    return TaskStatistics(stats, features, labels.copy(), info)


class StatisticsRun(NamedTuple):
    """What :func:`run_statistics` returns: the cached passes of several models over several tasks.

    ``train`` and ``test`` map model name -> task -> :class:`TaskStatistics` (a split not asked
    for is an empty dict); ``extraction`` has one row per (model, task, split) with texts,
    tokens, the seconds the pass took when it ran, whether this call read it from the cache, the
    device and tokens/s; ``failed`` maps a model that could not run to its error (only with
    ``skip_failed``).
    """

    train: dict
    test: dict
    extraction: pd.DataFrame
    failed: dict


def run_statistics(model_names: Sequence[str], tasks: Sequence[str], *, splits: Sequence[str] = ("train", "test"),
                   max_examples: Mapping[str, int | str | None] | None = None, keep_moments: Sequence[str] = ("train",),
                   init: str = "pretrained", seed: int = 0, dtype=None, device=None, revision: str | None = None,
                   trust_remote_code: bool = False, tokenizer: str | None = None, skip_failed: bool = False,
                   label: str | None = None, **options) -> StatisticsRun:
    """One forward pass per (model, task, split), each cached by :func:`task_statistics`.

    This is the loop every experiment chapter starts with. Each model is loaded at most once
    (a :class:`ModelSource`, only on a cache miss) and released before the next.

    Parameters
    ----------
    model_names : list of str
        What :func:`ntps.load_model` accepts.
    tasks : list
        Task names of ``ntps.data`` (offline tasks or the paper's hub datasets), or your own data
        (paths, DataFrames, ...: see :func:`task_statistics`); results are keyed by the task's name.
    splits : list of str
        Which splits to pass over ("train", "test").
    max_examples : dict, optional
        Split -> text cap (None: the task's default cap).
    keep_moments : list of str
        The splits whose moments are kept in memory; the others keep only features and labels
        (the moments of a test split, about 250 MB per task at d = 576, are not needed for NTPS).
    init, seed
        "pretrained", or "random" for the random-initialisation control (:func:`random_init`).
    dtype, device, revision, trust_remote_code, tokenizer
        How the models load (:func:`ntps.load_model`).
    skip_failed : bool
        Record a model that fails (cannot load, say) in ``failed`` and go on; otherwise raise.
    label : str, optional
        The model column of ``extraction`` (default: the model name, with " (random init)").
    **options
        Passed to :func:`task_statistics`: ``max_length``, ``data_root``, ``batch_size``,
        ``feature_stride``, ``layers``, ``progress``.

    Returns
    -------
    StatisticsRun
    """
    caps = dict(max_examples or {})
    train, test, rows, failed = {}, {}, [], {}
    stores = {"train": train, "test": test}
    unknown = [s for s in splits if s not in stores]
    if unknown:
        raise ValueError(f"splits must be among {tuple(stores)}, got {unknown}")
    for model_name in model_names:
        source = ModelSource(model_name, init=init, seed=seed, dtype=dtype, device=device, revision=revision,
                             trust_remote_code=trust_remote_code, tokenizer=tokenizer)
        shown = label or (model_name if init == "pretrained" else f"{model_name} (random init)")
        try:
            for split in splits:
                stores[split][model_name] = {}
                for task in tasks:
                    result = task_statistics(model_name, task, split, model=source, init=init, seed=seed,
                                             max_examples=caps.get(split), dtype=dtype, device=device,
                                             revision=revision, trust_remote_code=trust_remote_code,
                                             tokenizer=tokenizer, **options)
                    info = result.info
                    stores[split][model_name][info["task"]] = result if split in keep_moments else result._replace(
                        moments=None)
                    rows.append({"model": shown, "task": info["task"], "split": split, "texts": info["n_texts"],
                                 "tokens": info["n_tokens"], "seconds": info["extract_seconds"],
                                 "cached": info["cached"], "device": info["device"],
                                 "tokens/s": info["n_tokens"] / max(info["extract_seconds"], 1e-12)})
        except Exception as error:  # noqa: BLE001 - recorded for the reader, or raised
            if not skip_failed:
                raise
            failed[model_name] = f"{type(error).__name__}: {error}"
            train.pop(model_name, None)
            test.pop(model_name, None)
        finally:
            source.release()
    columns = ["model", "task", "split", "texts", "tokens", "seconds", "cached", "device", "tokens/s"]
    return StatisticsRun(train, test, pd.DataFrame(rows, columns=columns), failed)


# --------------------------------------------------------------------------------------------
# NTPS of every (task, layer, variant, k)
# --------------------------------------------------------------------------------------------
def k_fraction_grid(n: int) -> np.ndarray:
    """``n`` fractions of the width, ``j / (n + 1)`` for j = 1..n (n = 19 gives the released
    code's 0.05, 0.10, ..., 0.95). The full width is left out: there Pi_V is the projector onto
    the whole range of Sigma and every task scores 1."""
    if int(n) < 1:
        raise ValueError(f"need at least one k fraction, got {n}")
    return np.arange(1, int(n) + 1) / (int(n) + 1)


def _k_for(fraction: float, width: int, d_eff: int) -> int:
    return int(min(max(int(round(fraction * width)), 1), d_eff))


def ntps_table(moments_by_task: Mapping[str, Moments], *, k_fractions: Sequence[float] = k_fraction_grid(19),
               variants: Sequence[str] = VARIANTS, reference_fractions: Sequence[float] | None = None,
               reference_layers: Sequence[int] | None = None, rtol: float | None = None,
               backend: str = "numpy", device=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NTPS of every task, layer, variant and k, as one long table, with the time each took.

    Parameters
    ----------
    moments_by_task : dict
        Task -> ``Moments`` (from the train split).
    k_fractions : list of float
        The autoregressive rank as a fraction of the width d: ``k_v = round(f d)`` clipped to
        [1, d_eff] (d_eff = rank of c0); the column ``k`` records the k_v used.
    variants : list of str
        Any of "theorem" (``ntps.score.ntps_grid``, k_u = rank of M), "spectral"
        (``ntps_spectral_grid``) and "reference" (``ntps_reference_sweep``, the released code in
        float32, at ``reference_fractions``, default ``k_fractions``; its own k is int(f * rank)
        for U and V, so ``k`` is NaN there). Theorem and spectral come from one decomposition per
        layer.
    reference_layers : list of int, optional
        The layers for the reference variant (default all; it costs more).
    backend, device
        Where the theorem/spectral decompositions run (``"torch"`` and ``"cuda"`` for wide models
        on a GPU; see ``ntps.score.ntps_grid``). The reference variant runs in NumPy.

    Notes
    -----
    Returns ``(table, timings)``: table columns task, layer, variant, k_fraction, k, ntps, p (rank
    of Sigma), null (``ntps.score.ntps_null(k, p)``) and lift (``ntps.score.ntps_lift``; p, null and
    lift are NaN for the reference variant);
    timings one row per (task, variant) with ``seconds`` and ``layers``.
    """
    from .score import ntps_grids, ntps_lift, ntps_null, ntps_reference_sweep

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown NTPS variants {unknown}; use {VARIANTS}")
    if not moments_by_task:
        raise ValueError("moments_by_task is empty")
    fractions = np.asarray(k_fractions, dtype=float)
    if fractions.size == 0 or np.any((fractions <= 0) | (fractions > 1)):
        raise ValueError(f"k_fractions must be a non-empty list of values in (0, 1], got {list(fractions)}")
    ref_fractions = fractions if reference_fractions is None else np.asarray(reference_fractions, dtype=float)
    rows, timings = [], []
    for task, stats in moments_by_task.items():
        width = stats.hidden_size
        spent = {v: 0.0 for v in variants}
        counted = {v: 0 for v in variants}
        for layer in stats.layers:
            one = stats.layer(layer)
            if "theorem" in variants or "spectral" in variants:
                start = time.perf_counter()
                try:
                    theorem, spectral, sigma_rank = ntps_grids(**one, rtol=rtol, backend=backend, device=device)
                except ValueError as error:
                    raise ValueError(f"{task}, layer {layer}: {error}") from error
                seconds = time.perf_counter() - start
                both = [v for v in ("theorem", "spectral") if v in variants]
                for variant in both:
                    spent[variant] += seconds / len(both)
                    counted[variant] += 1
                    grid = theorem if variant == "theorem" else spectral
                    for f in fractions:
                        k = _k_for(f, width, grid.size)
                        null = ntps_null(k, sigma_rank)
                        rows.append((task, layer, variant, float(f), k, float(grid[k - 1]), sigma_rank, null,
                                     ntps_lift(grid[k - 1], null)))
            if "reference" in variants and (reference_layers is None or layer in reference_layers):
                start = time.perf_counter()
                sweep = ntps_reference_sweep(**one, fractions=ref_fractions)
                spent["reference"] += time.perf_counter() - start
                counted["reference"] += 1
                rows.extend((task, layer, "reference", float(f), np.nan, float(v), np.nan, np.nan, np.nan)
                            for f, v in zip(ref_fractions, sweep))
        timings.extend({"task": task, "variant": v, "seconds": spent[v], "layers": counted[v]} for v in variants)
    table = pd.DataFrame(rows, columns=["task", "layer", "variant", "k_fraction", "k", "ntps", "p", "null", "lift"])
    return table, pd.DataFrame(timings)


def below_rank(table: pd.DataFrame) -> tuple[pd.DataFrame, list[float]]:
    """Keep the k fractions whose k is below p (the rank of Sigma) on every task and layer.

    At k >= p the theorem-consistent and spectral NTPS are exactly 1 for every features, and just
    below p they sit near their null k / p (:func:`ntps.score.ntps_null`): a k grid that reaches p
    measures how many texts there were, not the features. The reference variant's rows (which
    carry no k) are kept. Returns ``(table, dropped_fractions)``.
    """
    ranked = table[table["p"].notna()]
    at_or_above = ranked.loc[ranked["k"] >= ranked["p"], "k_fraction"]
    dropped = sorted({float(f) for f in at_or_above})
    keep = table["p"].isna() | ~table["k_fraction"].isin(dropped)
    return table[keep].reset_index(drop=True), dropped


# --------------------------------------------------------------------------------------------
# probes and peers of every (task, layer)
# --------------------------------------------------------------------------------------------
def _layer_index(stats: TaskStatistics) -> list[int]:
    return list(stats.info.get("feature_layers") or stats.moments.layers)


def probe_table(train: Mapping[str, TaskStatistics], test: Mapping[str, TaskStatistics] | None = None, *,
                C: float = 1.0, ridge: float = 0.0, max_iter: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Logistic-regression and least-squares probes on every layer of every task.

    train, test : task -> :class:`TaskStatistics` of the train and test splits (same layers).
    C, ridge, max_iter : see ``ntps.probes.logistic_probe`` and ``mse_probe``.

    Returns ``(table, timings)``: table columns task, layer, train_accuracy (in-sample),
    test_accuracy (held out), train_mse, test_mse (summed over classes), converged,
    majority_accuracy (test accuracy of always predicting the training split's most frequent class)
    test_gain = test_accuracy - majority_accuracy (what the features add to the class balance) and
    test_kappa (Cohen's kappa of the held-out predictions, ``ntps.probes.cohen_kappa``: chance-corrected
    by the predictions' own marginals);
    timings one row per (task, probe) with ``seconds`` (training and evaluating on every layer).
    """
    from .probes import majority_accuracy, probe_layers

    if not train:
        raise ValueError("train is empty")
    frames, timings = [], []
    for task, tr in train.items():
        te = None if test is None else test.get(task)
        if te is not None and _layer_index(te) != _layer_index(tr):
            raise ValueError(f"{task}: train and test features hold different layers")
        num_classes = tr.moments.num_classes
        xte, yte = (te.features, te.labels) if te is not None else (None, None)
        start = time.perf_counter()
        logistic = probe_layers(tr.features, tr.labels, xte, yte, C=C, max_iter=max_iter, num_classes=num_classes,
                                mse=False)
        t_logistic = time.perf_counter() - start
        start = time.perf_counter()
        mse = probe_layers(tr.features, tr.labels, xte, yte, ridge=ridge, num_classes=num_classes, logistic=False)
        t_mse = time.perf_counter() - start
        majority = majority_accuracy(tr.labels, te.labels) if te is not None else float("nan")
        frames.append(pd.DataFrame({
            "task": task, "layer": _layer_index(tr), "train_accuracy": logistic["train_accuracy"],
            "test_accuracy": logistic["test_accuracy"], "train_mse": mse["train_mse"], "test_mse": mse["test_mse"],
            "converged": logistic["converged"], "majority_accuracy": majority,
            "test_gain": logistic["test_accuracy"] - majority, "test_kappa": logistic["test_kappa"]}))
        timings += [{"task": task, "probe": "logistic", "seconds": t_logistic},
                    {"task": task, "probe": "least squares", "seconds": t_mse}]
    return pd.concat(frames, ignore_index=True), pd.DataFrame(timings)


def peer_table(stats_by_task: Mapping[str, TaskStatistics], *, metrics: Sequence[str] = PEER_METRICS,
               knn_k: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Peer transferability metrics (``ntps.peers``) on every layer's features of every task.

    Returns ``(table, timings)``: table columns task, layer and one per metric; timings one row per
    (task, metric) with ``seconds``.
    """
    from . import peers

    functions: dict[str, Callable] = {
        "logme": peers.logme, "h_score": peers.h_score, "regularized_h_score": peers.regularized_h_score,
        "rankme": lambda f, y: peers.rankme(f), "knn_accuracy": lambda f, y: peers.knn_accuracy(f, y, k=knn_k)}
    unknown = [m for m in metrics if m not in functions]
    if unknown:
        raise ValueError(f"unknown peer metrics {unknown}; use {list(functions)}")
    if not stats_by_task:
        raise ValueError("stats_by_task is empty")
    rows, timings = [], []
    for task, stats in stats_by_task.items():
        spent = {m: 0.0 for m in metrics}
        layer_ids = _layer_index(stats)
        for position, layer in enumerate(layer_ids):
            row = {"task": task, "layer": layer}
            x = stats.features[:, position]
            for metric in metrics:
                start = time.perf_counter()
                row[metric] = functions[metric](x, stats.labels)
                spent[metric] += time.perf_counter() - start
            rows.append(row)
        timings += [{"task": task, "metric": m, "seconds": spent[m]} for m in metrics]
    return pd.DataFrame(rows), pd.DataFrame(timings)


# --------------------------------------------------------------------------------------------
# the released variant's basis sensitivity on real moments
# --------------------------------------------------------------------------------------------
def reference_sensitivity(layer_moments: Mapping[str, np.ndarray], *, fractions: Sequence[float],
                          n_perturbations: int = 8, scale: float = 1e-9, seed: int = 0,
                          k_fractions: Sequence[float] | None = None, rtol: float | None = None,
                          dtypes: Sequence = (np.float32,)) -> pd.DataFrame:
    """How much the released score moves when sxy is perturbed at round-off level.

    For each of ``n_perturbations`` draws, ``sxy + scale * max|sxy| * E`` with E standard normal
    (seeded; the perturbation is applied in float64), the released variant
    (``ntps_reference_sweep``) is recomputed at ``fractions`` in each of ``dtypes`` (float32 as
    released; float64 separates the basis arbitrariness from float32 round-off), and, for
    comparison, the theorem-consistent NTPS at ``k_fractions`` (default the same fractions of the
    width). Draw 0 is the unperturbed moments.

    layer_moments : one layer's ``{"sxx", "sxy", "c0", "c1"}`` (``Moments.layer(l)``); not modified.
    Returns a long table: draw, variant ("reference (float32)", ..., "theorem"), k_fraction, ntps.
    """
    from .score import ntps_grid, ntps_reference_sweep

    if int(n_perturbations) < 1:
        raise ValueError(f"n_perturbations must be at least 1, got {n_perturbations}")
    base = {name: np.array(layer_moments[name], dtype=np.float64, copy=True) for name in ("sxx", "sxy", "c0", "c1")}
    rng = np.random.default_rng(seed)
    fractions = np.asarray(fractions, dtype=float)
    k_fractions = fractions if k_fractions is None else np.asarray(k_fractions, dtype=float)
    width = base["sxx"].shape[0]
    size = float(np.abs(base["sxy"]).max())
    rows = []
    for draw in range(int(n_perturbations) + 1):
        moments = dict(base)
        if draw:
            moments["sxy"] = base["sxy"] + scale * size * rng.standard_normal(base["sxy"].shape)
        for dtype in dtypes:
            sweep = ntps_reference_sweep(**moments, fractions=fractions, dtype=dtype)
            label = f"reference ({np.dtype(dtype).name})"
            rows += [(draw, label, float(f), float(v)) for f, v in zip(fractions, sweep)]
        grid = ntps_grid(**moments, rtol=rtol)
        rows += [(draw, "theorem", float(f), float(grid[_k_for(f, width, grid.size) - 1])) for f in k_fractions]
    return pd.DataFrame(rows, columns=["draw", "variant", "k_fraction", "ntps"])


# --------------------------------------------------------------------------------------------
# every score against every target under every selection rule
# --------------------------------------------------------------------------------------------
def nearest(values, wanted: float) -> float:
    """The value among ``values`` closest to ``wanted`` (the smaller one on a tie): the available
    layer or k fraction nearest to one fixed in advance."""
    values = np.asarray(sorted(set(np.asarray(values, dtype=float).tolist())), dtype=float)
    if values.size == 0:
        raise ValueError("no values to choose from")
    return float(values[int(np.argmin(np.abs(values - wanted)))])


def selection_table(ntps: pd.DataFrame, probes: pd.DataFrame, peers: pd.DataFrame | None = None, *,
                      baselines: pd.DataFrame | None = None, targets: Mapping[str, bool] = TARGETS,
                      fixed_layer: int, fixed_k_fraction: float,
                      method: str = "spearman", n_boot: int = 2000, confidence: float = 0.95, seed: int = 0,
                      ) -> tuple[pd.DataFrame, dict]:
    """Every score against every probe target across tasks, under the three selection rules.

    Parameters
    ----------
    ntps : pandas.DataFrame
        :func:`ntps_table` output (task, layer, variant, k_fraction, ntps); each variant is one
        score whose configuration is (layer, k_fraction).
    probes : pandas.DataFrame
        :func:`probe_table` output (task, layer and the target columns).
    peers : pandas.DataFrame or None
        :func:`peer_table` output; each metric is one score, configuration (layer,).
    baselines : pandas.DataFrame or None
        :func:`task_baselines` output; scored like the peers (family "baseline").
    targets : dict
        Target column -> whether high is good (``higher_is_better`` of the selection).
    fixed_layer, fixed_k_fraction
        The configuration fixed in advance (the nearest available layer and fraction of each score
        are used, e.g. for a variant computed on fewer layers).

    Notes
    -----
    Each (score, target) pair goes through ``ntps.evaluate.compare_selections`` (in-sample,
    leave-one-task-out, fixed), with bootstrap intervals over tasks. A pair whose target is
    constant across tasks (e.g. in-sample accuracy 1.0 everywhere when N < d) has no correlation:
    its row holds NaN and a note. Returns ``(summary, selections)``: summary columns score, family
    ("ntps", "peer" or "baseline"), target, rule, estimate, low, high, p_value, n, configs, note; selections maps
    (score, target) -> {rule: Selection}.
    """
    from .evaluate import compare_selections

    merged = ntps.merge(probes, on=["task", "layer"], how="inner")
    scores = [(f"ntps:{variant}", "ntps", merged[merged.variant == variant], "ntps", ["layer", "k_fraction"])
              for variant in ntps["variant"].unique()]
    for family, extra in (("peer", peers), ("baseline", baselines)):
        if extra is not None:
            joined = extra.merge(probes, on=["task", "layer"], how="inner")
            scores += [(metric, family, joined, metric, ["layer"])
                       for metric in extra.columns if metric not in ("task", "layer")]
    rows, selections = [], {}
    for name, family, table, column, config in scores:
        for target, higher in targets.items():
            if target not in table.columns:
                continue
            fixed = {"layer": int(nearest(table["layer"], fixed_layer))}
            if "k_fraction" in config:
                fixed["k_fraction"] = float(nearest(table["k_fraction"], fixed_k_fraction))
            data = table
            try:
                summary, chosen = compare_selections(data, score=column, target=target, fixed=fixed, config=config,
                                                     method=method, higher_is_better=higher, n_boot=n_boot,
                                                     confidence=confidence, seed=seed)
            except ValueError as error:
                constant = data.groupby(config)[target].nunique().max() <= 1
                note = "target constant across tasks" if constant else str(error)
                rows += [{"score": name, "family": family, "target": target, "rule": rule, "estimate": np.nan,
                          "low": np.nan, "high": np.nan, "p_value": np.nan, "n": data["task"].nunique(),
                          "configs": "", "note": note} for rule in ("in-sample", "leave-one-task-out", "fixed")]
                continue
            selections[name, target] = chosen
            for rule, row in summary.iterrows():
                rows.append({"score": name, "family": family, "target": target, "rule": rule, **row.to_dict(),
                             "note": ""})
    return pd.DataFrame(rows), selections


def task_baselines(stats_by_task: Mapping[str, TaskStatistics]) -> pd.DataFrame:
    """Scores that know nothing about the model, to set beside NTPS and the peers.

    For each task (from its training split): ``majority_share``, the frequency of the most common
    class, and ``neg_classes``, minus the number of classes C. Repeated on every feature layer so
    that they go through the same tables and selection rules as the other scores (the rules then
    choose only the layer of the *target*). Returns columns task, layer, majority_share, neg_classes.
    """
    from .probes import majority_accuracy

    rows = []
    for task, stats in stats_by_task.items():
        share = majority_accuracy(stats.labels)
        rows += [{"task": task, "layer": layer, "majority_share": share,
                  "neg_classes": -float(stats.moments.num_classes)}
                 for layer in _layer_index(stats)]
    return pd.DataFrame(rows)


def correlation_records(selections: Mapping, probes: pd.DataFrame, *, model: str,
                        score: str = "ntps:theorem", target: str = "test_accuracy") -> list[dict]:
    """The per-task rows the correlation chapter saves as the ``correlation`` table.

    For each selection rule of ``selections[(score, target)]`` (from :func:`selection_table`), the
    task's NTPS at the configuration that rule chose for it, beside every probe score at that
    layer (from :func:`probe_table`). The fields are ``ntps.results.TABLE_SCHEMAS["correlation"]``.
    """
    records = []
    for rule, chosen in selections.get((score, target), {}).items():
        pairs = chosen.pairs.drop(columns=[target]).merge(probes, on=["task", "layer"])
        records += [{"model": model, "task": row.task, "rule": rule, "variant": score.split(":", 1)[1],
                     "selected_on": target, "layer": int(row.layer), "k_fraction": float(row.k_fraction),
                     "ntps": float(row.ntps), "train_accuracy": float(row.train_accuracy),
                     "test_accuracy": float(row.test_accuracy), "train_mse": float(row.train_mse),
                     "test_mse": float(row.test_mse), "test_gain": float(row.test_gain),
                     "test_kappa": float(row.test_kappa)}
                    for row in pairs.itertuples()]
    return records


def layer_choice(layers: pd.DataFrame, *, k_fraction: float, near: float = 0.02) -> pd.DataFrame:
    """How well NTPS picks a layer within each task: one row per (model, task).

    ``layers`` has columns model, task, layer, k_fraction, ntps, test_accuracy (the ``layers``
    table of the correlation chapter). At the available fraction nearest ``k_fraction``: the
    Spearman correlation across layers of NTPS with held-out probe accuracy, the layer where NTPS
    peaks and where the probe peaks, the accuracy lost by probing the NTPS-best layer instead of the
    probe-best one, and whether that loss is at most ``near`` ("within a few points").
    """
    from .evaluate import correlation

    fraction = nearest(layers["k_fraction"], k_fraction)
    part = layers[np.isclose(layers["k_fraction"], fraction)]
    rows = []
    for (model, task), group in part.groupby(["model", "task"], sort=False):
        group = group.sort_values("layer")
        at_ntps = group.loc[group["ntps"].idxmax()]
        at_probe = group.loc[group["test_accuracy"].idxmax()]
        loss = float(at_probe.test_accuracy - at_ntps.test_accuracy)
        rows.append({"model": model, "task": task, "k_fraction": fraction,
                     "spearman_over_layers": correlation(group["ntps"], group["test_accuracy"]),
                     "ntps_best_layer": int(at_ntps.layer), "probe_best_layer": int(at_probe.layer),
                     "best_accuracy": float(at_probe.test_accuracy), "accuracy_lost": loss,
                     "within_few_points": loss <= near})
    return pd.DataFrame(rows)


#: The committed output of ``benchmarks/n_above_d.py`` (in a checkout of the book).
N_ABOVE_D_RUN = ("benchmarks", "results", "n-above-d-cpu-2026-11-30")


def committed_run(folder: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The tables of a committed ``benchmarks/n_above_d.py`` run, shaped like this module's own.

    Returns ``(ntps, probes, baselines)``: ``ntps`` as :func:`ntps_table` gives it (variant
    "theorem", with p, null and lift), ``probes`` as :func:`probe_table` (plus n_train, n_test and
    classes), and ``baselines`` as :func:`task_baselines` (the run's ``majority_share`` column; for
    a run without it, recomputed from the same training texts, ``ntps.data.load`` at the run's cap). ``folder`` defaults to the run
    committed in the book's checkout (:data:`N_ABOVE_D_RUN`).
    """
    from . import data
    from .notebooks import repo_root
    from .probes import majority_accuracy

    folder = Path(folder) if folder is not None else repo_root().joinpath(*N_ABOVE_D_RUN)
    path = folder / "layers.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no committed run at {path}: run `python benchmarks/n_above_d.py` in a checkout")
    table = pd.read_csv(path)
    ntps = table[["task", "layer", "k_fraction", "k", "ntps", "p", "null", "lift"]].assign(variant="theorem")
    probe_columns = ["task", "layer", "n_train", "n_test", "classes", "train_accuracy", "test_accuracy", "train_mse",
                     "test_mse", "converged", "majority_accuracy", "test_gain", "test_kappa"]
    probes = table.drop_duplicates(["task", "layer"])[probe_columns].reset_index(drop=True)
    rows = []
    for task, part in probes.groupby("task", sort=False):
        if "majority_share" in table.columns:
            share = float(table.loc[table["task"] == task, "majority_share"].iloc[0])
        else:  # an older run: recompute it from the same training texts
            share = majority_accuracy(data.load(task, "train", max_examples=int(part["n_train"].iloc[0])).labels)
        rows += [{"task": task, "layer": int(layer), "majority_share": share,
                  "neg_classes": -float(part["classes"].iloc[0])} for layer in part["layer"]]
    return ntps, probes, pd.DataFrame(rows)


def _logged_ratio(path: Path, label: str) -> float | None:
    """A ratio printed by a committed benchmark log (``<label> : 0.15x``), if the log is there."""
    if not path.is_file():
        return None
    match = re.search(re.escape(label) + r"\s*:\s*([0-9.]+)x", path.read_text())
    return float(match.group(1)) if match else None


def should_you_use_ntps(profile: str = "cpu", *, model: str | None = None, near: float = 0.02) -> str:
    """A short, honest answer to "should I use NTPS?", as Markdown, computed from the book's own
    saved results (the ``selection``, ``layers`` and ``lora`` tables of ``profile``) and the
    committed GPU benchmark log; never written by hand. Says so when the chapters have not run."""
    from .evaluate import format_interval
    from .results import ResultsNotFoundError, load_table
    from .score import DEFAULT_K_FRACTION

    try:
        selection, meta = load_table("selection", profile=profile)
        layer_rows, _ = load_table("layers", profile=profile)
    except ResultsNotFoundError:
        return (f"*The correlation chapter has not been run with the `{profile}` profile yet, so there is "
                "nothing measured to answer with: `make book` runs it first.*")
    selection, layers = pd.DataFrame(selection), pd.DataFrame(layer_rows)
    model = model or meta.get("model") or layers["model"].iloc[0]
    selection, layers = selection[selection.model == model], layers[layers.model == model]
    n_tasks, n_train, width = layers["task"].nunique(), int(meta["n_train"]), int(meta["width"])
    choice = layer_choice(layers, k_fraction=DEFAULT_K_FRACTION, near=near)
    rho = choice["spearman_over_layers"]

    def held_out(score, target="test_accuracy"):
        row = selection[(selection.score == score) & (selection.target == target)
                        & (selection.rule == "leave-one-task-out")]
        return format_interval(row.iloc[0].to_dict()) if len(row) else "not computed"

    lines = [
        f"*From {model} on {n_tasks} tasks of {n_train} training texts each (width d = {width}); intervals are "
        "95% bootstrap intervals over tasks.*",
        "",
        f"- **Which layer to probe.** Read at k = {choice['k_fraction'].iloc[0]:.2f} d, NTPS and held-out probe "
        f"accuracy agree across layers at a Spearman correlation from {rho.min():+.2f} to {rho.max():+.2f} "
        f"(median {rho.median():+.2f}) depending on the task. The layer where NTPS peaks gives a probe within "
        f"{near:.2f} of the best layer's accuracy on {int(choice['within_few_points'].sum())} of {n_tasks} tasks; "
        f"the best probe layer itself ranges from {choice['probe_best_layer'].min()} to "
        f"{choice['probe_best_layer'].max()}. Probing every layer on the same forward pass is the safer way to "
        "choose.",
        f"- **Which task a model suits.** Across tasks, with (layer, k) chosen on the other tasks, NTPS correlates "
        f"with held-out probe accuracy at {held_out('ntps:theorem')}; the peers on the same features: LogME "
        f"{held_out('logme')}, regularised H-score {held_out('regularized_h_score')}, RankMe {held_out('rankme')}; "
        f"the majority-class share alone {held_out('majority_share')}."
        + (f" Against Cohen's kappa of the probe, a chance-corrected target, NTPS gives {meta['kappa_held_out']}; with "
           f"the majority share held fixed, {meta['partial_held_out']}." if "kappa_held_out" in meta else ""),
    ]
    large = meta.get("n_above_d")
    if large:
        lines.append(
            f"- **With more texts than the width** (a committed run: {large['tasks']} tasks, {large['tasks_1200']} "
            f"of them with 1,200 training texts): the paper's protocol (configuration and target in-sample) gives "
            f"{large['paper_protocol']}; held out, {large['held_out']} against accuracy, {large['kappa_held_out']} "
            f"against kappa, {large['partial_held_out']} given the majority share; the majority share alone "
            f"{large['majority_held_out']}.")
    costs = meta.get("costs", {})
    if costs:
        lines.append(
            f"- **What it costs.** Given one forward pass ({costs['forward_seconds']:.0f} s here), NTPS of every layer "
            f"and k took {costs['ntps_seconds']:.1f} s and the logistic probes on every layer "
            f"{costs['probe_seconds']:.1f} s: at this N the two are of the same order, and the forward pass, which "
            "both need, dominates.")
    from .notebooks import repo_root

    try:
        log = repo_root() / "benchmarks" / "results" / "h200-2026-11-28-run1" / "extract-llama3.txt"
    except FileNotFoundError:
        log = Path("/nonexistent")
    ratio = _logged_ratio(log, "moments / bare throughput")
    if ratio is not None:
        lines.append(
            f"  At the Llama-3-8B shape on an H200 (committed log `{log.parent.name}`), extracting the moments ran at "
            f"{ratio:.2f}x the throughput of the bare forward pass: there the moments cost more than the pass "
            "itself (the extraction page has the figures).")
    try:
        lora_rows, _ = load_table("lora", profile=profile)
    except ResultsNotFoundError:
        lora_rows = []
    lora = pd.DataFrame(lora_rows)
    if len(lora) and {"gain_low", "gain_high"} <= set(lora.columns):
        from .evaluate import correlations

        lora = lora[lora.model == model]
        excluded = int(((lora.gain_low > 0) | (lora.gain_high < 0)).sum())
        agreement = correlations(lora["ntps"], -lora["gain"], methods=["spearman"]).loc["spearman"]
        lines.append(
            f"- **Whether LoRA will pay.** On {len(lora)} tasks, the gain of LoRA over the probe has an interval "
            f"that excludes 0 on {excluded}; NTPS at the fixed configuration correlates with minus the gain at "
            f"{format_interval(agreement)} (the LoRA chapter).")
    lines.append(
        f"- **When the bounds say NTPS can be trusted**: many more texts than dimensions (here N / d = "
        f"{n_train / width:.2f}), a small k, and k below p, the rank of S_xx (p <= min(N, d) = {min(n_train, width)} "
        "here): at k >= p every task scores exactly 1.")
    return "\n".join(lines)
