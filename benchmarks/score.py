"""Benchmark of the NTPS grid (prints; no asserts).

1. d = 576, C = 2 (SmolLM2-135M's width): ``ntps_grid`` (one decomposition per subspace, then
   cumulative sums) against the naive per-k loop (an explicit projector ``B_k pinv(B_k)`` for
   every k, as the released code does), median of ``--repeats`` runs, and the largest
   difference between the two grids.
2. d = 4096 (an 8B-shaped model), 33 layers (embedding output + 32 blocks), random SPD moments,
   on the CPU: the time of one layer's grid; the whole 33-layer grid only with ``--full-cpu``
   (about 33 times one layer: tens of minutes on a small CPU).
3. When ``torch.cuda.is_available()``: the same d = 4096 grid with ``backend="torch"`` in float64
   on the GPU, one layer and all 33, and its largest difference from the NumPy grid.

Run: ``python benchmarks/score.py [--repeats 5] [--naive-repeats 3] [--full-cpu] [--skip-large]
[--layers 33]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ntps import synthetic  # noqa: E402
from ntps.score import autoregressive_subspace, ntps_grid, whitened_targets  # noqa: E402


def sqrt_psd(a: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    values, vectors = np.linalg.eigh(a)
    values = np.where(values > rtol * values.max(), values, 0.0)
    return (vectors * np.sqrt(values)) @ vectors.T


def naive_grid(sxx, sxy, c0, c1, lean: bool = False) -> np.ndarray:
    """The per-k way: the same subspaces, then a pseudo-inverse (and, unless ``lean``, an
    explicit d x d projector) for every k."""
    root = sqrt_psd(sxx)
    q = whitened_targets(sxx, sxy).left
    v = autoregressive_subspace(c0, c1).vectors
    out = np.empty(v.shape[1])
    for k in range(1, v.shape[1] + 1):
        b = root @ v[:, :k]
        if lean:
            captured = b @ (np.linalg.pinv(b) @ q)
        else:
            captured = (b @ np.linalg.pinv(b)) @ q
        out[k - 1] = np.linalg.norm(captured) ** 2 / q.shape[1]
    return out


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def part_small(repeats: int, naive_repeats: int) -> None:
    d, n_classes = 576, 2
    m = synthetic.random_moments(d, n_classes, seed=0)
    args = m[:4]
    print(f"[1] d={d}, C={n_classes}, median of {repeats} runs (per-k loops: {naive_repeats})")
    ntps_grid(*args)  # warm-up (imports, BLAS threads)
    t_grid, grid = timed(lambda: ntps_grid(*args), repeats)
    t_naive, naive = timed(lambda: naive_grid(*args), naive_repeats)
    t_lean, lean = timed(lambda: naive_grid(*args, lean=True), naive_repeats)
    print(f"    ntps_grid (one decomposition + cumsum): {t_grid:8.3f} s")
    print(f"    per-k explicit projector B pinv(B):     {t_naive:8.3f} s   speed-up {t_naive / t_grid:6.1f}x")
    print(f"    per-k pinv without the d x d projector: {t_lean:8.3f} s   speed-up {t_lean / t_grid:6.1f}x")
    print(f"    max |grid - per-k| = {np.abs(grid - naive).max():.2e} (lean {np.abs(grid - lean).max():.2e})")


def large_layer(d: int, seed: int):
    return synthetic.random_moments(d, 2, seed=seed)[:4]


def part_large_cpu(d: int, n_layers: int, full: bool):
    print(f"[2] d={d}, {n_layers} layers, CPU (NumPy, {os.cpu_count()} cores visible)")
    start = time.perf_counter()
    moments = large_layer(d, 0)
    print(f"    (generating one layer's random moments: {time.perf_counter() - start:.1f} s, not timed below)")
    start = time.perf_counter()
    grid = ntps_grid(*moments)
    one = time.perf_counter() - start
    print(f"    one layer's grid:  {one:8.2f} s  (d_eff = {grid.size}); {n_layers} layers ~ {n_layers * one:.0f} s")
    if full:
        total = 0.0
        for layer in range(n_layers):
            moments = large_layer(d, layer)
            start = time.perf_counter()
            ntps_grid(*moments)
            total += time.perf_counter() - start
        print(f"    all {n_layers} layers:     {total:8.2f} s (measured)")
    return moments, grid


def part_large_gpu(d: int, n_layers: int, reference) -> None:
    import torch

    if not torch.cuda.is_available():
        print("[3] no CUDA device: GPU part skipped")
        return
    name = torch.cuda.get_device_name(0)
    print(f"[3] d={d}, {n_layers} layers, GPU ({name}), torch float64")

    def gpu_layer(seed):
        # random SPD moments made on the device (as a GPU extraction would leave them)
        g = torch.Generator(device="cuda").manual_seed(seed)
        spectrum = torch.logspace(0, -3, 2 * d, device="cuda", dtype=torch.float64)
        a = torch.randn(d, 2 * d, device="cuda", dtype=torch.float64, generator=g) * spectrum.sqrt()
        b = torch.randn(d, 2 * d, device="cuda", dtype=torch.float64, generator=g) * spectrum.sqrt()
        sxx, c0 = a @ a.T / (2 * d), b @ b.T / (2 * d)
        sxy = sxx @ torch.randn(d, 2, device="cuda", dtype=torch.float64, generator=g) / d**0.5
        c1 = c0 @ torch.randn(d, d, device="cuda", dtype=torch.float64, generator=g) / d**0.5
        return sxx, sxy, c0, c1

    if reference is not None:
        moments_np, grid_np = reference
        gpu_grid = ntps_grid(*moments_np, backend="torch", device="cuda")  # also the warm-up
        print(f"    max |GPU grid - NumPy grid| on the same layer = {np.abs(gpu_grid - grid_np).max():.2e}")
    else:
        ntps_grid(*gpu_layer(0), backend="torch", device="cuda")  # warm-up
    moments = gpu_layer(1)
    torch.cuda.synchronize()
    start = time.perf_counter()
    ntps_grid(*moments, backend="torch", device="cuda")
    torch.cuda.synchronize()
    one = time.perf_counter() - start
    print(f"    one layer's grid:  {one:8.2f} s (inputs on the GPU)")
    total = 0.0
    for layer in range(n_layers):
        moments = gpu_layer(100 + layer)
        torch.cuda.synchronize()
        start = time.perf_counter()
        ntps_grid(*moments, backend="torch", device="cuda")
        torch.cuda.synchronize()
        total += time.perf_counter() - start
    print(f"    all {n_layers} layers:     {total:8.2f} s (measured)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs of ntps_grid (median)")
    parser.add_argument("--naive-repeats", type=int, default=3, help="runs of the slow per-k loops (median)")
    parser.add_argument("--d", type=int, default=4096, help="width of the large model")
    parser.add_argument("--layers", type=int, default=33, help="layers of the large model")
    parser.add_argument("--full-cpu", action="store_true", help="time all layers on the CPU (slow)")
    parser.add_argument("--skip-large", action="store_true", help="only the d = 576 comparison")
    parser.add_argument("--skip-small", action="store_true", help="skip the d = 576 comparison")
    parser.add_argument("--skip-cpu-large", action="store_true", help="no d = 4096 NumPy run")
    args = parser.parse_args()
    if not args.skip_small:
        part_small(args.repeats, args.naive_repeats)
    if args.skip_large:
        return
    reference = None if args.skip_cpu_large else part_large_cpu(args.d, args.layers, args.full_cpu)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("[3] torch not installed: GPU part skipped")
        return
    part_large_gpu(args.d, args.layers, reference)


if __name__ == "__main__":
    main()
