"""Moments of every layer from one streaming forward pass over a dataset.

``extract_moments(model, tokenizer, texts, labels)`` runs the model once over the texts, in
batches of similar length, and accumulates the four NTPS statistics of every hidden state (their
definitions: :mod:`ntps.moments` and the theory chapter's table of symbols) on the model's device.
How it runs is one frozen :class:`ExtractionSettings`. Nothing per text is kept, so memory does not grow with the number of texts.

Exactness and speed:

* only real tokens enter the statistics (special tokens the tokenizer adds are real tokens).
  Batches are always padded on the right, whatever the tokenizer's padding side: in a causal
  model a real token then never follows padding, so its state and its prefix sum are what they
  would be for the text alone, and the padded rows are simply zeroed;
* prefix sums and the per-batch products are formed in float32 and added to float64 sums;
* on a GPU with a bf16/fp16 model, the products run on tensor cores with error compensation:
  each float32 prefix sum is split into a high part exact in the tensor cores' input format and
  a low part, and the three products that matter are summed in float32 (the lo x lo term is
  below float32 resolution). The same code runs on the CPU (``precision="tf32x3"`` or
  ``"split"``), where the products are plain float32;
* the host does not wait for the GPU at every batch (inputs go through pinned memory, and each
  batch's NaN flags are read one batch late), and on a GPU the host memory for the result is
  faulted in by a background thread during the run;
* padded positions are zeroed before anything else, so that an inf there (fp16 overflow on a pad
  token) cannot reach the sums;
* a checkpoint every few batches lets a killed run resume with identical results; the checkpoint
  is tied to the texts, labels, settings, tokenizer and a fingerprint of the weights
  (:func:`weights_fingerprint`), so a changed model or input never resumes from it;
* ``shard=(i, n)`` takes every n-th batch, so n jobs cover a split and their moments merge
  exactly (:meth:`Moments.merge`); under ``torch.distributed`` each rank takes its own shard
  and the sums are all-reduced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from . import __version__
from .cache import atomic_dir, digest
from .moments import Moments, NTPSWarning, few_texts_message

__all__ = ["ExtractionSettings", "extract_moments", "plan_batches", "NonFiniteStatesError", "weights_fingerprint",
           "is_checkpoint_folder"]

# Fewer texts than this in a class get a warning: its mean and covariance are mostly noise.
MIN_TEXTS_PER_CLASS = 5

PRECISIONS = ("auto", "float32", "tf32x3", "split", "float64")


def _auto_precision(device: torch.device, model_dtype: torch.dtype) -> str:
    """``"split"`` on a GPU with bf16 tensor cores (compute capability 8.0 or newer: A100, H100,
    H200...) running a bf16/fp16 model, else ``"float32"``. On an H200, split products ran faster
    and closer to float64 than tf32x3; an older GPU (a T4, say) has no bf16 tensor cores, and its
    split products would fall back to float32 products twice the size of the plain ones."""
    if device.type != "cuda" or model_dtype not in (torch.bfloat16, torch.float16):
        return "float32"
    return "split" if torch.cuda.get_device_capability(device) >= (8, 0) else "float32"


def _whole_number(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class ExtractionSettings:
    """How one extraction runs: frozen, validated once, carried into the saved metadata.

    Parameters
    ----------
    batch_size : int
        Texts per forward pass (texts are sorted by length, longest first).
    max_length : int or None
        Truncate each text to this many tokens (special tokens included); None keeps every token.
        At least 2: a text needs two tokens to give one (prefix, next token) pair.
    layers : tuple of int or None
        Hidden-state indices to keep (0 = embedding output); None keeps all of them.
    precision : {"auto", "float32", "split", "tf32x3", "float64"}
        How the products of prefix sums are formed (:func:`extract_moments`).
    shard : (int, int) or None
        ``(i, n)``: this job's share, every n-th batch starting at batch i.
    checkpoint_every : int
        Batches between checkpoints (when a checkpoint folder is given).
    return_features : bool
        Also return the mean-pooled features of every chosen layer from the same pass.
    overlap : bool
        CUDA only, experimental: accumulate on a second stream while the next forward runs.

    Examples
    --------
    >>> from ntps.extract import ExtractionSettings
    >>> settings = ExtractionSettings(batch_size=8, max_length=64)
    >>> settings.replace(layers=[0, 2]).layers
    (0, 2)
    >>> ExtractionSettings(max_length=1)
    Traceback (most recent call last):
    ...
    ValueError: max_length must be an integer of at least 2 (a prefix and its next token), got 1; None means no truncation
    """

    batch_size: int = 16
    max_length: int | None = None
    layers: tuple[int, ...] | None = None
    precision: str = "auto"
    shard: tuple[int, int] | None = None
    checkpoint_every: int = 50
    return_features: bool = False
    overlap: bool = False

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise through the back door, once
        set_(self, "batch_size", _whole_number(self.batch_size, "batch_size", 1))
        set_(self, "max_length", _check_max_length(self.max_length))
        if self.layers is not None:
            if isinstance(self.layers, (str, bytes)) or not hasattr(self.layers, "__iter__"):
                raise ValueError(f"layers must be a list of hidden-state indices or None, got {self.layers!r}")
            set_(self, "layers", tuple(_whole_number(l, "each layer", 0) for l in self.layers))
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.shard is not None:
            try:
                index, count = (int(part) for part in self.shard)
            except (TypeError, ValueError):
                raise ValueError(f"shard must be a pair (i, n), got {self.shard!r}") from None
            if not 0 <= index < count:
                raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {self.shard}")
            set_(self, "shard", (index, count))
        set_(self, "checkpoint_every", _whole_number(self.checkpoint_every, "checkpoint_every", 1))
        if self.return_features and self.shard is not None:
            raise ValueError("return_features needs one whole pass: it cannot be combined with shard")

    def replace(self, **changes) -> "ExtractionSettings":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The settings as plain JSON values."""
        out = dataclasses.asdict(self)
        for name in ("layers", "shard"):
            out[name] = None if out[name] is None else list(out[name])
        return out


class NonFiniteStatesError(FloatingPointError):
    """A hidden state was NaN or infinite."""


# -- input checks ----------------------------------------------------------------------------
def _check_inputs(texts, labels, num_classes):
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string; wrap it in a list")
    texts = list(texts)
    if not texts:
        raise ValueError("no texts given: moments need at least one text")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts must be strings; entries {bad[:5]} are {type(texts[bad[0]]).__name__}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(texts):
        raise ValueError(f"{len(texts)} texts but labels of shape {labels.shape}: give one integer label per text")
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise TypeError(f"labels must be integers 0..C-1, got dtype {labels.dtype}")
    num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    out_of_range = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if out_of_range.size:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}; entries {out_of_range[:5].tolist()} have "
                         f"{labels[out_of_range[:5]].tolist()} (set num_classes or fix the labels)")
    present = np.unique(labels)
    if present.size < 2:
        raise ValueError(f"all {len(texts)} texts have the label {int(present[0])}: NTPS measures how well the "
                         "features predict a label, which needs texts of at least two classes")
    counts = np.bincount(labels, minlength=num_classes)
    few = np.flatnonzero(counts < MIN_TEXTS_PER_CLASS)
    if few.size:
        listed = ", ".join(f"class {c}: {counts[c]}" for c in few[:10])
        warnings.warn(NTPSWarning(f"fewer than {MIN_TEXTS_PER_CLASS} texts in {few.size} class(es) ({listed}): their "
                                  "moments rest on too few texts to be reliable"), stacklevel=4)
    return texts, labels.astype(np.int64), num_classes


def _check_max_length(max_length):
    if max_length is None:
        return None
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 2:
        raise ValueError(f"max_length must be an integer of at least 2 (a prefix and its next token), got "
                         f"{max_length!r}; None means no truncation")
    return int(max_length)


def plan_batches(lengths: Sequence[int], batch_size: int, shard: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Batches of text indices, longest texts first, similar lengths together.

    A stable sort makes the plan deterministic; ``shard=(i, n)`` keeps every n-th batch starting
    at batch i, which balances the work of n jobs.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    if shard is not None:
        index, count = shard
        if not (count >= 1 and 0 <= index < count):
            raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
        batches = batches[index::count]
    return batches


# -- the products ----------------------------------------------------------------------------
def _mm_float32_out(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """left @ right for bf16 operands with a float32 result (tensor cores where available)."""
    if left.is_cuda:
        try:
            return torch.mm(left, right, out_dtype=torch.float32)
        except (RuntimeError, TypeError):
            pass
    # Products of bf16 numbers are exact in float32: same arithmetic, slower kernel.
    return torch.mm(left.float(), right.float())


@contextlib.contextmanager
def _tf32_matmul(enabled: bool):
    """Turn TF32 tensor-core matrix products on or off for float32 operands, then restore."""
    matmul = torch.backends.cuda.matmul
    previous = matmul.allow_tf32
    matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32 = previous


def _tf32_mm(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    with _tf32_matmul(True):
        return left @ right


def _split_bf16(values: torch.Tensor, out: torch.Tensor) -> None:
    """out[:, :d] = bf16(values), out[:, d:] = bf16(values - that): a high and a low part."""
    d = values.shape[1]
    out[:, :d].copy_(values)
    torch.sub(values, out[:, :d], out=out[:, d:])


def _split_tf32(values: torch.Tensor, out: torch.Tensor) -> None:
    """out[:, :d] = values with the mantissa cut to TF32's 10 bits, out[:, d:] = the rest.

    Both parts are float32; the high part is exact in TF32 and the low part loses only its own
    last bits on the tensor cores, so hi.hi + hi.lo + lo.hi carries ~2^-21 relative error."""
    d = values.shape[1]
    high = out[:, :d]
    torch.bitwise_and(values.view(torch.int32), -8192, out=high.view(torch.int32))  # 0xFFFFE000
    torch.sub(values, high, out=out[:, d:])


_CHUNK_ROWS = 2048
_SPLITS = {"split": (torch.bfloat16, _split_bf16, _mm_float32_out),
           "tf32x3": (torch.float32, _split_tf32, _tf32_mm)}
# Token states of these dtypes are exact in the split operand format: no split needed.
_EXACT_STATES = {"split": (torch.bfloat16,), "tf32x3": (torch.bfloat16, torch.float16)}


def _add_pair_products(prefix: torch.Tensor, states: torch.Tensor, precision: str,
                       gram_sum: torch.Tensor, cross_sum: torch.Tensor) -> None:
    """Add one layer's pair products to the float64 sums, from flat row-major views.

    prefix [R, d] float32: prefix sums, rows of invalid pairs already zero (R = batch x tokens).
    states [R, d]: the token states in the same layout. Row r pairs with row r + 1, so
    gram += prefix^T prefix and cross += prefix[:-1]^T states[1:]: no gather and no copy.
    """
    if precision == "float64":
        wide = prefix.double()
        gram_sum += wide.T @ wide
        cross_sum += wide[:-1].T @ states[1:].double()
        return
    if precision == "float32":
        following = states[1:] if states.dtype == torch.float32 else states[1:].float()
        with _tf32_matmul(False):
            gram_sum += prefix.T @ prefix
            cross_sum += prefix[:-1].T @ following
        return
    # Error-compensated tensor-core products: prefix = hi + lo, and the lo x lo term is below
    # float32 resolution. gram = hi.hi + lo.hi + (lo.hi)^T, from one product [hi lo]^T hi.
    operand, split, mm = _SPLITS[precision]
    d, rows = prefix.shape[1], prefix.shape[0]
    halves = torch.empty((rows, 2 * d), dtype=operand, device=prefix.device)
    split(prefix, halves)
    exact_states = states.dtype in _EXACT_STATES[precision]
    if exact_states:
        following = states if states.dtype == operand else states.to(operand)
        cross_width = d
    else:  # states not exact in the operand format: split them too (hi.hi + hi.lo + lo.hi)
        following = torch.empty_like(halves)
        split(states.float(), following)
        cross_width = 2 * d
    gram_parts = torch.zeros((2 * d, d), dtype=torch.float32, device=prefix.device)
    cross_parts = torch.zeros((2 * d, cross_width), dtype=torch.float32, device=prefix.device)
    # Tensor cores accumulate long sums with float32 truncation: the error grows with the number
    # of rows in one product, so the rows go in chunks whose products are added in float32.
    for start in range(0, rows, _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, rows)
        gram_parts += mm(halves[start:stop].T, halves[start:stop, :d])  # hi^T hi stacked on lo^T hi
        pair_stop = min(stop, rows - 1)  # row r pairs with row r + 1
        if pair_stop > start:
            cross_parts += mm(halves[start:pair_stop].T, following[start + 1:pair_stop + 1])
    gram_sum += gram_parts[:d]
    gram_sum += gram_parts[d:]
    gram_sum += gram_parts[d:].T
    cross_sum += cross_parts[:d, :d]
    cross_sum += cross_parts[d:, :d]
    if not exact_states:
        cross_sum += cross_parts[:d, d:]


def _host_buffers_for(device: torch.device) -> bool:
    """Whether the sums get host memory of their own (a GPU), or are host memory already."""
    return device.type != "cpu"


class _HostSums:
    """Host memory for the sums of a device run, faulted in by a background thread while the device
    works.

    A fresh host array is faulted in page by page while a copy writes into it, and at the
    Llama-3-8B shape the sums are 13 GB: copying them into fresh memory at the end of a run was
    several times slower than copying into memory already touched (``benchmarks/extract_ops.py
    --fixed``). Touching one element per page in the background moves that cost under the run.
    """

    _PAGE_ELEMENTS = 4096 // 8  # float64 elements per 4 KiB page

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        import threading

        self.arrays = {name: np.empty(shape, dtype=np.float64) for name, shape in shapes.items()}
        self._thread = threading.Thread(target=self._touch, name="ntps-host-sums", daemon=True)
        self._thread.start()

    def _touch(self) -> None:
        for array in self.arrays.values():
            torch.from_numpy(array.reshape(-1))[::self._PAGE_ELEMENTS].zero_()  # releases the GIL

    def copy_from(self, tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Copy the device tensors into the host arrays (the same arrays on every call)."""
        self._thread.join()
        for name, tensor in tensors.items():
            torch.from_numpy(self.arrays[name]).copy_(tensor)
        return self.arrays


class _Accumulator:
    """Float64 sums on the device, one slot per chosen layer."""

    def __init__(self, num_layers, d, num_classes, device):
        shape = (num_layers, d, d)
        self.xx = torch.zeros(shape, dtype=torch.float64, device=device)
        self.xy = torch.zeros((num_layers, d, num_classes), dtype=torch.float64, device=device)
        self.ss = torch.zeros(shape, dtype=torch.float64, device=device)
        self.sh = torch.zeros(shape, dtype=torch.float64, device=device)
        self._host = _HostSums({name: tuple(getattr(self, name).shape) for name in ("xx", "xy", "ss", "sh")}) \
            if _host_buffers_for(torch.device(device)) else None
        self.n_texts = 0
        # Kept on the device: reading it back each batch would stall the queue of GPU work.
        self._pairs = torch.zeros((), dtype=torch.int64, device=device)

    @property
    def n_pairs(self) -> int:
        return int(self._pairs)

    @n_pairs.setter
    def n_pairs(self, value: int) -> None:
        self._pairs.fill_(int(value))

    def add_batch(self, states, layers, lengths, onehot, precision, pooled_out=None):
        """Add one right-padded batch: states[l] [B, T, d]; lengths [B] real tokens per text.
        ``pooled_out`` [B, L, d], if given, receives the mean-pooled features of each layer."""
        B, T = states[0].shape[:2]
        positions = torch.arange(T, device=lengths.device)
        # Right padding: a text's prefix sums at its real positions never see padding. A pair
        # (s_t, h_{t+1}) is valid for positions t < length - 1; every other row is zeroed.
        pair_rows = (positions[None, :] < (lengths[:, None] - 1)).reshape(-1, 1)
        padding = (positions[None, :] >= lengths[:, None])[:, :, None]  # [B, T, 1]
        last_real = (lengths - 1).clamp(min=0)
        finite = torch.ones(len(layers), dtype=torch.bool, device=lengths.device)
        for slot, layer in enumerate(layers):
            # Padded positions are zeroed in place (the states are this batch's own): their values
            # never count, but an inf there (fp16 overflow on a pad token) would turn the zero rows
            # of the C1 product into NaN (0 * inf).
            hidden = states[layer].masked_fill_(padding, 0)
            prefix = torch.cumsum(hidden, dim=1, dtype=torch.float32)  # [B, T, d]
            pooled = prefix[torch.arange(B, device=lengths.device), last_real].double() / lengths[:, None]
            self.xx[slot] += pooled.T @ pooled
            self.xy[slot] += pooled.T @ onehot
            if pooled_out is not None:
                pooled_out[:, slot] = pooled
            # masked_fill, not a product: a NaN in a padded row must not leak into the sums
            flat = prefix.view(B * T, -1).masked_fill_(~pair_rows, 0.0)
            _add_pair_products(flat, hidden.reshape(B * T, -1), precision, self.ss[slot], self.sh[slot])
            # A NaN or inf in any real token's state reaches its text's full sum, the pooled feature.
            finite[slot] = torch.isfinite(pooled).all()
        self.n_texts += B
        self._pairs += (lengths - 1).clamp(min=0).sum()
        return finite

    def to_moments(self, layers, metadata) -> Moments:
        """The sums as a Moments. On a device with host buffers the arrays are those buffers, which
        the next call overwrites: fine for checkpoints (saved at once) and the final result (last)."""
        tensors = {name: getattr(self, name) for name in ("xx", "xy", "ss", "sh")}
        if self._host is not None:
            arrays = self._host.copy_from(tensors)
        else:
            arrays = {name: tensor.cpu().numpy() for name, tensor in tensors.items()}
        return Moments(arrays["xx"], arrays["xy"], arrays["ss"], arrays["sh"], layers=list(layers),
                       n_texts=self.n_texts, n_pairs=self.n_pairs, metadata=metadata)

    def load(self, saved: Moments):
        for name, total in (("xx", saved.sum_xx), ("xy", saved.sum_xy), ("ss", saved.sum_ss), ("sh", saved.sum_sh)):
            getattr(self, name).copy_(torch.from_numpy(total))
        self.n_texts, self.n_pairs = saved.n_texts, saved.n_pairs


class _SideStream:
    """A second CUDA stream for the accumulation, so that one batch's products can overlap the next
    batch's forward pass. Every hand-over between the two streams goes through this class.

    * ``run(*inputs)``: the side stream first waits for the main stream (the states are ready);
      the inputs are marked as in use by the side stream, so that the allocator does not hand
      their memory to the next forward pass before the side work is done; the body is queued on
      the side stream.
    * ``join()``: the main stream waits for all side work: before the sums or features are read,
      and before the sums are freed when a run stops with an error (the side stream could still be
      writing into them, and their memory would go to the next allocation on the main stream).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device=device)

    @contextlib.contextmanager
    def run(self, *inputs: torch.Tensor):
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        for tensor in inputs:
            tensor.record_stream(self.stream)
        with torch.cuda.stream(self.stream):
            yield

    def join(self) -> None:
        torch.cuda.current_stream(self.device).wait_stream(self.stream)


def _side_stream(device: torch.device) -> _SideStream:
    if device.type != "cuda":
        raise ValueError(f"overlap=True runs the accumulation on a second CUDA stream; the model is on {device}. "
                         "Leave overlap=False on other devices")
    return _SideStream(device)


# -- the model -------------------------------------------------------------------------------
def _backbone(model):
    """The transformer without its LM head: hidden states are all we need, logits are wasted work."""
    base = getattr(model, "base_model", None)
    if base is not None and base is not model and callable(base):
        return base
    return model


def _forward_states(backbone, input_ids, mask):
    output = backbone(input_ids=input_ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    states = getattr(output, "hidden_states", None)
    if states is None:
        raise ValueError(f"{type(backbone).__name__} returned no hidden states; NTPS needs a model that supports "
                         "output_hidden_states=True")
    return states


def _right_padded(sequences: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [B, T] padded on the right, and the attention mask. Always on the right, whatever
    the tokenizer's padding side: in a causal model real tokens then never follow padding, so their
    prefix sums need no masking, and the result is the same for either tokenizer setting."""
    longest = max(len(ids) for ids in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, tokens in enumerate(sequences):
        ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, :len(tokens)] = 1
    return _to_device(ids, device), _to_device(mask, device)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``. To a GPU through pinned memory and without blocking: a copy
    from pageable memory would make the host wait for all the GPU work queued so far."""
    if torch.device(device).type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _flags_for_host(finite: torch.Tensor):
    """``(flags, event)``: the batch's finiteness flags on their way to host memory, and the event
    after which they are there (None on the CPU). Reading them then waits for this batch's work
    only, not for the batches queued after it."""
    if not finite.is_cuda:
        return finite, None
    flags = finite.to("cpu", non_blocking=True)  # pinned host memory
    event = torch.cuda.Event()
    event.record()  # on the current stream: the one that computed the flags
    return flags, event


def _fingerprint(texts, labels, settings) -> str:
    return digest(*texts, np.asarray(labels), settings)


_SAMPLES_PER_TENSOR = 1024
_CHUNK_WORDS = 1 << 24


@torch.no_grad()
def _sample_positions(n: int, count: int) -> torch.Tensor:
    """``min(n, count)`` evenly spaced indices into n entries, the first and the last included, in
    exact integer arithmetic (float32 positions round past the end of a tensor of 2^24+ entries)."""
    m = min(int(n), int(count))
    if m <= 1:
        return torch.zeros(m, dtype=torch.int64)
    return torch.arange(m, dtype=torch.int64) * (int(n) - 1) // (m - 1)


def weights_fingerprint(model) -> str:
    """A SHA-256 fingerprint of a model's weights, cheap enough to compute once per run.

    For every tensor of ``model.state_dict()`` (parameters and buffers) it hashes the name, shape
    and dtype, the exact bytes of up to 1024 entries at evenly spaced positions (the first and
    the last included), and the sum, in int64, of the tensor's raw bit patterns read as 32-bit
    (or 16-bit) integers. Integer addition does not depend on the order of the terms, so the
    fingerprint is the same on every device and machine.

    What it detects: any renamed, added, removed, reshaped or recast tensor; any change to a
    sampled entry; a change to any single entry anywhere (it changes that entry's bit pattern and
    so the integer sum), and so any fine-tuning step or re-initialisation. What it can miss:
    changes that leave every sampled entry and every bit-pattern sum unchanged, such as two
    unsampled entries of one tensor swapped. Tensors on the ``meta`` device (offloaded) count
    by name, shape and dtype only.

    Cost: one read of every weight on its own device (chunks of 2^24 words), well under the
    cost of a forward pass over a dataset.
    """
    hasher = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        hasher.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        if tensor.device.type == "meta" or tensor.numel() == 0:
            continue
        flat = tensor.detach().reshape(-1)
        positions = _sample_positions(flat.numel(), _SAMPLES_PER_TENSOR).to(flat.device)
        hasher.update(flat[positions].contiguous().view(torch.uint8).cpu().numpy().tobytes())
        raw = flat.contiguous().view(torch.uint8)
        word = torch.int32 if raw.numel() % 4 == 0 else torch.int16 if raw.numel() % 2 == 0 else torch.uint8
        words = raw.view(word)
        total = torch.zeros((), dtype=torch.int64, device=flat.device)
        for start in range(0, words.numel(), _CHUNK_WORDS):
            total += words[start:start + _CHUNK_WORDS].to(torch.int64).sum()
        hasher.update(int(total).to_bytes(8, "little", signed=True))
    return hasher.hexdigest()


def _tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 of what decides the token ids: the fast tokenizer's full JSON, else the vocabulary,
    the special tokens and the class."""
    hasher = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        hasher.update(backend.to_str().encode())
    else:
        hasher.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    hasher.update(json.dumps(getattr(tokenizer, "special_tokens_map", {}), sort_keys=True, default=str).encode())
    return hasher.hexdigest()


_CHECKPOINT_ENTRIES = {"state.json", "moments"}


def is_checkpoint_folder(folder: str | Path) -> bool:
    """Whether ``folder`` is empty or holds an ntps checkpoint (``state.json`` and ``moments``) only."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return False
    names = {p.name for p in folder.iterdir()}
    return not names or ("state.json" in names and names <= _CHECKPOINT_ENTRIES)


def _read_checkpoint(folder: Path, fingerprint: str, replace: bool):
    """``(moments, next_batch)`` of a checkpoint of this very run, else None (a fresh start).

    A folder that is not an ntps checkpoint is never touched (``FileExistsError``); a checkpoint
    of another run, or a damaged one, is replaced (``replace``, with a warning) or refused.
    """
    if not folder.exists():
        return None
    if not folder.is_dir():
        raise FileExistsError(f"checkpoint {folder} is an existing file, not a checkpoint folder; ntps leaves it as "
                              "it is: move it away or choose another output")
    names = {p.name for p in folder.iterdir()}
    if not names:
        return None
    if not is_checkpoint_folder(folder):
        raise FileExistsError(f"checkpoint folder {folder} holds files that ntps did not write "
                              f"({', '.join(sorted(names - _CHECKPOINT_ENTRIES)[:5]) or 'no state.json'}); ntps "
                              "leaves it as it is: move it away or choose another output")
    try:
        state = json.loads((folder / "state.json").read_text())
        same = state.get("fingerprint") == fingerprint
        if same:
            return Moments.load(folder / "moments"), int(state["next_batch"])
        why = "was written by a run with other texts, labels, settings, tokenizer or model weights"
    except (ValueError, KeyError, TypeError, AttributeError, FileNotFoundError) as error:
        why = f"is damaged ({' '.join(str(error).split())[:200]})"
    if not replace:
        raise FileExistsError(f"checkpoint {folder} {why}; rerun the run that wrote it to finish it, or discard "
                              "its progress (--overwrite, replace_checkpoint=True)")
    warnings.warn(NTPSWarning(f"checkpoint {folder} {why}: starting over"), stacklevel=4)
    return None


# -- the entry point -------------------------------------------------------------------------
@torch.no_grad()
def extract_moments(model, tokenizer, texts: Sequence[str], labels, settings: ExtractionSettings | None = None, *,
                    num_classes: int | None = None, device=None, dtype=None, checkpoint: str | Path | None = None,
                    progress: bool = True, metadata: dict | None = None, replace_checkpoint: bool = True,
                    **overrides):
    """Accumulate sxx, sxy, c0, c1 of every chosen layer over ``texts`` in one forward pass.

    How the pass runs is an :class:`ExtractionSettings` (``settings``), or its fields given as
    keywords (``batch_size=8, max_length=64``), which override those of ``settings``.

    Parameters
    ----------
    model, tokenizer
        A causal LM and its tokenizer (:func:`ntps.load_model`). Batches are padded on the right
        internally; the tokenizer's ``padding_side`` does not change the result.
    texts : sequence of str, length N
    labels : array_like of int, shape (N,)
        Class indices in ``0..num_classes-1``.
    settings : ExtractionSettings, optional
        Batch size, truncation, layers, precision, shard, checkpoint cadence, features, overlap.
        ``precision``: ``"auto"`` is ``"split"`` on a GPU with bf16 tensor cores (compute
        capability 8.0 or newer) and a bf16/fp16 model, else ``"float32"``. ``"split"``: each
        float32 prefix sum split into a bf16 high part and a bf16 low part, products on tensor
        cores with float32 output, rows in chunks. ``"tf32x3"``: the same with TF32 parts.
        ``"float64"``: the reference, slow. On the CPU the split modes run the same code in
        float32. ``shard=(i, n)``: process every n-th batch starting at i and merge the n results
        with ``Moments.merge``; under an initialised ``torch.distributed`` the default is
        ``(rank, world_size)`` and the result is all-reduced. ``return_features``: also return
        the mean-pooled features x_i of every chosen layer, from the same forward pass, as a
        float32 array [N, L, d] in the order of ``texts`` (for probes); not combinable with
        ``shard`` or ``checkpoint``. ``overlap`` (CUDA only, experimental): accumulate each batch
        on a second stream while the next batch's forward pass runs; it forms the same products
        in the same order and holds the hidden states of two batches at once; not yet measured
        (``benchmarks/extract.py --overlap`` measures it).
    num_classes : int, optional
        C; default ``max(labels) + 1``.
    device, dtype : optional
        Move or cast the model first; default: leave it where and as it is.
    checkpoint : str or Path, optional
        A folder; partial sums are saved there every ``checkpoint_every`` batches, and a rerun
        with the same inputs resumes from them (and returns at once when complete). "The same
        inputs" are the texts, labels, settings, tokenizer and weights (:func:`weights_fingerprint`).
        A folder that holds anything but an ntps checkpoint is refused (``FileExistsError``).
    progress : bool
        Show a progress bar with tokens per second and the time left.
    metadata : dict, optional
        Extra provenance to record (for example ``{"dataset": ..., "split": ...}``).
    **overrides
        Fields of :class:`ExtractionSettings` (``batch_size=8``), applied over ``settings``.
    replace_checkpoint : bool
        What to do with a checkpoint of another run (other inputs, settings or weights) or a
        damaged one in ``checkpoint``: True starts over (with an :class:`~ntps.moments.NTPSWarning`),
        False raises ``FileExistsError`` and leaves it (the command line's default).

    Returns
    -------
    Moments
        Sums over the texts of this shard, for the chosen layers; with ``return_features``, the
        pair ``(moments, features)``.

    Raises
    ------
    ValueError
        Bad input, with the fix: one class only, ``max_length < 2``, no (prefix, next token)
        pair at all, a text longer than the model's positions, unknown layers...

    Warns
    -----
    NTPSWarning
        Fewer than ``MIN_TEXTS_PER_CLASS`` texts in a class, or no more texts than the hidden
        size (N <= d: sxx has rank at most N, and NTPS is 1 at every k >= N whatever the model).

    Examples
    --------
    >>> import ntps
    >>> from ntps.tiny import tiny_model
    >>> model, tokenizer = tiny_model("llama")
    >>> texts = ["a fine film", "a dull film", "I liked it a lot", "awful acting"]
    >>> moments = ntps.extract_moments(model, tokenizer, texts, [1, 0, 1, 0], progress=False)
    >>> moments.n_texts, moments.num_classes, moments.layers == list(range(model.config.num_hidden_layers + 1))
    (4, 2, True)
    """
    settings = (settings or ExtractionSettings()).replace(**overrides)
    texts, labels, num_classes = _check_inputs(texts, labels, num_classes)
    if settings.return_features and checkpoint is not None:
        raise ValueError("return_features needs one whole pass: it cannot be combined with shard or checkpoint")
    if dtype is not None:
        from .models import _resolve_dtype

        model.to(_resolve_dtype(dtype))
    if device is not None:
        model.to(device)
    model.eval()
    plan = _plan(model, tokenizer, texts, labels, num_classes, settings, metadata)
    accumulator = _Accumulator(len(plan.layers), model.config.hidden_size, num_classes, plan.device)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    start_batch = _resume(accumulator, checkpoint, plan.fingerprint, replace_checkpoint)
    features = _accumulate(model, plan, accumulator, start_batch, checkpoint, settings, progress)
    result = _reduce(accumulator, plan)
    return (result, features) if settings.return_features else result


class _Plan(NamedTuple):
    """Everything decided before the first batch runs."""

    input_ids: list  # token ids of each text, truncated
    lengths: list  # tokens per text
    batches: list  # text indices of each batch of this shard, in running order
    layers: list  # hidden-state indices kept
    precision: str  # "auto" resolved for this device
    device: torch.device
    distributed: bool
    onehot: torch.Tensor  # (N, C) float64 labels
    pad_id: int
    info: dict  # the provenance saved with the moments
    fingerprint: str  # what a checkpoint must match to be resumed


def _plan(model, tokenizer, texts, labels, num_classes, settings: ExtractionSettings, metadata) -> _Plan:
    """Tokenise, check the texts and layers against the model, cut the batches of this shard, and
    fix the provenance and the checkpoint fingerprint. Raises on every input that cannot work."""
    max_length, shard = settings.max_length, settings.shard
    parameter = next(model.parameters())
    run_device, model_dtype = parameter.device, parameter.dtype
    if run_device.type == "mps":
        raise ValueError("the moments are summed in float64 on the model's device, and Apple's MPS has no float64: "
                         "run the extraction on the CPU (device='cpu') or a CUDA GPU")
    precision = _auto_precision(run_device, model_dtype) if settings.precision == "auto" else settings.precision

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if shard is None and distributed:
        shard = (torch.distributed.get_rank(), torch.distributed.get_world_size())

    encoded = tokenizer(texts, add_special_tokens=True, truncation=max_length is not None, max_length=max_length,
                        verbose=False)  # a text beyond the positions gets our message below
    input_ids = encoded["input_ids"]
    lengths = [len(ids) for ids in input_ids]
    empty = [i for i, n in enumerate(lengths) if n == 0]
    if empty:
        raise ValueError(f"{len(empty)} texts tokenise to nothing (positions {empty[:5]}); drop them first")
    if all(n < 2 for n in lengths):
        raise ValueError(f"no text has two tokens{f' within max_length={max_length}' if max_length else ''}, so "
                         "there is no (prefix, next token) pair for the autoregressive moments; give longer texts")
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and max(lengths) > positions:
        longest = int(np.argmax(lengths))
        raise ValueError(f"text {longest} has {lengths[longest]} tokens but the model has {positions} positions "
                         f"(max_position_embeddings); truncate with max_length={positions} (--max-length {positions})")
    if len(texts) <= model.config.hidden_size:
        warnings.warn(NTPSWarning(few_texts_message(len(texts), model.config.hidden_size)), stacklevel=4)

    num_states = getattr(model.config, "num_hidden_layers", None)
    all_layers = list(range(num_states + 1)) if num_states is not None else None
    chosen = list(all_layers if settings.layers is None else settings.layers)
    if all_layers is not None:
        outside = [l for l in chosen if l not in all_layers]
        if outside:
            raise ValueError(f"layers {outside} do not exist: this model has hidden states 0..{num_states}")
    if len(set(chosen)) != len(chosen) or not chosen:
        raise ValueError(f"layers must be distinct and non-empty, got {chosen}")

    batches = plan_batches(lengths, settings.batch_size, shard)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    onehot = torch.nn.functional.one_hot(torch.from_numpy(labels), num_classes).to(torch.float64)
    model_id = getattr(model.config, "_name_or_path", None) or type(model).__name__
    # What identifies a shard: how the split was cut (batch size, shard) and what was cut (the
    # texts and labels, the tokenizer, the weights), so that merge can refuse parts that differ.
    info = {"model": model_id, "revision": getattr(model.config, "_commit_hash", None), "max_length": max_length,
            "model_dtype": str(model_dtype).removeprefix("torch."), "precision": precision,
            "device": run_device.type, "ntps_version": __version__, "torch_version": torch.__version__,
            "batch_size": settings.batch_size, "shard": list(shard) if shard else None,
            "tokenizer": getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__,
            "tokenizer_sha256": _tokenizer_fingerprint(tokenizer), "weights_sha256": weights_fingerprint(model),
            "data_sha256": _fingerprint(texts, labels, {"C": num_classes}), **(metadata or {})}
    info.setdefault("dataset", None)
    info.setdefault("split", None)
    fingerprint = _fingerprint(texts, labels, {k: info[k] for k in ("model", "max_length", "precision", "batch_size",
                                                                    "shard", "tokenizer_sha256", "weights_sha256")}
                               | {"layers": chosen, "C": num_classes, "dtype": info["model_dtype"]})
    return _Plan(input_ids, lengths, batches, chosen, precision, run_device, distributed, onehot, pad_id, info,
                 fingerprint)


def _resume(accumulator: "_Accumulator", checkpoint: Path | None, fingerprint: str, replace: bool) -> int:
    """Load the sums of a matching checkpoint into ``accumulator``; the batch to start from."""
    saved = _read_checkpoint(checkpoint, fingerprint, replace) if checkpoint is not None else None
    if saved is None:
        return 0
    accumulator.load(saved[0])
    return saved[1]


def _accumulate(model, plan: _Plan, accumulator: "_Accumulator", start_batch: int, checkpoint: Path | None,
                settings: ExtractionSettings, progress: bool):
    """The loop: one forward pass per batch, its products added to the sums, checkpoints on the way.
    Returns the mean-pooled features (N, L, d) with ``settings.return_features``, else None."""
    from tqdm.auto import tqdm

    chosen, lengths, batches, info = plan.layers, plan.lengths, plan.batches, plan.info
    d = model.config.hidden_size
    backbone = _backbone(model)
    total_tokens = sum(lengths[i] for batch in batches for i in batch)
    done_tokens = sum(lengths[i] for batch in batches[:start_batch] for i in batch)
    bar = tqdm(total=total_tokens, initial=done_tokens, unit="tok", unit_scale=True, disable=not progress,
               desc=f"moments of {len(chosen)} layers", dynamic_ncols=True)
    features = np.full((len(lengths), len(chosen), d), np.nan, dtype=np.float32) if settings.return_features else None
    side = _side_stream(plan.device) if settings.overlap else None
    pending = None  # (finite flags, event, batch) not yet read back
    try:
        for number in range(start_batch, len(batches)):
            batch = batches[number]
            ids, mask = _right_padded([plan.input_ids[i] for i in batch], plan.pad_id, plan.device)
            states = _forward_states(backbone, ids, mask)
            pooled = torch.empty((len(batch), len(chosen), d), dtype=torch.float64, device=plan.device) \
                if settings.return_features else None
            inputs = (mask.sum(dim=1), _to_device(plan.onehot[batch], plan.device))
            handed_over = (*states, *inputs) + (() if pooled is None else (pooled,))
            with side.run(*handed_over) if side else contextlib.nullcontext():
                finite = accumulator.add_batch(states, chosen, *inputs, plan.precision, pooled_out=pooled)
                flags, done = _flags_for_host(finite)
            del states  # with overlap, the memory waits for the side stream (record_stream), not for us
            if pooled is not None:
                if side:
                    side.join()
                features[batch] = pooled.float().cpu().numpy()
            # The finiteness of a batch is read back one batch late, once the next batch's work is
            # queued, so the GPU never waits for the host; a checkpoint or the result checks it first.
            if pending is not None:
                _raise_if_non_finite(*pending, chosen, info)
            pending = (flags, done, batch)
            bar.update(int(sum(lengths[i] for i in batch)))
            last = number + 1 == len(batches)
            if checkpoint is not None and ((number + 1) % settings.checkpoint_every == 0 or last):
                _raise_if_non_finite(*pending, chosen, info)
                pending = None
                if side:
                    side.join()
                _save_checkpoint(checkpoint, accumulator.to_moments(chosen, info), plan.fingerprint, number + 1)
        if pending is not None:
            _raise_if_non_finite(*pending, chosen, info)
    finally:
        if side:  # also on errors: the side stream may still be writing into the sums
            side.join()
        bar.close()
    return features


def _reduce(accumulator: "_Accumulator", plan: _Plan) -> Moments:
    """The sums as a :class:`Moments`; under ``torch.distributed``, all-reduced over the ranks."""
    if plan.distributed:
        for total in (accumulator.xx, accumulator.xy, accumulator.ss, accumulator.sh):
            torch.distributed.all_reduce(total)
        counts = torch.tensor([accumulator.n_texts, accumulator.n_pairs], dtype=torch.float64, device=plan.device)
        torch.distributed.all_reduce(counts)
        accumulator.n_texts, accumulator.n_pairs = (int(c) for c in counts.tolist())
        plan.info["shard"] = None
    return accumulator.to_moments(plan.layers, plan.info)


def _raise_if_non_finite(finite: torch.Tensor, done, batch: np.ndarray, chosen: list[int], info: dict) -> None:
    if done is not None:  # the flags are in host memory once this batch's work is done
        done.synchronize()
    if bool(finite.all()):
        return
    bad = [chosen[slot] for slot in torch.nonzero(~finite).flatten().tolist()]
    raise NonFiniteStatesError(
        f"NaN or inf in the hidden states of layer {bad[0]} (layers {bad}) for texts {batch[:5].tolist()}...; "
        f"with a {info['model_dtype']} model the usual cause is fp16 overflow: use dtype='bfloat16' or 'float32'")


def _save_checkpoint(folder: Path, partial: Moments, fingerprint: str, next_batch: int) -> None:
    # One atomic folder: the sums and the batch counter can never disagree.
    with atomic_dir(folder) as tmp:
        partial.save(tmp / "moments")
        (tmp / "state.json").write_text(json.dumps({"fingerprint": fingerprint, "next_batch": next_batch}) + "\n")
