"""Per-layer cost of the pieces of the moment accumulation, at one batch of a given shape (GPU).

Times each step of `ntps.extract._Accumulator.add_batch` for one layer separately, with CUDA
events (median of repeats), next to a bf16 matrix product of the same size, so that the gap
between `moments` and a bare forward pass can be attributed:

    python benchmarks/extract_ops.py --shape 32 256 4096 --shape 64 256 896
"""

from __future__ import annotations

import argparse

import torch

from ntps.extract import _Accumulator, _split_bf16, _split_tf32, _tf32_matmul


def median_ms(fn, repeats=10):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def run(B, T, d):
    device = torch.device("cuda")
    torch.manual_seed(0)
    hidden = torch.randn(B, T, d, device=device).bfloat16()
    lengths = torch.randint(T // 2, T + 1, (B,), device=device)
    lengths[0] = T
    R = B * T
    prefix = torch.cumsum(hidden, dim=1, dtype=torch.float32).view(R, d)
    rows = (torch.arange(T, device=device)[None] < (lengths[:, None] - 1)).reshape(-1, 1)
    halves16 = torch.empty(R, 2 * d, dtype=torch.bfloat16, device=device)
    halves32 = torch.empty(R, 2 * d, dtype=torch.float32, device=device)
    _split_bf16(prefix, halves16)
    _split_tf32(prefix, halves32)
    flat_states = hidden.view(R, d)
    acc64 = torch.zeros(d, d, dtype=torch.float64, device=device)
    product32 = torch.randn(2 * d, d, device=device)

    def tf32(a, b):
        with _tf32_matmul(True):
            return a @ b

    def fp32(a, b):
        with _tf32_matmul(False):
            return a @ b

    ops = {
        "cumsum bf16->fp32 over tokens": lambda: torch.cumsum(hidden, dim=1, dtype=torch.float32),
        "masked_fill rows": lambda: prefix.masked_fill(~rows, 0.0),
        "split bf16 hi/lo": lambda: _split_bf16(prefix, halves16),
        "split tf32 hi/lo": lambda: _split_tf32(prefix, halves32),
        "mm bf16 [2d,R]x[R,d] -> bf16": lambda: halves16.T @ halves16[:, :d],
        "mm bf16 [2d,R]x[R,d] -> fp32 (out_dtype)": lambda: torch.mm(halves16.T, halves16[:, :d],
                                                                       out_dtype=torch.float32),
        "mm tf32 [2d,R]x[R,d]": lambda: tf32(halves32.T, halves32[:, :d]),
        "mm fp32 [d,R]x[R,d] (no tf32)": lambda: fp32(prefix.T, prefix),
        "states bf16 -> fp32 copy": lambda: flat_states[1:].float(),
        "add [d,d] fp32 into fp64 (x3)": lambda: (acc64.add_(product32[:d]), acc64.add_(product32[d:]),
                                                  acc64.add_(product32[d:].T)),
    }
    print(f"\n-- one layer, batch {B} x {T} tokens, d = {d} (R = {R} rows) --")
    for name, fn in ops.items():
        try:
            print(f"  {name:42s} {median_ms(fn):8.3f} ms")
        except Exception as error:  # report, keep going
            print(f"  {name:42s} failed: {type(error).__name__}: {str(error)[:80]}")
    onehot = torch.zeros(B, 2, dtype=torch.float64, device=device)
    onehot[:, 0] = 1
    for precision in ("tf32x3", "split", "float32"):
        accumulator = _Accumulator(1, d, 2, device)
        print(f"  {'add_batch, one layer, ' + precision:42s} "
              f"{median_ms(lambda: accumulator.add_batch([hidden], [0], lengths, onehot, precision)):8.3f} ms")


def fixed_costs(num_layers, d, classes=2):
    """What a run pays once, whatever its length: allocating the float64 sums of every layer on the
    device and copying them to host memory at the end (``_Accumulator.to_moments``). At the
    Llama-3-8B shape (33 states, d = 4096) the four sums are 4 x 33 x 4096^2 x 8 bytes = 17.7 GB."""
    import time

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    accumulator = _Accumulator(num_layers, d, classes, device)
    sync()
    allocated = time.perf_counter() - start
    # On a GPU a background thread faults in the host memory of the sums from the start of a run;
    # waiting for it here shows the cost a run of any length hides (or pays, if shorter).
    start = time.perf_counter()
    if accumulator._host is not None:
        accumulator._host._thread.join()
    touched = time.perf_counter() - start
    start = time.perf_counter()
    moments = accumulator.to_moments(list(range(num_layers)), {})
    copied = time.perf_counter() - start
    size = sum(getattr(moments, name).nbytes for name in ("sum_xx", "sum_xy", "sum_ss", "sum_sh"))
    print(f"\n-- fixed costs, {num_layers} layers, d = {d}: sums {size / 1e9:.1f} GB --")
    print(f"  allocate and zero on the device            {allocated:8.3f} s")
    print(f"  fault in the host memory (background)      {touched:8.3f} s   (from the allocation on)")
    print(f"  copy to host (to_moments)                  {copied:8.3f} s   ({size / 1e9 / copied:.1f} GB/s)")
    # Where the copy's time goes, on one sum (33 x 4096^2 float64 = 4.4 GB at 8B). A fresh pageable
    # destination is faulted in page by page while the copy runs, which on the CPU alone was several
    # times slower than copying into memory already touched: these variants separate the two.
    source = accumulator.ss
    gigabytes = source.numel() * source.element_size() / 1e9

    def timed(label, fn):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        seconds = time.perf_counter() - start
        print(f"  {label:43s}{seconds:8.3f} s   ({gigabytes / seconds:.1f} GB/s)")
        return result

    print(f"  -- one sum, {gigabytes:.1f} GB --")
    timed("fresh pageable destination (.cpu())", lambda: source.cpu() if device.type == "cuda" else source.clone())
    touched = timed("  touch a fresh destination (zero_, threads)", lambda: torch.empty_like(source, device="cpu").zero_())
    timed("  copy into the touched destination", lambda: touched.copy_(source))
    del touched
    if device.type != "cuda":
        return
    pinned = timed("  allocate pinned host memory", lambda: torch.empty(source.shape, dtype=source.dtype,
                                                                         pin_memory=True))
    timed("  copy into pinned memory", lambda: pinned.copy_(source))
    del pinned
    timed("chunks through a pinned 256 MB staging buffer", lambda: _staged_copy(source))


def _staged_copy(source, chunk_bytes=256 * 2**20):
    """Device-to-host copy through two reusable pinned buffers: the DMA of one chunk overlaps the
    host-side copy of the previous one into an ordinary (pageable) destination."""
    flat = source.reshape(-1)
    destination = torch.empty(flat.shape, dtype=flat.dtype)
    step = max(1, chunk_bytes // flat.element_size())
    buffers = [torch.empty(step, dtype=flat.dtype, pin_memory=True) for _ in range(2)]
    done = [torch.cuda.Event(), torch.cuda.Event()]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())  # the sums were written on the default stream
    pending = None
    with torch.cuda.stream(stream):
        for index, start in enumerate(range(0, flat.numel(), step)):
            slot = index % 2
            stop = min(start + step, flat.numel())
            buffers[slot][:stop - start].copy_(flat[start:stop], non_blocking=True)
            done[slot].record(stream)
            if pending is not None:
                previous_slot, previous_start, previous_stop = pending
                done[previous_slot].synchronize()
                destination[previous_start:previous_stop].copy_(buffers[previous_slot][:previous_stop - previous_start])
            pending = (slot, start, stop)
    previous_slot, previous_start, previous_stop = pending
    done[previous_slot].synchronize()
    destination[previous_start:previous_stop].copy_(buffers[previous_slot][:previous_stop - previous_start])
    return destination.view(source.shape)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", nargs=3, type=int, action="append", metavar=("B", "T", "D"))
    parser.add_argument("--fixed", nargs=2, type=int, action="append", metavar=("LAYERS", "D"),
                        help="time the once-per-run costs of the sums instead")
    args = parser.parse_args()
    if args.fixed:
        for num_layers, d in args.fixed:
            fixed_costs(num_layers, d)
        return
    for B, T, d in args.shape or [(32, 256, 4096), (64, 256, 896)]:
        run(B, T, d)


if __name__ == "__main__":
    main()
