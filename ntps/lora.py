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
* :func:`lora_accuracy` (held-out accuracy) and :func:`merge_adapter`, which folds the adapters
  into the weights (``merge_and_unload``) and returns a plain ``transformers`` model whose moments
  ``ntps.extract.moments`` computes again (NTPS after LoRA).

The model passed to :func:`train_lora` is never modified: training works on a copy.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from . import __version__
from .cache import atomic_dir

__all__ = [
    "ATTENTION_TARGETS",
    "OPTIMIZERS",
    "SCHEDULES",
    "AttentionModulesNotFoundError",
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


def _pooled_last_state(backbone, ids, mask):
    """Mean of the last hidden state over the real tokens: [B, d] (float32 or wider)."""
    from .features import mean_pool

    out = backbone(input_ids=ids, attention_mask=mask, use_cache=False)
    return mean_pool(out.last_hidden_state, mask)


@dataclass
class LoraResult:
    """A finished (or resumed-and-finished) LoRA run.

    model: the ``peft`` model (adapters not merged; eval mode). head: ``Linear(d, C)`` on the
    mean-pooled last hidden state. tokenizer: the model's tokenizer. losses: (steps,) training
    loss of every update. seconds: training time, summed over resumed sessions (as measured when it
    ran; a cached run reports the original time). config: every setting of the run.
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
def _fingerprint(texts, labels, settings) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


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
# training
# --------------------------------------------------------------------------------------------
def train_lora(model, tokenizer, texts: Sequence[str], labels, *, steps: int, num_classes: int | None = None,
               batch_size: int = 8, lr: float = 1e-4, rank: int = 8, alpha: float = 16, dropout: float = 0.05,
               target_modules: Sequence[str] | None = None, optimizer: str = "adamw", weight_decay: float = 0.0,
               schedule: str = "cosine", warmup_ratio: float = 0.05, max_grad_norm: float | None = 1.0,
               head_lr_scale: float = 1.0, max_length: int | None = None, group_by_length: bool = False,
               seed: int = 0, head_init=None,
               checkpoint: str | Path | None = None, checkpoint_every: int = 50, progress: bool = True,
               callback: Callable[[int, float], None] | None = None) -> LoraResult:
    """Fine-tune LoRA adapters and a linear head for ``steps`` updates; return a :class:`LoraResult`.

    Parameters
    ----------
    model, tokenizer
        A causal LM and its tokenizer (``ntps.models.load``). Not modified: the adapters go into a
        deep copy.
    texts, labels
        N training texts and integer labels in ``0..num_classes-1`` (``num_classes`` defaults to
        the largest label + 1).
    steps : int
        Optimiser updates (the budget).
    batch_size : int
        Texts per update, drawn in seeded epochs (:func:`batch_order`).
    group_by_length : bool
        Batches of texts of similar length (less padding).
    lr, optimizer, weight_decay
        The base learning rate (the head's is ``head_lr_scale * lr``); ``"adamw"``
        (``torch.optim.AdamW``) or ``"adafactor"`` (``transformers`` Adafactor with
        ``scale_parameter=False, relative_step=False, warmup_init=False``, the paper's optimiser).
    schedule, warmup_ratio
        :func:`lr_factor`, with ``ceil(warmup_ratio * steps)`` warm-up updates.
    max_grad_norm : float or None
        Clip the gradient's global norm (None: no clipping).
    rank, alpha, dropout, target_modules
        The LoRA adapters (``peft.LoraConfig(r, lora_alpha, lora_dropout)``) on the modules
        :func:`find_attention_modules` returns.
    max_length : int or None
        Truncate texts to this many tokens (special tokens included).
    seed : int
        Decides the adapter and head initialisation, the batch order and dropout. The caller's
        torch random state is left as it was.
    head_init
        None (``nn.Linear``'s own seeded initialisation) or ``(weight (C, d), bias (C,))`` to
        start the head from, e.g. a linear probe's.
    checkpoint : path or None
        A folder; the adapters, head, optimiser state, step, losses and random states are saved
        there every ``checkpoint_every`` updates and at the end. A rerun with the same inputs
        resumes from it, and returns at once when the run had finished.
    progress : bool
        Show a progress bar.
    callback
        ``callback(step, loss)`` after every update (after its checkpoint), e.g. to stop a run.
    """
    import peft

    texts, labels = _check_texts_labels(texts, labels, "training")
    steps = _positive_int(steps, "steps", ": a budget of zero steps trains nothing (use a linear probe for that)")
    batch_size = _positive_int(batch_size, "batch_size")
    checkpoint_every = _positive_int(checkpoint_every, "checkpoint_every")
    rank = _positive_int(rank, "rank")
    num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, found {int(labels.max())}")
    classes = sorted(np.unique(labels).tolist())
    if len(classes) < 2:
        raise ValueError(f"the training labels hold one class only ({classes}): a classifier needs at least two")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must lie in [0, 1), got {warmup_ratio}")
    if not lr > 0 or not head_lr_scale > 0:
        raise ValueError(f"lr and head_lr_scale must be positive, got {lr} and {head_lr_scale}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
    targets = find_attention_modules(model, target_modules)
    input_ids = _tokenize(tokenizer, texts, max_length)

    parameter = next(model.parameters())
    device = parameter.device
    d = model.config.hidden_size
    settings = {
        "model": getattr(model.config, "_name_or_path", None) or type(model).__name__,
        "model_class": type(model).__name__, "dtype": str(parameter.dtype).removeprefix("torch."),
        "steps": steps, "batch_size": batch_size, "lr": float(lr), "rank": rank, "alpha": float(alpha),
        "dropout": float(dropout), "target_modules": targets, "optimizer": optimizer,
        "weight_decay": float(weight_decay), "head_lr_scale": float(head_lr_scale), "schedule": schedule,
        "warmup_ratio": float(warmup_ratio),
        "max_grad_norm": None if max_grad_norm is None else float(max_grad_norm), "max_length": max_length,
        "group_by_length": bool(group_by_length), "seed": int(seed), "num_classes": num_classes, "n_texts": len(texts),
        "head_init": None if head_init is None else hashlib.sha256(
            b"".join(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes() for a in head_init)).hexdigest(),
        "ntps_version": __version__, "peft_version": peft.__version__,
    }
    fingerprint = _fingerprint(texts, labels, settings)
    folder = Path(checkpoint) if checkpoint is not None else None
    saved = _read_checkpoint(folder, fingerprint)

    warmup = math.ceil(warmup_ratio * steps)
    order = batch_order(len(texts), steps, batch_size, seed,
                        lengths=[len(ids) for ids in input_ids] if group_by_length else None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    targets_y = torch.from_numpy(labels).to(device)
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(int(seed))
        # Initialisation (adapters, head) under the seed, on a copy of the caller's model.
        base = copy.deepcopy(model)
        for p in base.parameters():
            p.requires_grad_(False)
        linear_conv = _linear_types()[1:]
        fan_in_fan_out = any(isinstance(m, linear_conv) and n.rsplit(".", 1)[-1] in targets
                             for n, m in base.named_modules())
        config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                                 bias="none", fan_in_fan_out=fan_in_fan_out)
        with warnings.catch_warnings():  # peft calls a transformers method deprecated in 5.x
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = peft.get_peft_model(base, config)
        head = torch.nn.Linear(d, num_classes, dtype=torch.float32, device=device)
        if head_init is not None:
            weight, bias = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in head_init)
            if weight.shape != (num_classes, d) or bias.shape != (num_classes,):
                raise ValueError(f"head_init must be (weight ({num_classes}, {d}), bias ({num_classes},)), got "
                                 f"{tuple(weight.shape)} and {tuple(bias.shape)}")
            with torch.no_grad():
                head.weight.copy_(weight)
                head.bias.copy_(bias)
        trainables = _trainables(peft_model, head)
        params = [p for _, p in trainables]
        groups = [{"params": [p for n, p in trainables if n.startswith("adapter.")], "lr_scale": 1.0},
                  {"params": list(head.parameters()), "lr_scale": float(head_lr_scale)}]
        opt = _make_optimizer(optimizer, groups, lr, weight_decay)

        start_step, losses, seconds = 0, [], 0.0
        if saved is not None:
            tensors, info = saved
            with torch.no_grad():
                for name, p in trainables:
                    p.copy_(tensors[name].to(device=p.device, dtype=p.dtype))
            opt.load_state_dict(_unflatten_optimizer(tensors, info["optimizer"], opt.state_dict()))
            _set_rng(tensors, device)
            start_step, losses, seconds = int(info["step"]), list(info["losses"]), float(info["seconds"])

        backbone = _backbone(peft_model)
        peft_model.train()
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start_step, unit="step", disable=not progress or start_step >= steps,
                   desc=f"LoRA r={rank} on {', '.join(targets)}", dynamic_ncols=True)
        for step in range(start_step, steps):
            began = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_scale"] * lr_factor(step, steps, warmup, schedule)
            batch = order[step]
            ids, mask = _right_padded([input_ids[i] for i in batch], pad_id, device)
            pooled = _pooled_last_state(backbone, ids, mask)
            logits = head(pooled.float())
            loss = torch.nn.functional.cross_entropy(logits, targets_y[batch])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the training loss became {loss.item()} at step {step}; lower lr "
                                         "(or use dtype float32/bfloat16 rather than float16)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            losses.append(float(loss.detach()))
            seconds += time.perf_counter() - began
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            done = step + 1
            if folder is not None and (done % checkpoint_every == 0 or done == steps):
                _save_checkpoint(folder, trainables, opt, device, {
                    "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "step": done, "losses": losses,
                    "seconds": seconds, "settings": settings,
                    "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            if callback is not None:
                callback(done, losses[-1])
        bar.close()
    peft_model.eval()
    head.eval()
    for p in params:
        p.requires_grad_(False)
    return LoraResult(model=peft_model, head=head, tokenizer=tokenizer, losses=np.asarray(losses, dtype=np.float64),
                      seconds=seconds, config=settings, target_modules=targets, classes=classes,
                      num_classes=num_classes, resumed_from=start_step,
                      trainable_parameters=int(sum(p.numel() for p in params)),
                      checkpoint=None if folder is None else str(folder))


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
    a plain ``transformers`` causal LM in eval mode, for ``ntps.extract.moments`` (NTPS after LoRA).

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


# --------------------------------------------------------------------------------------------
# one task, end to end, cached
# --------------------------------------------------------------------------------------------
RUN_FORMAT = "ntps-lora-run/1"


class LoraTaskRun(NamedTuple):
    """What :func:`fine_tune_task` gives for one task.

    test_accuracy: held-out accuracy of the fine-tuned classifier. losses: (steps,) training loss.
    after: ``ntps.moments.Moments`` of the merged model on the training texts (None when
    ``after_layers=[]``). info: settings, sizes, labels, the adapted modules, and the seconds of each
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


def fine_tune_task(model_name: str, task: str, *, model=None, max_length: int | None = 64,
                   max_examples_train: int | str | None = None, max_examples_test: int | str | None = None,
                   data_seed: int = 0, data_root: str | Path | None = None, dtype=None, device=None,
                   revision: str | None = None, trust_remote_code: bool = False, tokenizer: str | None = None,
                   after_layers: Sequence[int] | None = None, batch_size_eval: int = 16, refresh: bool = False,
                   progress: bool = False, **train_kwargs) -> LoraTaskRun:
    """Fine-tune on one task's training split, score its test split, and extract the moments of the
    merged model on the training texts; computed once and cached under ``$NTPS_CACHE/lora``.

    The texts are those of ``ntps.data.load(task, split, max_examples=..., seed=data_seed,
    root=data_root)``, the same that ``ntps.experiments.task_statistics`` uses with the same
    arguments, so NTPS before and after LoRA and the probe are computed on identical texts.

    Parameters
    ----------
    model
        None (load on a cache miss), a ``(model, tokenizer)`` pair, or an
        ``ntps.experiments.ModelSource``: on a full cache hit the model is never loaded.
    tokenizer : str, optional
        A hub id or folder to take the tokenizer from (``ntps.models.load``'s ``tokenizer=``); in
        the cache key when given. With an explicit ``(model, tokenizer)`` pair it only names the
        key, and must be the pair's tokenizer.
    after_layers : list of int, optional
        Hidden-state indices of the moments after LoRA (default all; ``[]``: none).
    train_kwargs
        Passed to :func:`train_lora` (steps is required; rank, alpha, lr, ..., checkpoint_every);
        the checkpoint lives in the cache folder, so an interrupted run resumes.

    Notes
    -----

    The cache key holds the model name, revision, tokenizer (when given), dtype, task, caps, data
    seed, a hash of the texts and labels, ``max_length``, every training setting, the layers and
    ``ntps.__version__``.
    """
    from . import data
    from .cache import atomic_file, cache_dir
    from .experiments import ModelSource, _check_source_tokenizer, tokenizer_key
    from .extract import moments as extract_moments
    from .moments import Moments

    if "steps" not in train_kwargs:
        raise TypeError("fine_tune_task needs steps=... (the training budget)")
    for reserved in ("checkpoint", "num_classes", "max_length", "progress"):
        if reserved in train_kwargs:
            raise TypeError(f"fine_tune_task sets {reserved!r} itself")
    train = data.load(task, "train", max_examples=max_examples_train, seed=data_seed, root=data_root)
    test = data.load(task, "test", max_examples=max_examples_test, seed=data_seed, root=data_root)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"{task}: the train split holds {len(train)} texts and the test split {len(test)}")
    check_label_sets(train.labels, test.labels)
    layers = None if after_layers is None else sorted(int(l) for l in after_layers)
    settings = {
        "format": RUN_FORMAT, "model": str(model_name), "revision": revision,
        "dtype": "float32" if dtype is None else str(dtype).removeprefix("torch."), "task": task,
        "max_examples_train": max_examples_train, "max_examples_test": max_examples_test, "data_seed": int(data_seed),
        "train_data": _fingerprint(train.texts, train.labels, {}),
        "test_data": _fingerprint(test.texts, test.labels, {}),
        "max_length": max_length, "after_layers": layers,
        # how often to checkpoint does not change the result
        "train": {k: train_kwargs[k] for k in sorted(train_kwargs) if k not in ("checkpoint_every", "callback")},
        "ntps_version": __version__,
    }
    if tokenizer is not None:  # only when given, so that existing keys stay valid
        settings["tokenizer"] = tokenizer_key(tokenizer)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    folder = cache_dir("lora", _slug(model_name)) / f"{_slug(task)}-{key[:16]}"
    run_file = folder / "run.json"
    if not refresh and run_file.is_file():
        try:
            info = json.loads(run_file.read_text())
        except json.JSONDecodeError:
            info = {}
        if info.get("key") == key and (layers == [] or (folder / "after" / "moments.json").is_file()):
            after = None if layers == [] else Moments.load(folder / "after")
            info["cached"] = True
            return LoraTaskRun(float(info["test_accuracy"]), np.asarray(info["losses"], dtype=np.float64), after, info)

    if model is None:
        model = ModelSource(model_name, dtype=dtype, device=device, revision=revision,
                            trust_remote_code=trust_remote_code, tokenizer=tokenizer)
    _check_source_tokenizer(model, tokenizer)
    pair = model.get() if isinstance(model, ModelSource) else tuple(model)
    if len(pair) != 2:
        raise ValueError("model must be None, a (model, tokenizer) pair or a ModelSource")
    lm, tokenizer = pair
    result = train_lora(lm, tokenizer, train.texts, train.labels, num_classes=train.num_classes, max_length=max_length,
                        checkpoint=folder / "checkpoint", progress=progress, **train_kwargs)
    began = time.perf_counter()
    accuracy = lora_accuracy(result, test.texts, test.labels, batch_size=batch_size_eval, progress=progress)
    evaluate_seconds = time.perf_counter() - began
    info = {**settings, "key": key, "test_accuracy": accuracy, "losses": result.losses.tolist(),
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
    with atomic_file(run_file) as tmp:  # written last: its presence means the run is complete
        tmp.write_text(json.dumps(info, indent=1, default=str) + "\n")
    info["cached"] = False
    return LoraTaskRun(accuracy, np.asarray(info["losses"], dtype=np.float64), after, info)
