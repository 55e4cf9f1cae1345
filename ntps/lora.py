"""LoRA fine-tuning of a causal LM for text classification: what NTPS is meant to predict.

The paper's practical claim is that NTPS says, before any fine-tuning, how much LoRA will add
over a linear probe on the frozen model. This module runs that fine-tuning:

* low-rank adapters (``peft``) on the attention projections of the model: the module names are
  found per architecture (:func:`find_attention_modules`: ``q_proj/k_proj/v_proj`` for Llama,
  Qwen2, Mistral; ``c_attn`` for GPT-2; ``qkv_proj`` for OpenELM; ...) or given explicitly;
* a classification head ``Linear(d, C)`` on the **mean-pooled last hidden state**
  ``x_i = (1/T_i) sum_t h_{i,t}`` over the real tokens of text i (the convention of
  ``ntps.features.mean_pool`` and ``ntps.extract``), trained jointly with the adapters by
  cross-entropy;
* a fixed budget of optimiser steps (AdamW, or Adafactor as in the paper) with a warm-up and a
  cosine (or linear, or constant) schedule, the formula of ``transformers``'
  ``get_cosine_schedule_with_warmup``; a seed decides everything (initialisation, batch order,
  dropout), and on the CPU a run is bitwise reproducible;
* checkpoints every few steps, written atomically as safetensors (adapter, head and optimiser
  tensors, random-generator states) plus JSON (step, losses, settings): never pickled, and a
  resumed run equals an uninterrupted one. A finished run's checkpoint is also its cache: a rerun
  with the same inputs returns at once;
* :class:`LoraSettings` holds every hyper-parameter of a run, checked once; it goes from the
  parameter file into :func:`train_lora`, the cache key of :func:`fine_tune_task` and the results;
* :func:`lora_accuracy` (held-out accuracy) and :func:`merge_adapter`, which folds the adapters
  into the weights (``merge_and_unload``) and returns a plain ``transformers`` model whose moments
  ``ntps.extract_moments`` computes again (NTPS after LoRA).

The model passed to :func:`train_lora` is never modified: training works on a copy.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import time
import warnings
from dataclasses import dataclass, field, fields
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from . import __version__
from .cache import atomic_dir, digest

__all__ = [
    "ATTENTION_TARGETS",
    "OPTIMIZERS",
    "SCHEDULES",
    "AUTOCAST_DTYPES",
    "AttentionModulesNotFoundError",
    "LoraSettings",
    "LoraResult",
    "linear_module_names",
    "find_attention_modules",
    "check_label_sets",
    "lr_factor",
    "batch_order",
    "train_lora",
    "predict",
    "lora_accuracy",
    "merge_adapter",
    "gain_interval",
    "gain_bootstrap",
    "LoraTaskRun",
    "fine_tune_task",
]

# Candidate attention projections, in the order they are tried: the first set whose every name is
# a linear layer of the model is used.
ATTENTION_TARGETS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "k_proj", "v_proj"),  # Llama, Qwen2, Mistral, Gemma, Phi, OPT, ...
    ("qkv_proj",),  # OpenELM, Phi-3
    ("c_attn",),  # GPT-2 (a Conv1D)
    ("query_key_value",),  # GPT-NeoX, Falcon, Bloom
    ("Wqkv",),  # MPT
    ("query", "key", "value"),  # BERT-style encoders
)
OPTIMIZERS = ("adamw", "adafactor")
SCHEDULES = ("cosine", "linear", "constant")
AUTOCAST_DTYPES = ("bfloat16",)  # LoraSettings.autocast: float16 would need loss scaling
CHECKPOINT_FORMAT = "ntps-lora-checkpoint/1"


class AttentionModulesNotFoundError(ValueError):
    """No attention projection (or none of the requested modules) is a linear layer of the model."""


# --------------------------------------------------------------------------------------------
# finding the modules to adapt
# --------------------------------------------------------------------------------------------
def _linear_types() -> tuple[type, ...]:
    types: list[type] = [torch.nn.Linear]
    try:
        from transformers.pytorch_utils import Conv1D

        types.append(Conv1D)
    except ImportError:  # pragma: no cover - very old transformers
        pass
    return tuple(types)


def linear_module_names(model) -> dict[str, int]:
    """The leaf names of the model's linear layers (``nn.Linear`` and GPT-2's ``Conv1D``), each
    with how many modules carry it: ``{"q_proj": 30, "lm_head": 1, ...}``, in order of appearance."""
    types = _linear_types()
    found: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, types):
            leaf = name.rsplit(".", 1)[-1]
            found[leaf] = found.get(leaf, 0) + 1
    return found


def _describe(found: dict[str, int]) -> str:
    return ", ".join(f"{name} (x{count})" for name, count in found.items()) or "none"


def find_attention_modules(model, target_modules: Sequence[str] | None = None) -> list[str]:
    """The module names LoRA adapts: ``target_modules`` checked against the model, or the first of
    :data:`ATTENTION_TARGETS` whose every name is a linear layer of the model.

    Raises :class:`AttentionModulesNotFoundError` listing the linear layers that exist when no
    candidate matches, or when a requested name is not a linear layer of the model.
    """
    found = linear_module_names(model)
    kind = type(model).__name__
    if target_modules is not None:
        if isinstance(target_modules, str):
            target_modules = [target_modules]
        targets = [str(t) for t in target_modules]
        if not targets:
            raise AttentionModulesNotFoundError("target_modules is empty: name at least one linear layer to adapt")
        missing = [t for t in targets if t not in found]
        if missing:
            raise AttentionModulesNotFoundError(
                f"{kind} has no linear layer named {missing}; its linear layers are: {_describe(found)}")
        return targets
    for candidate in ATTENTION_TARGETS:
        if all(name in found for name in candidate):
            return list(candidate)
    raise AttentionModulesNotFoundError(
        f"no attention projections found in {kind}: tried {[list(c) for c in ATTENTION_TARGETS]}; its linear "
        f"layers are: {_describe(found)}. Pass target_modules=[...] with the names to adapt.")


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _check_texts_labels(texts, labels, what: str) -> tuple[list[str], np.ndarray]:
    if isinstance(texts, str):
        raise TypeError(f"{what} texts must be a sequence of strings, not one string; wrap it in a list")
    texts = list(texts)
    if not texts:
        raise ValueError(f"no {what} texts given: LoRA needs at least one text")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{what} texts must be strings; entries {bad[:5]} are {type(texts[bad[0]]).__name__}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(texts):
        raise ValueError(f"{len(texts)} {what} texts but labels of shape {labels.shape}: give one integer label "
                         "per text")
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.isfinite(labels)) and \
                np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise TypeError(f"{what} labels must be integers 0..C-1, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise ValueError(f"{what} labels must be >= 0, found {int(labels.min())}")
    return texts, labels


def check_label_sets(train_labels, test_labels) -> list[int]:
    """The sorted label set, after checking that train and test hold the same one.

    Raises ``ValueError`` naming the labels found in one split only: a test label never seen in
    training cannot be predicted, and a training class missing from the test split makes the
    accuracy of a different task.
    """
    train = set(np.unique(np.asarray(train_labels)).tolist())
    test = set(np.unique(np.asarray(test_labels)).tolist())
    if train != test:
        only_train, only_test = sorted(train - test), sorted(test - train)
        parts = []
        if only_test:
            parts.append(f"labels {only_test} occur in the test split but not in training")
        if only_train:
            parts.append(f"labels {only_train} occur in training but not in the test split")
        raise ValueError("train and test label sets differ: " + "; ".join(parts))
    return sorted(train)


def _positive_int(value, name: str, what: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}{what}")
    return int(value)


def _nonnegative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be at least 0, got {value}")
    return int(value)


def _real(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def _nonnegative_real(value, name: str) -> float:
    value = _real(value, name)
    if not 0.0 <= value < math.inf:
        raise ValueError(f"{name} must be at least 0 and finite, got {value}")
    return value


def _positive_real(value, name: str, what: str = "") -> float:
    value = _real(value, name)
    if not 0.0 < value < math.inf:
        raise ValueError(f"{name} must be positive and finite{what}, got {value}")
    return value


def _fraction(value, name: str) -> float:
    value = _real(value, name)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value}")
    return value


def _alpha(value) -> int | float:
    alpha = _positive_real(value, "alpha")
    # A whole alpha as an integer: the type peft gives lora_alpha, and one JSON (one cache key) for 16 and 16.0.
    return int(alpha) if alpha.is_integer() else alpha


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _choice(value, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return str(value)


def _autocast(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, torch.dtype):
        value = str(value).removeprefix("torch.")
    if not isinstance(value, str):
        raise TypeError(f"autocast must be None or a dtype name such as 'bfloat16', got {value!r}")
    name = {"bf16": "bfloat16"}.get(value.lower(), value.lower())
    if name not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be None (no autocast) or 'bfloat16', got {value!r}; float16 autocast "
                         "needs loss scaling, which train_lora does not do")
    return name


def _module_names(value) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence):
        raise TypeError(f"target_modules must be a list of module names or None, got {value!r}")
    names = tuple(value)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"target_modules must be module names (strings), got {list(names)}")
    if not names or not all(names):
        raise ValueError("target_modules must name at least one linear layer, or be None (found per architecture)")
    return names


# --------------------------------------------------------------------------------------------
# the settings of a run
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoraSettings:
    """Every hyper-parameter of a LoRA run, checked once: what :func:`train_lora` and
    :func:`fine_tune_task` run, key their caches on and save with their results.

    Frozen and hashable; each field is checked and brought to one type when the object is made
    (``ValueError`` or ``TypeError`` naming the field and what it allows), so two settings that
    compare equal give the same cache key.

    Parameters
    ----------
    steps : int
        Optimiser updates, at least 1 (the budget; no default).
    batch_size : int
        Texts per update, at least 1, drawn in seeded epochs (:func:`batch_order`).
    lr : float
        Base learning rate, positive; the head's is ``head_lr_scale * lr``.
    rank, alpha, dropout
        The adapters: ``peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout)``; rank at
        least 1, alpha positive (kept as an integer when whole, as ``peft`` types it), dropout in
        [0, 1).
    target_modules : tuple of str or None
        Names of the linear layers to adapt; None: the attention projections
        :func:`find_attention_modules` finds for the architecture. A single name is a 1-tuple.
    optimizer : {"adamw", "adafactor"}
        ``torch.optim.AdamW``, or ``transformers``' Adafactor with ``scale_parameter=False,
        relative_step=False, warmup_init=False`` (the paper's).
    weight_decay : float
        At least 0.
    schedule : {"cosine", "linear", "constant"}
        The learning-rate curve after warm-up (:func:`lr_factor`).
    warmup_ratio : float
        In [0, 1): ``ceil(warmup_ratio * steps)`` warm-up updates.
    max_grad_norm : float or None
        Clip the gradient's global norm to this (positive); None: no clipping.
    head_lr_scale : float
        The head's learning rate over the adapters', positive.
    max_length : int or None
        Truncate texts to this many tokens, special tokens included (at least 1); None: no
        truncation.
    group_by_length : bool
        Batches of texts of similar length (less padding, the same texts per window).
    seed : int
        At least 0. Decides the adapter and head initialisation, the batch order and dropout.
    checkpoint_every : int
        Updates between checkpoints, at least 1. It does not change the result, so it is no part
        of :meth:`result_dict` nor of any cache key.
    autocast : {None, "bfloat16"}
        Run the backbone's training forward under ``torch.autocast`` in this dtype (CPU or GPU).
        The weights keep their dtype (float32 master weights for a float32 model, and so the
        adapters and their optimiser state), and the head and the loss stay float32, outside
        autocast; evaluation (:func:`predict`) runs without it. None (the default): no autocast,
        and no part of any cache key or checkpoint fingerprint. Pays on GPUs and on CPUs with
        native bf16 products (``ntps.models.cpu_supports_bf16``); elsewhere it is slower than
        float32.

    Examples
    --------
    >>> from ntps.lora import LoraSettings
    >>> settings = LoraSettings(steps=48, lr=3e-3, group_by_length=True)
    >>> settings.rank, settings.alpha, settings.optimizer, settings.target_modules
    (8, 16, 'adamw', None)
    >>> settings.replace(optimizer="adafactor", target_modules=["q_proj", "v_proj"]).target_modules
    ('q_proj', 'v_proj')
    >>> LoraSettings.from_dict(settings.to_dict()) == settings
    True
    >>> "checkpoint_every" in settings.to_dict(), "checkpoint_every" in settings.result_dict()
    (True, False)
    >>> LoraSettings(steps=48, dropout=1.5)
    Traceback (most recent call last):
    ...
    ValueError: dropout must lie in [0, 1), got 1.5
    >>> LoraSettings.from_dict({"steps": 48, "learning_rate": 3e-3})
    Traceback (most recent call last):
    ...
    TypeError: unknown LoRA setting(s) ['learning_rate']; the settings are steps, batch_size, lr, ...
    """

    steps: int
    batch_size: int = 8
    lr: float = 1e-4
    rank: int = 8
    alpha: float = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_ratio: float = 0.05
    max_grad_norm: float | None = 1.0
    head_lr_scale: float = 1.0
    max_length: int | None = None
    group_by_length: bool = False
    seed: int = 0
    checkpoint_every: int = 50
    autocast: str | None = None  # last: a new field must not move the others (positional use)

    def __post_init__(self):
        checked = {
            "steps": _positive_int(self.steps, "steps",
                                   ": a budget of zero steps trains nothing (use a linear probe for that)"),
            "batch_size": _positive_int(self.batch_size, "batch_size"),
            "lr": _positive_real(self.lr, "lr"),
            "rank": _positive_int(self.rank, "rank"),
            "alpha": _alpha(self.alpha),
            "dropout": _fraction(self.dropout, "dropout"),
            "target_modules": _module_names(self.target_modules),
            "optimizer": _choice(self.optimizer, "optimizer", OPTIMIZERS),
            "weight_decay": _nonnegative_real(self.weight_decay, "weight_decay"),
            "schedule": _choice(self.schedule, "schedule", SCHEDULES),
            "warmup_ratio": _fraction(self.warmup_ratio, "warmup_ratio"),
            "max_grad_norm": None if self.max_grad_norm is None else _positive_real(
                self.max_grad_norm, "max_grad_norm", " (or None: no clipping)"),
            "head_lr_scale": _positive_real(self.head_lr_scale, "head_lr_scale"),
            "max_length": None if self.max_length is None else _positive_int(
                self.max_length, "max_length", " (or None: no truncation)"),
            "group_by_length": _flag(self.group_by_length, "group_by_length"),
            "seed": _nonnegative_int(self.seed, "seed"),
            "checkpoint_every": _positive_int(self.checkpoint_every, "checkpoint_every"),
            "autocast": _autocast(self.autocast),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def _check_names(cls, names) -> None:
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise TypeError(f"unknown LoRA setting(s) {unknown}; the settings are {', '.join(known)}")

    @classmethod
    def from_dict(cls, values: Mapping) -> "LoraSettings":
        """The settings of a mapping such as :meth:`to_dict` gives (a saved run, a parameter file);
        an unknown name is a ``TypeError`` that lists the known ones."""
        cls._check_names(values)
        return cls(**values)

    def replace(self, **changes) -> "LoraSettings":
        """A copy with ``changes`` applied, checked again."""
        self._check_names(changes)
        return dataclass_replace(self, **changes)

    def to_dict(self) -> dict:
        """Every field, JSON-safe (``target_modules`` as a list): what is saved with results."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if values["target_modules"] is not None:
            values["target_modules"] = list(values["target_modules"])
        return values

    def result_dict(self) -> dict:
        """:meth:`to_dict` without the fields that cannot change the result (``checkpoint_every``)."""
        values = self.to_dict()
        del values["checkpoint_every"]
        return values


def _settings_from(settings, overrides: dict, caller: str) -> LoraSettings:
    """The settings of a call: ``settings`` (a :class:`LoraSettings`, a mapping, or None: the
    defaults) with keyword ``overrides`` applied."""
    if settings is None:
        if "steps" not in overrides:
            raise TypeError(f"{caller} needs steps=... (the training budget), or settings=LoraSettings(steps=...)")
        return LoraSettings.from_dict(overrides)
    if isinstance(settings, Mapping):
        settings = LoraSettings.from_dict(settings)
    elif not isinstance(settings, LoraSettings):
        raise TypeError(f"settings must be a LoraSettings (or a mapping of its fields), got {type(settings).__name__}")
    return settings.replace(**overrides) if overrides else settings


# --------------------------------------------------------------------------------------------
# schedule and batch order: pure functions of the step, so a resumed run needs only the step
# --------------------------------------------------------------------------------------------
def lr_factor(step: int, total: int, warmup: int, schedule: str = "cosine") -> float:
    """Multiplier of the base learning rate at update ``step`` (0-based) of ``total``.

    Linear warm-up ``step / warmup`` for the first ``warmup`` updates (so the very first update has
    rate 0, as in ``transformers``' schedulers), then ``0.5 (1 + cos(pi p))`` (cosine),
    ``1 - p`` (linear) or 1 (constant) with ``p = (step - warmup) / (total - warmup)``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if schedule == "constant":
        return 1.0
    progress = float(step - warmup) / float(max(1, total - warmup))
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def batch_order(n: int, steps: int, batch_size: int, seed: int, *, lengths: Sequence[int] | None = None,
                group: int = 50) -> np.ndarray:
    """Text indices of every step, (steps, batch_size), independent of the torch random state.

    Consecutive seeded permutations of ``range(n)`` (one per epoch,
    ``numpy.random.default_rng([seed, epoch])``) cut into batches; an epoch's tail continues into
    the next epoch. With ``lengths`` (tokens per text), batches of similar length are formed, as
    ``transformers``' ``group_by_length`` does, to waste less compute on padding: every window of
    ``group`` consecutive batches is sorted by length (longest first), cut into batches again, and
    the batches of the window are shuffled (seeded). Each window holds the same texts either way.
    """
    needed = steps * batch_size
    epochs = -(-needed // n)
    stream = np.concatenate([np.random.default_rng([int(seed), epoch]).permutation(n) for epoch in range(epochs)])
    order = stream[:needed].reshape(steps, batch_size)
    if lengths is None:
        return order
    lengths = np.asarray(lengths)
    if lengths.shape != (n,):
        raise ValueError(f"lengths must hold one length per text ({n}), got shape {lengths.shape}")
    grouped = np.empty_like(order)
    shuffle = np.random.default_rng([int(seed), 1 << 20])
    for start in range(0, steps, group):
        window = order[start:start + group].reshape(-1)
        window = window[np.argsort(-lengths[window], kind="stable")].reshape(-1, batch_size)
        grouped[start:start + len(window)] = window[shuffle.permutation(len(window))]
    return grouped


# --------------------------------------------------------------------------------------------
# the model: adapters + a head on the mean-pooled last hidden state
# --------------------------------------------------------------------------------------------
def _right_padded(sequences, pad_id, device):
    from .extract import _right_padded as pad  # the same padding convention as the extraction

    return pad(sequences, pad_id, device)


def _tokenize(tokenizer, texts, max_length):
    ids = tokenizer(texts, add_special_tokens=True, truncation=max_length is not None,
                    max_length=max_length)["input_ids"]
    empty = [i for i, seq in enumerate(ids) if len(seq) == 0]
    if empty:
        raise ValueError(f"{len(empty)} texts tokenise to nothing (positions {empty[:5]}); drop them first")
    return ids


def _pooled_last_state(backbone, ids, mask, autocast: str | None = None):
    """Mean of the last hidden state over the real tokens: [B, d] (float32 or wider). With
    ``autocast``, the backbone's forward runs under ``torch.autocast`` in that dtype; the pooling
    does not."""
    import contextlib

    from .features import mean_pool

    context = contextlib.nullcontext() if autocast is None else torch.autocast(
        device_type=ids.device.type, dtype=getattr(torch, autocast))
    with context:
        out = backbone(input_ids=ids, attention_mask=mask, use_cache=False)
    return mean_pool(out.last_hidden_state, mask)


@dataclass
class LoraResult:
    """A finished (or resumed-and-finished) LoRA run.

    model: the ``peft`` model (adapters not merged; eval mode). head: ``Linear(d, C)`` on the
    mean-pooled last hidden state. tokenizer: the model's tokenizer. losses: (steps,) training
    loss of every update. seconds: training time, summed over resumed sessions (as measured when it
    ran; a cached run reports the original time). config: every setting of the run as the
    checkpoint records it (with the model, dtype, resolved modules, sizes and versions); settings:
    the :class:`LoraSettings` it ran.
    target_modules: the adapted module names. classes: the labels seen in training.
    resumed_from: the step this call started from (0: from scratch; ``steps``: read from a
    finished checkpoint). trainable_parameters: adapter plus head parameters.
    """

    model: object
    head: torch.nn.Linear
    tokenizer: object
    losses: np.ndarray
    seconds: float
    config: dict
    target_modules: list[str]
    classes: list[int]
    num_classes: int
    resumed_from: int = 0
    trainable_parameters: int = 0
    checkpoint: str | None = None
    extra: dict = field(default_factory=dict)
    settings: LoraSettings | None = None

    @property
    def steps(self) -> int:
        return int(self.config["steps"])


def _trainables(peft_model, head) -> list[tuple[str, torch.nn.Parameter]]:
    adapters = [(f"adapter.{n}", p) for n, p in peft_model.named_parameters() if p.requires_grad]
    return adapters + [(f"head.{n}", p) for n, p in head.named_parameters()]


def _make_optimizer(name: str, params, lr: float, weight_decay: float):
    """``params``: parameter groups ``[{"params": [...], "lr_scale": s}, ...]``."""
    params = [{**group, "lr": lr * group["lr_scale"]} for group in params]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=False)
    from transformers.optimization import Adafactor

    # The paper's setting: a fixed learning rate driven by the schedule, no relative step sizes.
    return Adafactor(params, lr=lr, weight_decay=weight_decay, scale_parameter=False, relative_step=False,
                     warmup_init=False)


# --------------------------------------------------------------------------------------------
# checkpoints: safetensors (tensors) + JSON (everything else)
# --------------------------------------------------------------------------------------------
def _data_fingerprint(texts, labels, record: dict) -> str:
    """Of the texts, the labels (as int64) and a settings record: a checkpoint's fingerprint, and
    (with an empty record) a split's in the run key."""
    return digest(*texts, np.asarray(labels, dtype=np.int64), record)


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu").contiguous().clone()


def _flatten_optimizer(state_dict: dict) -> tuple[dict, dict]:
    """An optimiser state dict as (tensors for safetensors, the rest for JSON)."""
    tensors, scalars = {}, {}
    for pid, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{key}"] = _cpu(value)
            elif isinstance(value, (bool, int, float)) or value is None:
                scalars.setdefault(str(pid), {})[key] = value
            else:
                raise TypeError(f"cannot checkpoint optimiser state {key!r} of type {type(value).__name__}")
    return tensors, {"scalars": scalars, "param_groups": state_dict["param_groups"]}


def _unflatten_optimizer(tensors: dict, info: dict, template: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, entries in info["scalars"].items():
        state.setdefault(int(pid), {}).update(entries)
    groups = []
    for saved, fresh in zip(info["param_groups"], template["param_groups"]):
        # JSON turns tuples (betas, eps) into lists: give them their original type back.
        groups.append({key: (tuple(value) if isinstance(fresh.get(key), tuple) else value)
                       for key, value in saved.items()})
    return {"state": state, "param_groups": groups}


def _rng_tensors(device: torch.device) -> dict[str, torch.Tensor]:
    states = {"rng.cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["rng.cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng(tensors: dict, device: torch.device) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)


def _save_checkpoint(folder: Path, trainables, optimizer, device, info: dict) -> None:
    from safetensors.torch import save_file

    tensors = {name: _cpu(p) for name, p in trainables}
    optimizer_tensors, optimizer_info = _flatten_optimizer(optimizer.state_dict())
    tensors.update(optimizer_tensors)
    tensors.update({name: _cpu(t) for name, t in _rng_tensors(device).items()})
    with atomic_dir(folder) as tmp:
        save_file(tensors, str(tmp / "checkpoint.safetensors"))
        (tmp / "checkpoint.json").write_text(json.dumps({**info, "optimizer": optimizer_info}, indent=1) + "\n")


def _read_checkpoint(folder: Path | None, fingerprint: str):
    """``(tensors, info)`` of a matching checkpoint, or None (missing, unreadable or different run)."""
    if folder is None or not (folder / "checkpoint.json").is_file() or \
            not (folder / "checkpoint.safetensors").is_file():
        return None
    from safetensors.torch import load_file

    try:
        info = json.loads((folder / "checkpoint.json").read_text())
    except json.JSONDecodeError:
        return None
    if info.get("format") != CHECKPOINT_FORMAT:
        return None
    if info.get("fingerprint") != fingerprint:
        warnings.warn(f"the checkpoint in {folder} belongs to a different run (other texts, labels or settings); "
                      "starting from scratch and overwriting it", stacklevel=3)
        return None
    return load_file(str(folder / "checkpoint.safetensors")), info


# --------------------------------------------------------------------------------------------
# training: plan (inputs, tokens, batches, the run's record), initialise (adapters, head,
# optimiser under the seed), resume (a checkpoint), the loop, and the result
# --------------------------------------------------------------------------------------------
def train_lora(model, tokenizer, texts: Sequence[str], labels, settings: LoraSettings | None = None, *,
               num_classes: int | None = None, head_init=None, checkpoint: str | Path | None = None,
               progress: bool = True, callback: Callable[[int, float], None] | None = None,
               **overrides) -> LoraResult:
    """Fine-tune LoRA adapters and a linear head for ``settings.steps`` updates; return a
    :class:`LoraResult`.

    Parameters
    ----------
    model, tokenizer
        A causal LM and its tokenizer (``ntps.models.load``). Not modified: the adapters go into a
        deep copy.
    texts, labels
        N training texts and integer labels in ``0..num_classes-1`` (``num_classes`` defaults to
        the largest label + 1).
    settings : LoraSettings, optional
        The hyper-parameters (steps, batch size, learning rate, adapters, optimiser, schedule,
        seed, checkpoint cadence, ...). None: the defaults of :class:`LoraSettings` with the
        ``overrides``, which must then include ``steps``.
    num_classes : int, optional
        Outputs of the head.
    head_init
        None (``nn.Linear``'s own seeded initialisation) or ``(weight (C, d), bias (C,))`` to
        start the head from, e.g. a linear probe's.
    checkpoint : path or None
        A folder; the adapters, head, optimiser state, step, losses and random states are saved
        there every ``settings.checkpoint_every`` updates and at the end. A rerun with the same
        inputs resumes from it, and returns at once when the run had finished.
    progress : bool
        Show a progress bar.
    callback
        ``callback(step, loss)`` after every update (after its checkpoint), e.g. to stop a run.
    **overrides
        Fields of :class:`LoraSettings` that replace those of ``settings``:
        ``train_lora(..., steps=48, lr=3e-3)`` is ``train_lora(..., LoraSettings(steps=48, lr=3e-3))``.

    Notes
    -----
    The seed decides the initialisation, the batch order and dropout; the caller's torch random
    state is left as it was, and on the CPU a run is bitwise reproducible.

    Examples
    --------
    Two updates on a tiny random model (seconds); a second call with keyword settings is the same run.

    >>> from ntps.lora import LoraSettings, predict, train_lora
    >>> from ntps.tiny import tiny_model
    >>> model, tokenizer = tiny_model("llama")
    >>> texts = ["a dull film", "an amazing film", "dull and slow", "simply amazing"]
    >>> labels = [0, 1, 0, 1]
    >>> result = train_lora(model, tokenizer, texts, labels, LoraSettings(steps=2, batch_size=2), progress=False)
    >>> result.losses.shape, result.resumed_from, result.target_modules
    ((2,), 0, ['q_proj', 'k_proj', 'v_proj'])
    >>> predict(result, ["amazing"]).shape  # logits of the two classes
    (1, 2)
    >>> again = train_lora(model, tokenizer, texts, labels, steps=2, batch_size=2, progress=False)
    >>> again.settings == result.settings and bool((again.losses == result.losses).all())
    True
    """
    settings = _settings_from(settings, overrides, "train_lora")
    plan = _plan(model, tokenizer, texts, labels, settings, num_classes, head_init)
    folder = Path(checkpoint) if checkpoint is not None else None
    saved = _read_checkpoint(folder, plan.fingerprint)
    fork_devices = [plan.device.index or 0] if plan.device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(settings.seed)
        run = _initialise(model, plan, settings, head_init)
        if saved is not None:
            _resume(run, *saved, plan.device)
        resumed_from = run.step
        _train_steps(run, plan, settings, folder, progress, callback)
    return _finish(run, plan, settings, tokenizer, resumed_from, folder)


@dataclass
class _Plan:
    """What a run needs before any weight exists."""

    texts: list[str]
    labels: np.ndarray
    classes: list[int]
    num_classes: int
    targets: list[str]  # the module names to adapt
    input_ids: list[list[int]]
    order: np.ndarray  # (steps, batch_size) text indices of every update
    warmup: int
    pad_id: int
    device: torch.device
    record: dict  # every setting of the run, as checkpoints and LoraResult.config hold it
    fingerprint: str  # of the texts, labels and record: a checkpoint of another run is not resumed


def _plan(model, tokenizer, texts, labels, settings: LoraSettings, num_classes, head_init) -> _Plan:
    import peft

    texts, labels = _check_texts_labels(texts, labels, "training")
    num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, found {int(labels.max())}")
    classes = sorted(np.unique(labels).tolist())
    if len(classes) < 2:
        raise ValueError(f"the training labels hold one class only ({classes}): a classifier needs at least two")
    d = model.config.hidden_size
    if head_init is not None:
        weight, bias = (np.asarray(a) for a in head_init)
        if weight.shape != (num_classes, d) or bias.shape != (num_classes,):
            raise ValueError(f"head_init must be (weight ({num_classes}, {d}), bias ({num_classes},)), got "
                             f"{weight.shape} and {bias.shape}")
    targets = find_attention_modules(model, settings.target_modules)
    input_ids = _tokenize(tokenizer, texts, settings.max_length)
    parameter = next(model.parameters())
    # The fields and types of the first checkpoints' record (alpha a float, the resolved module names),
    # so that those checkpoints still resume; later fields only when they differ from their defaults.
    values = settings.result_dict()
    if values["autocast"] is None:
        del values["autocast"]
    record = {
        "model": getattr(model.config, "_name_or_path", None) or type(model).__name__,
        "model_class": type(model).__name__, "dtype": str(parameter.dtype).removeprefix("torch."),
        **values, "alpha": float(settings.alpha), "target_modules": targets,
        "num_classes": num_classes, "n_texts": len(texts),
        "head_init": None if head_init is None else digest(*(np.asarray(a, dtype=np.float64) for a in head_init)),
        "ntps_version": __version__, "peft_version": peft.__version__,
    }
    order = batch_order(len(texts), settings.steps, settings.batch_size, settings.seed,
                        lengths=[len(ids) for ids in input_ids] if settings.group_by_length else None)
    return _Plan(texts=texts, labels=labels, classes=classes, num_classes=num_classes, targets=targets,
                 input_ids=input_ids, order=order, warmup=math.ceil(settings.warmup_ratio * settings.steps),
                 pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
                 device=parameter.device, record=record, fingerprint=_data_fingerprint(texts, labels, record))


@dataclass
class _Run:
    """The trainable state of a run, and how far it got."""

    peft_model: object
    head: torch.nn.Linear
    trainables: list[tuple[str, torch.nn.Parameter]]
    optimizer: object
    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _initialise(model, plan: _Plan, settings: LoraSettings, head_init) -> _Run:
    """Adapters and head on a copy of the caller's model, and the optimiser; under the seed the
    caller set, in a fixed order (a resumed run replays it)."""
    import peft

    base = copy.deepcopy(model)
    for p in base.parameters():
        p.requires_grad_(False)
    linear_conv = _linear_types()[1:]
    fan_in_fan_out = any(isinstance(m, linear_conv) and n.rsplit(".", 1)[-1] in plan.targets
                         for n, m in base.named_modules())
    config = peft.LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                             target_modules=plan.targets, bias="none", fan_in_fan_out=fan_in_fan_out)
    with warnings.catch_warnings():  # peft calls a transformers method deprecated in 5.x
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = peft.get_peft_model(base, config)
    head = torch.nn.Linear(model.config.hidden_size, plan.num_classes, dtype=torch.float32, device=plan.device)
    if head_init is not None:
        weight, bias = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in head_init)
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)
    trainables = _trainables(peft_model, head)
    groups = [{"params": [p for n, p in trainables if n.startswith("adapter.")], "lr_scale": 1.0},
              {"params": list(head.parameters()), "lr_scale": settings.head_lr_scale}]
    optimizer = _make_optimizer(settings.optimizer, groups, settings.lr, settings.weight_decay)
    return _Run(peft_model=peft_model, head=head, trainables=trainables, optimizer=optimizer)


def _resume(run: _Run, tensors: dict, info: dict, device: torch.device) -> None:
    """Load a checkpoint's weights, optimiser state, random states, step, losses and time into ``run``."""
    with torch.no_grad():
        for name, p in run.trainables:
            p.copy_(tensors[name].to(device=p.device, dtype=p.dtype))
    run.optimizer.load_state_dict(_unflatten_optimizer(tensors, info["optimizer"], run.optimizer.state_dict()))
    _set_rng(tensors, device)
    run.step, run.losses, run.seconds = int(info["step"]), list(info["losses"]), float(info["seconds"])


def _train_steps(run: _Run, plan: _Plan, settings: LoraSettings, folder: Path | None, progress: bool,
                 callback) -> None:
    """Updates ``run.step .. settings.steps - 1``, checkpointing every ``settings.checkpoint_every``."""
    from tqdm.auto import tqdm

    steps = settings.steps
    backbone = _backbone(run.peft_model)
    run.peft_model.train()
    params = [p for _, p in run.trainables]
    targets_y = torch.from_numpy(plan.labels).to(plan.device)
    bar = tqdm(total=steps, initial=run.step, unit="step", disable=not progress or run.step >= steps,
               desc=f"LoRA r={settings.rank} on {', '.join(plan.targets)}", dynamic_ncols=True)
    for step in range(run.step, steps):
        began = time.perf_counter()
        for group in run.optimizer.param_groups:
            group["lr"] = settings.lr * group["lr_scale"] * lr_factor(step, steps, plan.warmup, settings.schedule)
        batch = plan.order[step]
        ids, mask = _right_padded([plan.input_ids[i] for i in batch], plan.pad_id, plan.device)
        pooled = _pooled_last_state(backbone, ids, mask, settings.autocast)
        logits = run.head(pooled.float())  # the head and the loss in float32, outside autocast
        loss = torch.nn.functional.cross_entropy(logits, targets_y[batch])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the training loss became {loss.item()} at step {step}; lower lr "
                                     "(or use dtype float32/bfloat16 rather than float16)")
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        run.optimizer.step()
        run.losses.append(float(loss.detach()))
        run.seconds += time.perf_counter() - began
        run.step = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{run.losses[-1]:.3f}")
        if folder is not None and (run.step % settings.checkpoint_every == 0 or run.step == steps):
            _save_checkpoint(folder, run.trainables, run.optimizer, plan.device, {
                "format": CHECKPOINT_FORMAT, "fingerprint": plan.fingerprint, "step": run.step,
                "losses": run.losses, "seconds": run.seconds, "settings": plan.record,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        if callback is not None:
            callback(run.step, run.losses[-1])
    bar.close()


def _finish(run: _Run, plan: _Plan, settings: LoraSettings, tokenizer, resumed_from: int,
            folder: Path | None) -> LoraResult:
    run.peft_model.eval()
    run.head.eval()
    params = [p for _, p in run.trainables]
    for p in params:
        p.requires_grad_(False)
    return LoraResult(model=run.peft_model, head=run.head, tokenizer=tokenizer,
                      losses=np.asarray(run.losses, dtype=np.float64), seconds=run.seconds, config=plan.record,
                      target_modules=plan.targets, classes=plan.classes, num_classes=plan.num_classes,
                      resumed_from=resumed_from, trainable_parameters=int(sum(p.numel() for p in params)),
                      checkpoint=None if folder is None else str(folder), settings=settings)


def _backbone(model):
    from .extract import _backbone as backbone_of  # the transformer without its LM head

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return backbone_of(inner)


# --------------------------------------------------------------------------------------------
# using the result
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(result: LoraResult, texts: Sequence[str], *, batch_size: int = 16, max_length: int | None = "train",
            progress: bool = False) -> np.ndarray:
    """Logits (N, C) of the fine-tuned classifier for ``texts``, in their order (eval mode: no
    dropout). ``max_length="train"`` truncates as in training."""
    from .extract import plan_batches

    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string; wrap it in a list")
    texts = list(texts)
    if not texts:
        raise ValueError("no texts given")
    max_length = result.config["max_length"] if max_length == "train" else max_length
    input_ids = _tokenize(result.tokenizer, texts, max_length)
    result.model.eval()
    device = next(result.head.parameters()).device
    pad_id = result.tokenizer.pad_token_id if result.tokenizer.pad_token_id is not None else 0
    backbone = _backbone(result.model)
    logits = np.zeros((len(texts), result.num_classes), dtype=np.float64)
    from tqdm.auto import tqdm

    for batch in tqdm(plan_batches([len(s) for s in input_ids], batch_size), disable=not progress,
                      desc="LoRA predict", unit="batch"):
        ids, mask = _right_padded([input_ids[i] for i in batch], pad_id, device)
        logits[batch] = result.head(_pooled_last_state(backbone, ids, mask).float()).double().cpu().numpy()
    return logits


def lora_accuracy(result: LoraResult, texts: Sequence[str], labels, *, batch_size: int = 16,
                  max_length: int | None = "train", progress: bool = False) -> float:
    """Accuracy of the fine-tuned classifier on held-out ``texts`` and ``labels``.

    The test labels must be the label set seen in training (:func:`check_label_sets`)."""
    texts, labels = _check_texts_labels(texts, labels, "test")
    check_label_sets(result.classes, labels)
    logits = predict(result, texts, batch_size=batch_size, max_length=max_length, progress=progress)
    return float(np.mean(logits.argmax(axis=1) == labels))


def merge_adapter(result: LoraResult, *, inplace: bool = False):
    """The adapted language model with the adapters folded into its weights (``merge_and_unload``):
    a plain ``transformers`` causal LM in eval mode, for ``ntps.extract_moments`` (NTPS after LoRA).

    By default the result is left usable (its model is copied first); ``inplace=True`` saves the
    copy's memory and leaves ``result.model`` unusable.
    """
    peft_model = result.model if inplace else copy.deepcopy(result.model)
    merged = peft_model.merge_and_unload()
    merged.eval()
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged


def gain_interval(lora_accuracy, probe_accuracy, n_test, *, confidence: float = 0.95):
    """Approximate interval of the gain ``lora_accuracy - probe_accuracy`` on ``n_test`` held-out texts.

    Normal approximation of a difference of two binomial proportions treated as independent,
    ``gain +- z sqrt(a (1 - a) / n + b (1 - b) / n)``: conservative (too wide) when, as here, both
    classifiers are scored on the same texts and their errors are positively correlated; it shows
    how much of a gain the size of the test split alone can produce. Works elementwise on arrays;
    returns ``(low, high)``.
    """
    from scipy.stats import norm

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    a, b = np.asarray(lora_accuracy, dtype=float), np.asarray(probe_accuracy, dtype=float)
    n = np.asarray(n_test, dtype=float)
    if np.any(n < 1) or np.any((a < 0) | (a > 1) | (b < 0) | (b > 1)):
        raise ValueError("accuracies must lie in [0, 1] and n_test be at least 1")
    half = norm.ppf(0.5 + confidence / 2.0) * np.sqrt(a * (1 - a) / n + b * (1 - b) / n)
    return a - b - half, a - b + half


def gain_bootstrap(lora_correct, probe_correct, *, n_boot: int = 2000, confidence: float = 0.95,
                   seed: int = 0) -> tuple[float, float, float]:
    """The gain ``mean(lora_correct) - mean(probe_correct)`` with a paired bootstrap interval.

    Both classifiers are scored on the same test texts, so the texts are resampled together (with
    replacement, ``n_boot`` times): the interval accounts for the correlation of the two
    classifiers' errors, which :func:`gain_interval` ignores. ``lora_correct`` and
    ``probe_correct`` are (n,) booleans (or 0/1), one per test text in one order. Returns
    ``(gain, low, high)`` (percentile interval).

    Examples
    --------
    >>> from ntps.lora import gain_bootstrap
    >>> gain_bootstrap([1, 1, 0, 1], [1, 1, 0, 1])  # the same answers: no gain, and no doubt about it
    (0.0, 0.0, 0.0)
    """
    a = np.asarray(lora_correct, dtype=float).ravel()
    b = np.asarray(probe_correct, dtype=float).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"lora_correct and probe_correct must be non-empty and of one length (one entry per test "
                         f"text), got {a.size} and {b.size}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    difference = a - b
    idx = np.random.default_rng(seed).integers(0, a.size, size=(int(n_boot), a.size))
    resampled = difference[idx].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    return float(difference.mean()), float(low), float(high)


# --------------------------------------------------------------------------------------------
# one task, end to end, cached
# --------------------------------------------------------------------------------------------
RUN_FORMAT = "ntps-lora-run/1"


class LoraTaskRun(NamedTuple):
    """What :func:`fine_tune_task` gives for one task.

    test_accuracy: held-out accuracy of the fine-tuned classifier. losses: (steps,) training loss.
    after: ``ntps.moments.Moments`` of the merged model on the training texts (None when
    ``after_layers=[]``). info: settings, sizes, labels, the adapted modules, the predicted class of
    every test text in order (``test_predictions``, for paired intervals: :func:`gain_bootstrap`),
    and the seconds of each
    step as measured when it ran (``train_seconds``, ``evaluate_seconds``,
    ``after_extract_seconds``); ``cached`` says whether this call read it all back.
    """

    test_accuracy: float
    losses: np.ndarray
    after: object
    info: dict


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "model"


# The training settings in a run's key. The book's first cached runs were keyed on the keyword
# arguments passed, which were these thirteen; the other fields enter only when they differ from
# their defaults, so that those keys stay valid.
_ALWAYS_KEYED = ("steps", "batch_size", "lr", "rank", "alpha", "dropout", "target_modules", "optimizer", "schedule",
                 "warmup_ratio", "max_grad_norm", "group_by_length", "seed")


def _train_key(settings: LoraSettings, head_init) -> dict:
    values = settings.result_dict()
    del values["max_length"]  # keyed on its own: the moments after LoRA use it too
    defaults = {f.name: f.default for f in fields(LoraSettings)}
    keyed = {name: value for name, value in values.items() if name in _ALWAYS_KEYED or value != defaults[name]}
    if head_init is not None:
        keyed["head_init"] = digest(*(np.asarray(a, dtype=np.float64) for a in head_init))
    return keyed


def fine_tune_task(model_name: str, task: str, settings: LoraSettings | None = None, *, model=None,
                   max_length: int | None = 64, max_examples_train: int | str | None = None,
                   max_examples_test: int | str | None = None, data_seed: int = 0,
                   data_root: str | Path | None = None, dtype=None, device=None, revision: str | None = None,
                   trust_remote_code: bool = False, tokenizer: str | None = None,
                   after_layers: Sequence[int] | None = None, batch_size_eval: int = 16, head_init=None,
                   refresh: bool = False, progress: bool = False, callback: Callable[[int, float], None] | None = None,
                   **overrides) -> LoraTaskRun:
    """Fine-tune on one task's training split, score its test split, and extract the moments of the
    merged model on the training texts; computed once and cached under ``$NTPS_CACHE/lora``.

    The texts are those of ``ntps.data.load(task, split, max_examples=..., seed=data_seed,
    root=data_root)``, the same that ``ntps.experiments.task_statistics`` uses with the same
    arguments, so NTPS before and after LoRA and the probe are computed on identical texts.

    Parameters
    ----------
    settings : LoraSettings, optional
        The training settings (:func:`train_lora`); None: the defaults with the ``overrides``,
        which must then include ``steps``. Its ``max_length`` must be None or ``max_length``.
    model
        None (load on a cache miss), a ``(model, tokenizer)`` pair, or an
        ``ntps.experiments.ModelSource``: on a full cache hit the model is never loaded.
    max_length : int or None
        Tokens per text for training, scoring and the moments after LoRA alike.
    tokenizer : str, optional
        A hub id or folder to take the tokenizer from (``ntps.models.load``'s ``tokenizer=``); in
        the cache key when given. With an explicit ``(model, tokenizer)`` pair it only names the
        key, and must be the pair's tokenizer.
    after_layers : list of int, optional
        Hidden-state indices of the moments after LoRA (default all; ``[]``: none).
    head_init, callback
        As in :func:`train_lora`; ``head_init`` enters the cache key (by its digest) when given.
    **overrides
        Fields of :class:`LoraSettings` that replace those of ``settings`` (``steps=48, lr=3e-3``).
        The checkpoint lives in the cache folder, so an interrupted run resumes.

    Notes
    -----
    The cache key holds the model name, revision, tokenizer (when given), dtype, task, caps, data
    seed, a hash of the texts and labels, ``max_length``, every training setting that can change the
    result (not ``checkpoint_every``), the layers and ``ntps.__version__``: equal settings, given as
    a :class:`LoraSettings` or as keywords, share one cached run.
    """
    from . import data
    from .cache import atomic_file, cache_dir
    from .experiments import ModelSource, _check_source_tokenizer, tokenizer_key
    from .extract import extract_moments

    for reserved in ("checkpoint", "num_classes"):
        if reserved in overrides:
            raise TypeError(f"fine_tune_task sets {reserved!r} itself")
    settings = _settings_from(settings, overrides, "fine_tune_task")
    if settings.max_length not in (None, max_length):
        raise ValueError(f"settings.max_length is {settings.max_length} but max_length is {max_length}: a run uses "
                         "one length for training, scoring and the moments; pass max_length=")
    settings = settings.replace(max_length=max_length)
    train = data.load(task, "train", max_examples=max_examples_train, seed=data_seed, root=data_root)
    test = data.load(task, "test", max_examples=max_examples_test, seed=data_seed, root=data_root)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"{task}: the train split holds {len(train)} texts and the test split {len(test)}")
    check_label_sets(train.labels, test.labels)
    layers = None if after_layers is None else sorted(int(l) for l in after_layers)
    keyed = {
        "format": RUN_FORMAT, "model": str(model_name), "revision": revision,
        "dtype": "float32" if dtype is None else str(dtype).removeprefix("torch."), "task": task,
        "max_examples_train": max_examples_train, "max_examples_test": max_examples_test, "data_seed": int(data_seed),
        # the empty record is how split fingerprints were first computed: kept so cached runs stay valid
        "train_data": _data_fingerprint(train.texts, train.labels, {}),
        "test_data": _data_fingerprint(test.texts, test.labels, {}),
        "max_length": max_length, "after_layers": layers, "train": _train_key(settings, head_init),
        "ntps_version": __version__,
    }
    if tokenizer is not None:  # only when given, so that existing keys stay valid
        keyed["tokenizer"] = tokenizer_key(tokenizer)
    key = digest(keyed)
    folder = cache_dir("lora", _slug(model_name)) / f"{_slug(task)}-{key[:16]}"
    cached = None if refresh else _read_run(folder, key, layers)
    if cached is not None:
        return cached

    if model is None:
        model = ModelSource(model_name, dtype=dtype, device=device, revision=revision,
                            trust_remote_code=trust_remote_code, tokenizer=tokenizer)
    _check_source_tokenizer(model, tokenizer)
    pair = model.get() if isinstance(model, ModelSource) else tuple(model)
    if len(pair) != 2:
        raise ValueError("model must be None, a (model, tokenizer) pair or a ModelSource")
    lm, tokenizer = pair
    result = train_lora(lm, tokenizer, train.texts, train.labels, settings, num_classes=train.num_classes,
                        head_init=head_init, checkpoint=folder / "checkpoint", progress=progress, callback=callback)
    began = time.perf_counter()
    test_texts, test_labels = _check_texts_labels(test.texts, test.labels, "test")
    check_label_sets(result.classes, test_labels)
    predicted = predict(result, test_texts, batch_size=batch_size_eval, progress=progress).argmax(axis=1)
    accuracy = float(np.mean(predicted == test_labels))
    evaluate_seconds = time.perf_counter() - began
    info = {**keyed, "key": key, "test_accuracy": accuracy, "test_predictions": predicted.tolist(),
            "losses": result.losses.tolist(),
            "train_seconds": result.seconds, "evaluate_seconds": evaluate_seconds, "n_train": len(train),
            "n_test": len(test), "classes": list(train.classes), "target_modules": result.target_modules,
            "trainable_parameters": result.trainable_parameters, "resumed_from": result.resumed_from,
            "device": str(next(lm.parameters()).device)}
    after, after_seconds = None, 0.0
    if layers != []:
        merged = merge_adapter(result, inplace=True)  # the adapted copy is not needed any more
        del result
        began = time.perf_counter()
        after = extract_moments(merged, tokenizer, train.texts, train.labels, num_classes=train.num_classes,
                                batch_size=batch_size_eval, max_length=max_length, layers=layers, progress=progress,
                                metadata={"dataset": task, "split": "train", "adapted": "lora", "run": key[:16]})
        after_seconds = time.perf_counter() - began
        del merged
        after.save(folder / "after")
    info.update(after_extract_seconds=after_seconds, computed_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    with atomic_file(folder / "run.json") as tmp:  # written last: its presence means the run is complete
        tmp.write_text(json.dumps(info, indent=1, default=str) + "\n")
    info["cached"] = False
    return LoraTaskRun(accuracy, np.asarray(info["losses"], dtype=np.float64), after, info)


def _read_run(folder: Path, key: str, layers) -> LoraTaskRun | None:
    """The finished run cached in ``folder`` under ``key``, or None."""
    from .moments import Moments

    run_file = folder / "run.json"
    if not run_file.is_file():
        return None
    try:
        info = json.loads(run_file.read_text())
    except json.JSONDecodeError:
        return None
    if info.get("key") != key or (layers != [] and not (folder / "after" / "moments.json").is_file()):
        return None
    if "test_predictions" not in info:  # written before runs kept their predictions: score it again
        return None
    after = None if layers == [] else Moments.load(folder / "after")
    info["cached"] = True
    return LoraTaskRun(float(info["test_accuracy"]), np.asarray(info["losses"], dtype=np.float64), after, info)
