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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cache import atomic_dir

__all__ = ["Moments", "MomentsMismatchError"]

_SUMS = ("sum_xx", "sum_xy", "sum_ss", "sum_sh")
# Metadata that must agree for two shards to describe the same statistic.
_MUST_MATCH = ("model", "revision", "max_length", "dataset", "split")


class MomentsMismatchError(ValueError):
    """Two moment objects that cannot be merged (different model, layers, shapes...)."""


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

    def __post_init__(self):
        for name in _SUMS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))
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
            raise ValueError("these moments hold no texts: nothing to normalise")
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
        return {"sxx": self.sum_xx[i] / self.n_texts, "sxy": self.sum_xy[i] / self.n_texts,
                "c0": self.sum_ss[i] / self.n_texts, "c1": self.sum_sh[i] / self.n_texts}

    # -- merging -------------------------------------------------------------------------
    def merge(self, *others: "Moments") -> "Moments":
        """Exact merge of shards: sums and counts add. Returns a new object; inputs unchanged."""
        for other in others:
            if other.layers != self.layers:
                raise MomentsMismatchError(f"cannot merge moments of layers {other.layers} into layers {self.layers}")
            if other.sum_xy.shape != self.sum_xy.shape:
                raise MomentsMismatchError(f"cannot merge shapes {other.sum_xy.shape} and {self.sum_xy.shape} "
                                           "(hidden size or number of classes differ)")
            for key in _MUST_MATCH:
                if self.metadata.get(key) != other.metadata.get(key):
                    raise MomentsMismatchError(f"cannot merge moments with different {key}: "
                                               f"{self.metadata.get(key)!r} and {other.metadata.get(key)!r}")
        every = (self, *others)
        metadata = dict(self.metadata)
        metadata.pop("shard", None)
        metadata["merged_from"] = sum((m.metadata.get("merged_from", 1) for m in every))
        return Moments(*(sum(getattr(m, name) for m in every) for name in _SUMS), layers=list(self.layers),
                       n_texts=sum(m.n_texts for m in every), n_pairs=sum(m.n_pairs for m in every),
                       metadata=metadata)

    # -- files ---------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``moments.safetensors`` and ``moments.json`` into ``folder`` (atomically)."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            save_file({name: np.ascontiguousarray(getattr(self, name)) for name in _SUMS},
                      str(tmp / "moments.safetensors"))
            info = {"format": "ntps-moments/1", "layers": self.layers, "n_texts": self.n_texts,
                    "n_pairs": self.n_pairs, "metadata": self.metadata}
            (tmp / "moments.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Moments":
        """Read moments written by :meth:`save` (safetensors + JSON: no code is executed)."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        if not (folder / "moments.json").is_file() or not (folder / "moments.safetensors").is_file():
            raise FileNotFoundError(f"{folder} does not hold saved moments (moments.json + moments.safetensors)")
        info = json.loads((folder / "moments.json").read_text())
        if info.get("format") != "ntps-moments/1":
            raise ValueError(f"{folder}/moments.json has format {info.get('format')!r}, expected 'ntps-moments/1'")
        tensors = load_file(str(folder / "moments.safetensors"))
        return cls(*(tensors[name] for name in _SUMS), layers=info["layers"], n_texts=info["n_texts"],
                   n_pairs=info["n_pairs"], metadata=info["metadata"])

    def __repr__(self) -> str:
        return (f"Moments(layers={self.num_layers}, d={self.hidden_size}, C={self.num_classes}, "
                f"n_texts={self.n_texts}, n_pairs={self.n_pairs}, model={self.metadata.get('model')!r})")
