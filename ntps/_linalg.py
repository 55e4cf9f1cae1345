"""Shared linear-algebra helpers of :mod:`ntps.score` and :mod:`ntps.bounds` (private).

Three kinds of helpers live here:

* input checking: every public function turns its arguments into fresh float64 NumPy arrays
  (never views of the caller's arrays, so nothing the caller owns is ever written) and rejects
  bad input with a ``ValueError`` that names the argument, the problem and the fix;
* a tiny array "backend" (NumPy, or torch on any device) so that the one grid algorithm runs
  unchanged on the CPU and on a GPU;
* the numerical kernels: eigendecomposition restricted to the numerical range of a covariance,
  and a nested (order-preserving) orthonormalisation that drops columns adding nothing.

Tolerances (all relative, all documented in one place):

``rtol`` (default :func:`default_rtol`: ``1e-10`` for float64 inputs, ``1e-6`` when any moment
arrives in a lower precision such as float32)
    * an eigenvalue ``lam`` of a covariance (sxx or c0) is kept iff ``lam > rtol * lam_max``;
    * a singular value ``s`` of the whitened targets M is kept iff ``s > rtol * s_max``;
    * a column of an encoder adds a direction iff, after scaling the encoder column to unit
      Euclidean length, mapping it by ``Sigma^{1/2}`` and removing its component along the
      previous columns, the remainder has norm ``> rtol * sqrt(lam_max(Sigma))``.
    With ``rtol = 1e-10`` float64 round-off (about ``1e-16`` relative, amplified at most
    ``1/sqrt(rtol) = 1e5``-fold by the whitening) stays far below every cut, and a direction is
    dropped only when it is unresolvable from zero at the precision of the data.

``SYMMETRY_RTOL = 1e-4``
    a covariance whose asymmetry ``max|A - A^T|`` is at most this fraction of ``max|A|`` is
    symmetrised silently (round-off of a float32/bf16-compensated accumulation); a larger one is
    an error (usually c1 passed where c0 belongs).

``PSD_RTOL = 1e-4``
    a covariance whose most negative eigenvalue is below ``-PSD_RTOL * lam_max`` is rejected as
    not positive semi-definite; smaller negative eigenvalues are round-off and are dropped with
    the rest of the numerical null space.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

FLOAT64_RTOL = 1e-10
LOW_PRECISION_RTOL = 1e-6
SYMMETRY_RTOL = 1e-4
PSD_RTOL = 1e-4
# Columns are projected against earlier ones in blocks of this size (BLAS-3), then one by one.
_BLOCK = 64


# --------------------------------------------------------------------------------------------
# Input conversion and checks
# --------------------------------------------------------------------------------------------


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def input_dtype(x: Any) -> np.dtype:
    """The floating dtype ``x`` arrives in (torch bfloat16/float16 count as low precision)."""
    if _is_torch_tensor(x):
        name = str(x.dtype).replace("torch.", "")
        if name in ("bfloat16", "float16", "half"):
            return np.dtype(np.float16)
        if name in ("float32", "float"):
            return np.dtype(np.float32)
        return np.dtype(np.float64)
    dtype = np.asarray(x).dtype
    if np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating):
        return dtype
    return np.dtype(np.float64)


def default_rtol(*arrays: Any) -> float:
    """The default relative tolerance for moments given as ``arrays``.

    ``1e-10`` when every array is float64 (or integer), ``1e-6`` when any one is float32 or
    less precise: moments accumulated in float32 are known to about 1e-7..1e-6 relative, and
    eigen-directions below that level are noise, not signal.
    """
    low = any(input_dtype(a).itemsize < 8 for a in arrays if a is not None)
    return LOW_PRECISION_RTOL if low else FLOAT64_RTOL


def resolve_rtol(rtol: float | None, *arrays: Any) -> float:
    if rtol is None:
        return default_rtol(*arrays)
    rtol = float(rtol)
    if not (0.0 < rtol < 1.0):
        raise ValueError(f"rtol must be a relative tolerance in (0, 1), got {rtol!r}")
    return rtol


def _host(a: Any) -> np.ndarray:
    """A small array (mask, diagonal) as NumPy, wherever it lives."""
    if _is_torch_tensor(a):
        return a.detach().to("cpu").numpy()
    return np.asarray(a)


def _count_nonfinite(a: Any) -> int:
    if _is_torch_tensor(a):
        import torch

        return int((~torch.isfinite(a)).sum())
    return int((~np.isfinite(a)).sum())


def reject_complex(x: Any, name: str) -> None:
    """``TypeError`` naming ``name`` when ``x`` is complex: a float64 copy would silently drop the
    imaginary part (NumPy only warns)."""
    if _is_torch_tensor(x):
        is_complex = bool(x.is_complex())
    else:
        try:
            is_complex = bool(np.iscomplexobj(x))
        except (TypeError, ValueError):  # not an array at all: the numeric check reports it
            is_complex = False
    if is_complex:
        raise TypeError(f"{name} is complex ({getattr(x, 'dtype', 'complex values')}); these statistics are real: "
                        f"pass np.real({name}) if its imaginary part is round-off")


def to_float64(x: Any, name: str, ndim: int | None = None, bk=None):
    """A fresh float64 copy of ``x`` (NumPy array, list, torch tensor on any device).

    The copy is a NumPy array, or a torch tensor on ``bk.device`` for a torch backend ``bk``
    (a torch input then stays on its device: no round trip through the host). Raises
    ``TypeError`` naming ``name`` when ``x`` is complex, and ``ValueError`` naming it when ``x``
    is not numeric, has the wrong number of dimensions, is empty, or contains NaN/inf.
    """
    if x is None:
        raise ValueError(f"{name} is missing (got None)")
    reject_complex(x, name)
    on_device = bk is not None and bk.name == "torch"
    if on_device and _is_torch_tensor(x):
        out = x.detach().to(device=bk.device, dtype=bk.torch.float64, copy=True)
    else:
        if _is_torch_tensor(x):
            x = x.detach().to("cpu")
            if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
                x = x.float()  # NumPy has no bfloat16
            x = x.numpy()
        try:
            out = np.array(x, dtype=np.float64, copy=True)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a numeric array, got {type(x).__name__}: {err}") from err
    shape = tuple(out.shape)
    if ndim is not None and out.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {shape}")
    if int(np.prod(shape)) == 0:
        raise ValueError(f"{name} is empty (shape {shape})")
    n_bad = _count_nonfinite(out)
    if n_bad:
        raise ValueError(
            f"{name} contains {n_bad} non-finite value(s) (NaN or inf); recompute it "
            "from finite hidden states (fp16 overflow is the usual cause) or drop the affected texts"
        )
    if on_device and not _is_torch_tensor(out):
        out = bk.asarray(out)
    return out


def check_covariance(x: Any, name: str, bk=None):
    """A symmetric float64 copy of the (d, d) second-moment matrix ``x``.

    Round-off asymmetry (at most ``SYMMETRY_RTOL`` of the largest entry) is removed by
    averaging with the transpose; a larger one is an error.
    """
    a = to_float64(x, name, ndim=2, bk=bk)
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) second-moment matrix, got shape {tuple(a.shape)}")
    scale = float(abs(a).max())
    if scale == 0.0:
        raise ValueError(
            f"{name} is all zero: the features carry no mass (no texts, or all-zero hidden states)"
        )
    asym = float(abs(a - a.T).max())
    if asym > SYMMETRY_RTOL * scale:
        raise ValueError(
            f"{name} is not symmetric: max|A - A^T| = {asym:.3g} is {asym / scale:.3g} of max|A| "
            f"(round-off tolerance {SYMMETRY_RTOL:g}); pass the second-moment matrix itself "
            "(c1, the lag-one cross moment, is not symmetric: did you swap c0 and c1?)"
        )
    return 0.5 * (a + a.T)


def check_labels(x: Any, d: int, name: str = "sxy", bk=None):
    """A float64 copy of the (d, C) feature-label cross moment, with every class present."""
    a = to_float64(x, name, bk=bk)
    shape = tuple(a.shape)
    if a.ndim == 1:
        raise ValueError(
            f"{name} must be a (d, C) matrix (one column per class), got a 1-D array of shape "
            f"{shape}; for one target use {name}[:, None]"
        )
    if a.ndim != 2:
        raise ValueError(f"{name} must be a (d, C) matrix, got shape {shape}")
    if shape[0] != d:
        hint = " (did you pass its transpose?)" if shape[1] == d else ""
        raise ValueError(
            f"{name} has shape {shape} but sxx is ({d}, {d}): {name} must be (d, C) = ({d}, C){hint}"
        )
    present = _host((a != 0).any(0))
    if not present.any():
        raise ValueError(
            f"{name} is all zero: the labels carry no mass (no labelled texts, or all-zero features)"
        )
    empty = np.flatnonzero(~present)
    if empty.size:
        raise ValueError(
            f"{name} column(s) {empty.tolist()} are all zero: class(es) {empty.tolist()} have no "
            "examples (or their features sum to zero); drop empty classes from the label set "
            "before computing the moments"
        )
    return a


def check_cross_moment(x: Any, d: int, name: str = "c1", bk=None):
    """A float64 copy of the (d, d) lag-one cross moment c1 (not symmetric)."""
    a = to_float64(x, name, ndim=2, bk=bk)
    if tuple(a.shape) != (d, d):
        raise ValueError(
            f"{name} has shape {tuple(a.shape)} but c0 is ({d}, {d}): both must come from the same layer"
        )
    if not bool((a != 0).any()):
        raise ValueError(
            f"{name} is all zero: there is no autoregressive signal (no text has two tokens or more)"
        )
    return a


def check_same_dim(d_sigma: int, d_c0: int) -> None:
    if d_sigma != d_c0:
        raise ValueError(
            f"c0 is ({d_c0}, {d_c0}) but sxx is ({d_sigma}, {d_sigma}): all four moments must come "
            "from the same layer of the same model"
        )


def check_encoder(x: Any, d: int, name: str = "V") -> np.ndarray:
    """A float64 copy of a (d, k) encoder; a 1-D array of length d is one column."""
    a = to_float64(x, name)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != d:
        hint = " (did you pass its transpose?)" if a.ndim == 2 and a.shape[1] == d else ""
        raise ValueError(
            f"{name} has shape {a.shape} but sxx is ({d}, {d}): an encoder must be (d, k) = ({d}, k){hint}"
        )
    return a


def check_k(k: Any, upper: int, name: str, what: str) -> int:
    """``k`` as an int in ``[1, upper]``, else a ValueError stating the valid range."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        if isinstance(k, (float, np.floating)) and float(k).is_integer():
            k = int(k)
        else:
            raise ValueError(f"{name} must be an integer in [1, {upper}] ({what}), got {k!r}")
    k = int(k)
    if not 1 <= k <= upper:
        raise ValueError(f"{name} must be in [1, {upper}] ({what}), got {k}")
    return k


# --------------------------------------------------------------------------------------------
# Array backends: the grid algorithm runs on NumPy or on torch (any device), float64
# --------------------------------------------------------------------------------------------


class NumpyBackend:
    name = "numpy"

    def asarray(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=np.float64)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a, dtype=np.float64)

    def eigh(self, a):
        return np.linalg.eigh(a)

    def qr(self, a):
        return np.linalg.qr(a)

    def svd(self, a):
        return np.linalg.svd(a, full_matrices=False)

    def sqrt(self, a):
        return np.sqrt(a)

    def zeros(self, shape):
        return np.zeros(shape)

    def hstack(self, arrays):
        return np.concatenate(arrays, axis=1)

    def reverse(self, a, axis: int):
        return np.flip(a, axis=axis)

    def synchronize(self) -> None:
        pass


class TorchBackend:
    name = "torch"

    def __init__(self, device: Any = None):
        import torch  # optional dependency, imported only when asked for

        self.torch = torch
        self.device = torch.device(device if device is not None else "cpu")

    def asarray(self, a: Any):
        if _is_torch_tensor(a):
            return a.to(device=self.device, dtype=self.torch.float64)
        return self.torch.as_tensor(np.ascontiguousarray(a), dtype=self.torch.float64, device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        if _is_torch_tensor(a):
            return a.detach().to("cpu").numpy().astype(np.float64)
        return np.asarray(a, dtype=np.float64)

    def eigh(self, a):
        return self.torch.linalg.eigh(a)

    def qr(self, a):
        return self.torch.linalg.qr(a)

    def svd(self, a):
        return self.torch.linalg.svd(a, full_matrices=False)

    def sqrt(self, a):
        return self.torch.sqrt(a)

    def zeros(self, shape):
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.device)

    def hstack(self, arrays):
        return self.torch.cat(list(arrays), dim=1)

    def reverse(self, a, axis: int):
        return self.torch.flip(a, dims=(axis,))

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


def get_backend(backend: str = "numpy", device: Any = None):
    if backend == "numpy":
        if device not in (None, "cpu"):
            raise ValueError(f"backend='numpy' runs on the CPU only; use backend='torch' for device={device!r}")
        return NumpyBackend()
    if backend == "torch":
        try:
            return TorchBackend(device)
        except ImportError as err:  # pragma: no cover - torch is a dependency of the project
            raise ValueError("backend='torch' needs PyTorch installed") from err
    raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}")


# --------------------------------------------------------------------------------------------
# Numerical kernels (backend-generic)
# --------------------------------------------------------------------------------------------


class RangeEig(NamedTuple):
    """Eigenpairs of a PSD matrix on its numerical range, largest first."""

    values: Any  # (p,) eigenvalues > rtol * max, descending
    vectors: Any  # (d, p) orthonormal eigenvectors


def range_eigh(bk, a, rtol: float, name: str) -> RangeEig:
    """Eigendecomposition of the symmetric PSD ``a`` restricted to its numerical range.

    Keeps eigenvalues ``lam > rtol * lam_max`` (descending). Raises if ``a`` is markedly
    indefinite (an eigenvalue below ``-PSD_RTOL * lam_max``).
    """
    values, vectors = bk.eigh(a)
    values = bk.reverse(values, 0)
    vectors = bk.reverse(vectors, 1)
    top = float(values[0])
    low = float(values[-1])
    if top <= 0.0:
        raise ValueError(f"{name} has no positive eigenvalue: it is not a second-moment matrix")
    if low < -PSD_RTOL * top:
        raise ValueError(
            f"{name} is not positive semi-definite: eigenvalue {low:.3g} against a largest of "
            f"{top:.3g}; a second-moment matrix (1/N) sum x x^T has none below zero"
        )
    keep = values > rtol * top
    return RangeEig(values[keep], vectors[:, keep])


def nested_orthonormal_columns(bk, b, tol: float):
    """Orthonormalise the columns of ``b`` (p, m) in order, keeping the spans nested.

    Returns ``(basis, kept)``: ``basis`` is (p, m) with ``span(basis[:, :k]) ==
    span(b[:, :k])`` for every k; a column whose remainder, after removing its component along
    the previous columns, has norm ``<= tol`` adds nothing and its basis column is zero;
    ``kept`` (m,) is a NumPy bool mask of the columns that added a direction.

    Fast path: one Householder QR without pivoting, exact for nested spans as long as every
    ``|R_jj| > tol``. Householder QR is *not* nested after a (near-)dependent column: the
    reflector it builds there points in a noise direction that later columns then use. So from
    the first such column on, the remaining columns are orthonormalised by block classical
    Gram-Schmidt with re-orthogonalisation (CGS2: two projections, BLAS-3 across blocks) and
    one-by-one dropping inside each block.
    """
    p, m = b.shape
    basis = bk.zeros((p, m))
    kept = np.zeros(m, dtype=bool)
    q, r = bk.qr(b)  # reduced: q (p, min(p, m)), r (min(p, m), m)
    diag = _host(abs(r.diagonal()))
    bad = np.flatnonzero(diag <= tol)
    if bad.size == 0:
        # every leading column added a direction; if m > p the first p already span R^p
        n = diag.size
        basis[:, :n] = q[:, :n]
        kept[:n] = True
        return basis, kept
    first_bad = int(bad[0])
    basis[:, :first_bad] = q[:, :first_bad]
    kept[:first_bad] = True
    prev = q[:, :first_bad]  # orthonormal basis accepted so far
    for start in range(first_bad, m, _BLOCK):
        if prev.shape[1] >= p:
            break  # the basis spans the whole space: later columns add nothing
        stop = min(start + _BLOCK, m)
        block = b[:, start:stop]
        for _ in range(2):  # CGS2: twice is enough for orthogonality to round-off
            block = block - prev @ (prev.T @ block)
        new_vectors = []
        for j in range(stop - start):
            v = block[:, j]
            before = float((v @ v) ** 0.5)
            for _ in range(2):
                for u in new_vectors:
                    v = v - u * (u @ v)
            norm = float((v @ v) ** 0.5)
            if norm <= tol or prev.shape[1] + len(new_vectors) >= p:
                continue
            if norm < 1e-3 * before:
                # heavy cancellation inside the block: restore orthogonality to earlier blocks
                v = v - prev @ (prev.T @ v)
                norm = float((v @ v) ** 0.5)
                if norm <= tol:
                    continue
            u = v / norm
            new_vectors.append(u)
            basis[:, start + j] = u
            kept[start + j] = True
        if new_vectors:
            prev = bk.hstack([prev] + [u[:, None] for u in new_vectors])
    return basis, kept


def unit_columns(bk, v):
    """``v`` with every nonzero column scaled to unit Euclidean length (zero columns stay zero)."""
    norms = bk.to_numpy(((v * v).sum(0)) ** 0.5)
    scale = np.where(norms > 0.0, 1.0 / np.where(norms > 0.0, norms, 1.0), 0.0)
    return v * bk.asarray(scale)[None, :]


def stack_or_nan(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Stack 1-D arrays of different lengths into a 2-D array padded with NaN."""
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
