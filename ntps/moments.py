"""The per-layer second moments NTPS needs, as one additive, savable object.

For every layer l (index 0 = embedding output) and N texts (the theory chapter's table of symbols):

    sxx = (1/N) sum_i x_i x_i^T            [d, d]   x_i = mean of the text's token states
    sxy = (1/N) sum_i x_i y_i^T            [d, C]   y_i = one-hot label
    c0  = (1/N) sum_{i,t} s_{i,t} s_{i,t}^T [d, d]   s_{i,t} = sum_{u<=t} h_{i,u}, t = 1..T_i-1
    c1  = (1/N) sum_{i,t} s_{i,t} h_{i,t+1}^T [d, d]

A :class:`Moments` stores the float64 *sums* and the counts, so statistics of shards merge
exactly by adding them; the normalised matrices are properties. ``save`` writes a safetensors
file (the tensors) and a JSON file (counts and metadata) into a folder, atomically; ``load``
reads them back and never executes anything from the files.

Integrity: ``moments.json`` records the SHA-256 of ``moments.safetensors`` and of its own content,
and ``load`` checks both, so a changed byte in the sums or an edited count is an error, not a
different result. Shards record how they were cut (index and count, batch size, seed, caps,
tokenizer, a hash of the texts and of the weights); ``merge`` refuses shards that were cut
differently, a shard given twice and overlapping shard sets, and marks a merge of some of the
shards as partial (``metadata["shards"]``), which :meth:`Moments.is_partial` reports.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .cache import atomic_dir, sha256_of

__all__ = ["Moments", "MomentsMismatchError", "NTPSWarning", "MOMENTS_FILES", "is_moments_folder",
           "few_texts_message"]

FORMAT = "ntps-moments/1"
MOMENTS_FILES = ("moments.json", "moments.safetensors")
_SUMS = ("sum_xx", "sum_xy", "sum_ss", "sum_sh")
# Metadata that must agree for two parts to describe the same statistic (old folders lack the
# later keys: None on both sides agrees). The settings a user chooses come first, so that the
# message names the setting rather than a hash.
_MUST_MATCH = ("model", "revision", "dataset", "split", "max_length", "model_dtype", "tokenizer", "batch_size",
               "seed", "max_examples", "tokenizer_sha256", "weights_sha256")


class MomentsMismatchError(ValueError):
    """Two moment objects that cannot be merged (different model, layers, shapes, shard sets...)."""


class NTPSWarning(UserWarning):
    """A result that is computed but likely misleading (too few texts, a partial shard set...)."""


def few_texts_message(n_texts: int, hidden_size: int) -> str:
    """The warning for N <= d (one wording for extraction and scoring)."""
    return (f"N = {n_texts} texts <= d = {hidden_size} (hidden size): sxx has rank at most N, so NTPS is 1 at every "
            "k >= N whatever the model; use more texts than the hidden size")


def is_moments_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds moments written by :meth:`Moments.save` (and nothing else)."""
    folder = Path(folder)
    return folder.is_dir() and sorted(p.name for p in folder.iterdir()) == sorted(MOMENTS_FILES)


def _content_sha256(info: dict) -> str:
    """SHA-256 of moments.json's content (all but the checksums), in a canonical form."""
    content = {key: value for key, value in info.items() if key != "sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


@dataclass
class Moments:
    """Sums of the NTPS statistics of every chosen layer, plus counts and provenance.

    sum_xx [L,d,d], sum_xy [L,d,C], sum_ss [L,d,d], sum_sh [L,d,d]: float64 sums over texts
    (not yet divided by N). layers: the hidden-state index of each of the L entries.
    n_texts: N. n_pairs: number of (prefix, next token) pairs. metadata: model id, revision,
    dataset, split, max_length, dtypes, package version, ...

    Examples
    --------
    Two shards of the same texts merge exactly into the moments of all of them:

    >>> import numpy as np
    >>> from ntps import Moments
    >>> rng = np.random.default_rng(0)
    >>> def shard(n):
    ...     x, y, s = rng.standard_normal((n, 4)), np.eye(2)[rng.integers(0, 2, n)], rng.standard_normal((3 * n, 4))
    ...     return Moments([x.T @ x], [x.T @ y], [s.T @ s], [s[:-1].T @ s[1:]], layers=[0], n_texts=n,
    ...                    n_pairs=3 * n - 1)
    >>> a, b = shard(10), shard(30)
    >>> both = a.merge(b)
    >>> both.n_texts, bool(np.allclose(both.sxx * 40, a.sum_xx + b.sum_xx))
    (40, True)
    >>> sorted(both.layer(0))
    ['c0', 'c1', 'sxx', 'sxy']
    """

    sum_xx: np.ndarray
    sum_xy: np.ndarray
    sum_ss: np.ndarray
    sum_sh: np.ndarray
    layers: list[int]
    n_texts: int
    n_pairs: int
    metadata: dict = field(default_factory=dict)
    # True: loaded and checked against its checksums; False: loaded from a folder saved without
    # them (an older ntps), so unverified; None: made in memory.
    verified: bool | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in _SUMS:
            value = np.asarray(getattr(self, name))
            if np.iscomplexobj(value):
                raise TypeError(f"{name} is complex ({value.dtype}); moments are real float64 sums: pass "
                                f"np.real({name}) if its imaginary part is round-off")
            setattr(self, name, value.astype(np.float64))
        self.n_texts, self.n_pairs = _count(self.n_texts, "n_texts"), _count(self.n_pairs, "n_pairs")
        if not isinstance(self.metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(self.metadata).__name__}")
        L, d, _ = self.sum_xx.shape
        expected = {"sum_xx": (L, d, d), "sum_xy": (L, d, self.sum_xy.shape[-1]), "sum_ss": (L, d, d),
                    "sum_sh": (L, d, d)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected {shape}")
        if len(self.layers) != L:
            raise ValueError(f"{len(self.layers)} layer indices for {L} layers of statistics")
        self.layers = [int(l) for l in self.layers]

    # -- the normalised statistics -------------------------------------------------------
    def _mean(self, total: np.ndarray) -> np.ndarray:
        if self.n_texts == 0:
            raise ValueError("these moments hold no texts (n_texts = 0, an empty shard?): nothing to normalise; "
                             "merge them with the other shards of their split first")
        return total / self.n_texts

    @property
    def sxx(self) -> np.ndarray:
        return self._mean(self.sum_xx)

    @property
    def sxy(self) -> np.ndarray:
        return self._mean(self.sum_xy)

    @property
    def c0(self) -> np.ndarray:
        return self._mean(self.sum_ss)

    @property
    def c1(self) -> np.ndarray:
        return self._mean(self.sum_sh)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.sum_xx.shape[-1]

    @property
    def num_classes(self) -> int:
        return self.sum_xy.shape[-1]

    def layer(self, layer: int) -> dict[str, np.ndarray]:
        """The statistics of hidden-state index ``layer`` as float64 arrays, keyed like ``ntps.score``'s
        arguments: ``ntps.score.ntps_score(**moments.layer(12), k_v=8)``."""
        if layer not in self.layers:
            raise KeyError(f"layer {layer} was not extracted; these moments hold layers {self.layers}")
        i = self.layers.index(layer)
        return {"sxx": self._mean(self.sum_xx[i]), "sxy": self._mean(self.sum_xy[i]),
                "c0": self._mean(self.sum_ss[i]), "c1": self._mean(self.sum_sh[i])}

    # -- shards --------------------------------------------------------------------------
    def shard_coverage(self) -> tuple[int, list[int]] | None:
        """``(count, indices)`` of the shards of a split these moments hold, or None for a whole
        split (one pass over it, a distributed run, or an older merge that recorded nothing)."""
        shards = self.metadata.get("shards")
        if isinstance(shards, dict) and "count" in shards and "indices" in shards:
            return int(shards["count"]), sorted(int(i) for i in shards["indices"])
        shard = self.metadata.get("shard")
        if shard:
            index, count = (int(v) for v in shard)
            return count, [index]
        return None

    @property
    def is_partial(self) -> bool:
        """True when these moments hold some but not all shards of their split."""
        coverage = self.shard_coverage()
        return coverage is not None and len(coverage[1]) < coverage[0]

    # -- merging -------------------------------------------------------------------------
    def merge(self, *others: "Moments", names: Sequence[str] | None = None) -> "Moments":
        """Exact merge: sums and counts add. Returns a new object; inputs unchanged.

        Either all parts are shards of one split (``moments(shard=(i, n))``, or merges of such
        shards): they must have been cut the same way (same n, batch size, seed, caps, tokenizer,
        texts and weights) and hold different shards; the result records the shards it holds in
        ``metadata["shards"] = {"count": n, "indices": [...], "complete": bool}``, and a result
        without all n shards is partial (:attr:`is_partial`). Or no part is a shard: whole
        results of different texts (the same texts twice are refused) add up to the moments of
        their union. Mixing the two would count texts twice and is refused. ``names`` (one per
        part, ``self`` first) label the parts in error messages, for example their folders.

        Raises
        ------
        MomentsMismatchError
            Parts of different layers, shapes or provenance, a shard given twice, overlapping
            shard sets, shards cut differently, or a whole split with shards of it.
        """
        every = (self, *others)
        names = [f"part {i}" for i in range(len(every))] if names is None else [str(n) for n in names]
        if len(names) != len(every):
            raise ValueError(f"{len(names)} names for {len(every)} parts")
        for other, name in zip(others, names[1:]):
            if other.layers != self.layers:
                raise MomentsMismatchError(f"cannot merge {name}, moments of layers {other.layers}, with "
                                           f"{names[0]}, of layers {self.layers}")
            if other.sum_xy.shape != self.sum_xy.shape:
                raise MomentsMismatchError(f"cannot merge {names[0]} and {name}: shapes {self.sum_xy.shape} and "
                                           f"{other.sum_xy.shape} (hidden size or number of classes differ)")
            for key in _MUST_MATCH:
                if self.metadata.get(key) != other.metadata.get(key):
                    raise MomentsMismatchError(f"cannot merge moments with different {key}: "
                                               f"{self.metadata.get(key)!r} ({names[0]}) and "
                                               f"{other.metadata.get(key)!r} ({name})")
        metadata = dict(self.metadata)
        metadata.pop("shard", None)
        coverages = [m.shard_coverage() for m in every]
        if all(c is None for c in coverages):
            seen = {}
            for position, part in enumerate(every):
                data = part.metadata.get("data_sha256")
                if data is not None and data in seen:
                    raise MomentsMismatchError(f"{names[seen[data]]} and {names[position]} hold moments of the same "
                                               "texts: merging them would count every text twice")
                seen.setdefault(data, position)
            if len(every) > 1:
                metadata["data_sha256"] = None  # the union of different texts
        elif any(c is None for c in coverages):
            whole = coverages.index(None)
            raise MomentsMismatchError(f"{names[whole]} holds a whole split, not a shard: merging it with shards "
                                       "would count texts twice (merge the shards of one --shard i/n run only)")
        else:
            counts = sorted({count for count, _ in coverages})
            if len(counts) > 1:
                raise MomentsMismatchError(f"cannot merge shards of splits cut into different numbers of parts "
                                           f"{counts} (every job of one run uses --shard i/n with the same n)")
            for other, name in zip(others, names[1:]):
                if self.metadata.get("data_sha256") != other.metadata.get("data_sha256"):
                    raise MomentsMismatchError(f"cannot merge shards of different texts, {names[0]} and {name} (their "
                                               "datasets, seeds or --max-examples differ)")
            owner = {}
            for position, (count, indices) in enumerate(coverages):
                for index in indices:
                    if index in owner:
                        raise MomentsMismatchError(f"shard {index}/{count} is in both {names[owner[index]]} and "
                                                   f"{names[position]}: merging would count its texts twice")
                    owner[index] = position
            count = counts[0]
            metadata["shards"] = {"count": count, "indices": sorted(owner), "complete": len(owner) == count}
        metadata["merged_from"] = sum((m.metadata.get("merged_from", 1) for m in every))
        return Moments(*(sum(getattr(m, name) for m in every) for name in _SUMS), layers=list(self.layers),
                       n_texts=sum(m.n_texts for m in every), n_pairs=sum(m.n_pairs for m in every),
                       metadata=metadata)

    # -- files ---------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``moments.safetensors`` and ``moments.json`` into ``folder`` (atomically).

        ``moments.json`` records the SHA-256 of the safetensors file and of its own content, which
        :meth:`load` checks. ``folder`` is replaced as a whole, so it must be new, empty or a
        folder of moments: anything else (a file, a folder with other files) is left as it is
        and ``FileExistsError`` raised.
        """
        from safetensors.numpy import save_file

        folder = Path(folder)
        if folder.exists() and not (folder.is_dir() and (is_moments_folder(folder) or not any(folder.iterdir()))):
            what = "a folder with files that are not moments" if folder.is_dir() else "a file"
            raise FileExistsError(f"{folder} is {what}; moments are saved only into a new or empty folder or over "
                                  "other moments")
        # Through JSON first, so that the content checksum is that of what load will read back.
        info = json.loads(json.dumps({"format": FORMAT, "layers": self.layers, "n_texts": self.n_texts,
                                      "n_pairs": self.n_pairs, "metadata": self.metadata}))
        with atomic_dir(folder) as tmp:
            save_file({name: np.ascontiguousarray(getattr(self, name)) for name in _SUMS},
                      str(tmp / "moments.safetensors"))
            info["sha256"] = {"moments.safetensors": sha256_of(tmp / "moments.safetensors"),
                              "moments.json": _content_sha256(info)}
            (tmp / "moments.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Moments":
        """Read moments written by :meth:`save` (safetensors + JSON: no code is executed).

        Every problem with the files is a ``ValueError`` (``FileNotFoundError`` when they are
        missing) whose one-line message names the file and says to extract again: invalid or
        truncated JSON, an edited ``moments.json`` or a changed ``moments.safetensors`` (their
        checksums), a truncated safetensors file, missing or misshapen tensors. A folder saved
        by an older ntps, without checksums, loads with ``verified = False``.
        """
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        folder = Path(folder)
        json_path, tensor_path = folder / "moments.json", folder / "moments.safetensors"
        if not json_path.is_file() or not tensor_path.is_file():
            raise FileNotFoundError(f"{folder} does not hold saved moments (moments.json + moments.safetensors)")
        again = "extract the moments again"
        try:
            info = json.loads(json_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{json_path} is not valid JSON ({error}): the file is truncated or damaged; "
                             f"{again}") from None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            found = info.get("format") if isinstance(info, dict) else type(info).__name__
            raise ValueError(f"{json_path} has format {found!r}, expected {FORMAT!r}")
        checksums = info.get("sha256")
        if checksums is not None:
            if not isinstance(checksums, dict) or checksums.get("moments.json") != _content_sha256(info):
                raise ValueError(f"{json_path} was edited after it was saved (its content no longer matches the "
                                 f"checksum it records); {again}, or save edited moments with Moments.save")
            if checksums.get("moments.safetensors") != sha256_of(tensor_path):
                raise ValueError(f"{tensor_path} does not match the SHA-256 recorded in moments.json: the file is "
                                 f"truncated, damaged or was replaced after it was saved; {again}")
        for key in ("layers", "n_texts", "n_pairs", "metadata"):
            if key not in info:
                raise ValueError(f"{json_path} lacks the field {key!r}; {again}")
        if not isinstance(info["layers"], list) or not all(isinstance(l, int) and not isinstance(l, bool)
                                                           for l in info["layers"]):
            raise ValueError(f"{json_path}: 'layers' must be a list of integers, got {info['layers']!r}; {again}")
        try:
            _count(info["n_texts"], "n_texts"), _count(info["n_pairs"], "n_pairs")
        except ValueError as error:
            raise ValueError(f"{json_path}: {error}; {again}") from None
        if not isinstance(info["metadata"], dict):
            raise ValueError(f"{json_path}: 'metadata' must be an object, got {info['metadata']!r}; {again}")
        try:
            tensors = load_file(str(tensor_path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ValueError(f"{tensor_path} cannot be read ({' '.join(str(error).split())}): the file is "
                             f"truncated or damaged; {again}") from None
        missing = [name for name in _SUMS if name not in tensors]
        if missing:
            raise ValueError(f"{tensor_path} lacks the tensors {missing}; {again}")
        try:
            result = cls(*(tensors[name] for name in _SUMS), layers=info["layers"], n_texts=info["n_texts"],
                         n_pairs=info["n_pairs"], metadata=info["metadata"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"{folder}: {error}; {again}") from None
        result.verified = checksums is not None
        return result

    def __repr__(self) -> str:
        return (f"Moments(layers={self.num_layers}, d={self.hidden_size}, C={self.num_classes}, "
                f"n_texts={self.n_texts}, n_pairs={self.n_pairs}, model={self.metadata.get('model')!r})")
