"""Throughput of `ntps.extract_moments` against a bare forward pass and the released algorithm.

In one run, for each model shape, over the same length-sorted batches of the same texts:

* bare      : the transformer forward with all hidden states, nothing else (the floor);
* moments   : `ntps.extract_moments` (tokenising, forward, all-layer accumulation);
* released  : the forward plus the per-text triangular-matrix accumulation of the paper's
              released code (transcribed below in this project's words), float32.

It prints tokens per second, the ratios, the peak GPU memory, and the relative error of the
moments against a float64 accumulation of the same batch. Random-init models of the paper's
shapes are built from their configs (no weights needed).

    python benchmarks/extract.py                       # CPU, a mid-size random model
    python benchmarks/extract.py --device cuda --shapes qwen2-0.5b llama3-8b
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

from ntps.extract import _EXACT_STATES, _backbone, extract_moments as moments, plan_batches

SHAPES = {
    "cpu-mid": lambda: LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                                   num_key_value_heads=8, vocab_size=32000),
    "qwen2-0.5b": lambda: Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                      num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                      tie_word_embeddings=True),
    "llama3-8b": lambda: LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                     rope_theta=500000.0),
}


def number_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Texts are space-separated token ids: "17 4 99" encodes to [17, 4, 99]."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {str(i): i for i in range(vocab_size - 1)} | {"<pad>": vocab_size - 1}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>")


def random_texts(n: int, min_len: int, max_len: int, vocab: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(map(str, rng.integers(0, vocab - 1, size=rng.integers(min_len, max_len + 1)))) for _ in range(n)]


def moments_flops_per_token(d: int, precision: str, states_dtype: torch.dtype) -> int:
    """C0's and C1's products per token and hidden state, as ``ntps.extract`` forms them: 4 d^2 in
    float32 or float64 (S^T S and S_{:-1}^T H_{1:}); with split products 8 d^2 when the states are
    exact in the split format (the high and low parts of S stacked, times S or H), 12 d^2 when the
    states must be split too (C1 becomes [S_hi S_lo]^T [H_hi H_lo])."""
    if precision in ("float32", "float64"):
        return 4 * d * d
    return 8 * d * d if states_dtype in _EXACT_STATES[precision] else 12 * d * d


def matmul_flops(config, lengths, precision: str, states_dtype: torch.dtype = torch.bfloat16) -> dict[str, float]:
    """Matrix-product FLOPs of the three contenders over texts of the given token lengths.

    forward  : the backbone's projections (attention q, k, v, o and the gated MLP) for every token
               and layer, plus causal attention scores and values (4 q T(T+1)/2 per text and layer);
    moments  : per token and hidden state, :func:`moments_flops_per_token` (``states_dtype``: the
               model's dtype);
    released : per text of T >= 2 tokens and hidden state, 4 d^2 T + 6 d T (T - 1) (the products
               through the triangular and shift matrices, in the order the released algorithm forms
               them; it skips one-token texts).
    Norms, activations, rotary embeddings and the pooled features are left out: they are not
    matrix products, and the pooled features cost O(d^2) per text, not per token.
    """
    d, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    per_token_layer = 2 * (d * q + 2 * d * kv + q * d + 3 * d * config.intermediate_size)
    T = np.asarray(lengths, dtype=np.float64)
    tokens, causal_pairs = T.sum(), (T * (T + 1) / 2).sum()
    forward = layers * (per_token_layer * tokens + 4 * q * causal_pairs)
    states = layers + 1
    moments_flops = states * moments_flops_per_token(d, precision, states_dtype) * tokens
    paired = T[T >= 2]
    released = states * (4 * d * d * paired.sum() + 6 * d * (paired * (paired - 1)).sum())
    return {"forward": forward, "moments": moments_flops, "released": released}


def flop_ceilings(flops: dict[str, float]) -> dict[str, float]:
    """Throughput ratios if every matrix product ran at the forward pass's FLOP rate and nothing
    else cost time: the most `moments` could reach with its products, not a prediction."""
    forward, extra, released = flops["forward"], flops["moments"], flops["released"]
    return {"moments / bare": forward / (forward + extra), "released / bare": forward / (forward + released),
            "moments / released": (forward + released) / (forward + extra)}


def print_flop_ceilings(config, lengths, precision, states_dtype, bare_seconds=None):
    flops = matmul_flops(config, lengths, precision, states_dtype)
    ceilings = flop_ceilings(flops)
    print(f"  matrix-product FLOPs: forward {flops['forward']:.3g}, moments' products ({precision}) "
          f"{flops['moments']:.3g}, released {flops['released']:.3g}"
          + (f"; the bare forward ran at {flops['forward'] / bare_seconds / 1e12:.2f} TFLOP/s" if bare_seconds else ""))
    print("  ceiling at the forward's FLOP rate: " + ", ".join(f"{k} {v:.2f}x" for k, v in ceilings.items()))
    return ceilings


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def padded_batches(tokenizer, texts, batch_size, device):
    ids = tokenizer(texts)["input_ids"]
    for batch in plan_batches([len(x) for x in ids], batch_size):
        padded = tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
        yield padded["input_ids"].to(device), padded["attention_mask"].to(device)


@torch.no_grad()
def bare_pass(backbone, batches):
    for ids, mask in batches:
        backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)


@torch.no_grad()
def released_pass(backbone, batches, num_classes=2):
    """Per text: prefix sums and next-token states through triangular and shift matrices, all layers
    at once, as the released code does (right padding: the real tokens come first)."""
    sums = None
    for ids, mask in batches:
        states = torch.stack(backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                                      use_cache=False).hidden_states)  # [L, B, T, d]
        if sums is None:
            L, d = states.shape[0], states.shape[-1]
            sums = [torch.zeros(L, d, d, device=ids.device) for _ in range(2)]
        for i in range(ids.shape[0]):
            T = int(mask[i].sum())
            if T < 2:
                continue
            prefix_map = torch.triu(torch.ones(T, T - 1, device=ids.device))  # column j sums tokens 0..j
            shift_map = torch.cat([torch.zeros(1, T - 1, device=ids.device), torch.eye(T - 1, device=ids.device)])
            h = states[:, i, :T].float()  # [L, T, d]
            prefix_t = h.transpose(1, 2) @ prefix_map  # [L, d, T-1]
            sums[0] += prefix_t @ prefix_map.T @ h
            sums[1] += prefix_t @ shift_map.T @ h
    return sums


def timed(fn, device, repeats=1):
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def relative_error(model, tokenizer, texts, device, precision="auto"):
    """Moments of one batch at ``precision`` against a float64 accumulation of the same states."""
    fast = moments(model, tokenizer, texts, np.arange(len(texts)) % 2, batch_size=len(texts), precision=precision,
                   progress=False)
    exact = moments(model, tokenizer, texts, np.arange(len(texts)) % 2, batch_size=len(texts), precision="float64",
                    progress=False)
    errors = {}
    for name in ("sum_xx", "sum_xy", "sum_ss", "sum_sh"):
        a, b = getattr(fast, name), getattr(exact, name)
        errors[name] = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    return errors, fast.metadata["precision"]


def build(name, device, dtype, n_texts, min_len, max_len):
    """A random-init model of shape ``name`` on ``device``, a number tokenizer, and random texts."""
    config = SHAPES[name]()
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    tokenizer = number_tokenizer(min(config.vocab_size, 32000))
    texts = random_texts(n_texts, min_len, max_len, tokenizer.vocab_size)
    return config, model, tokenizer, texts, np.arange(n_texts) % 2, _backbone(model)


def run_shape(name, device, dtype, n_texts, batch_size, min_len, max_len, repeats, precisions=("auto",),
              released=True, overlap=False):
    config, model, tokenizer, texts, labels, backbone = build(name, device, dtype, n_texts, min_len, max_len)
    tokens = sum(len(x) for x in tokenizer(texts)["input_ids"])

    warm = texts[:batch_size]
    bare_pass(backbone, padded_batches(tokenizer, warm, batch_size, device))
    for precision in precisions:
        moments(model, tokenizer, warm, labels[:batch_size], batch_size=batch_size, precision=precision,
                progress=False)
    if released:
        released_pass(backbone, padded_batches(tokenizer, warm, batch_size, device))
    if overlap:
        moments(model, tokenizer, warm, labels[:batch_size], batch_size=batch_size, precision=precisions[0],
                progress=False, overlap=True)

    batches = list(padded_batches(tokenizer, texts, batch_size, device))
    # The contenders take turns, `repeats` rounds, and each is reported by its median: on a shared
    # or virtual machine the speed drifts over seconds, and timing one contender after the other
    # would hand the drift to whichever ran in the slow stretch.
    contenders = {"bare": lambda: bare_pass(backbone, batches)}
    for precision in precisions:
        key = "moments" if len(precisions) == 1 else f"moments[{precision}]"
        contenders[key] = (lambda p=precision: moments(model, tokenizer, texts, labels, batch_size=batch_size,
                                                        precision=p, progress=False))
    if overlap:  # the first precision, its accumulation on a second CUDA stream
        contenders["moments[overlap]"] = lambda: moments(model, tokenizer, texts, labels, batch_size=batch_size,
                                                         precision=precisions[0], progress=False, overlap=True)
    if released:
        contenders["released"] = lambda: released_pass(backbone, batches)
    samples = {key: [] for key in contenders}
    peaks = {key: 0 for key in contenders}
    for _ in range(repeats):
        for key, fn in contenders.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            samples[key].append(timed(fn, device))
            if device.type == "cuda":
                peaks[key] = max(peaks[key], torch.cuda.max_memory_allocated())
    results = {key: float(np.median(times)) for key, times in samples.items()}
    peak_bare = peaks.pop("bare")
    peaks.pop("released", None)
    peak_overlap = peaks.pop("moments[overlap]", None)
    errors = {key: relative_error(model, tokenizer, texts[:batch_size], device, precision)
              for key, precision in zip(peaks, precisions)}

    print(f"\n== {name} on {device.type} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), "
          f"{str(dtype).removeprefix('torch.')}, d={config.hidden_size}, {config.num_hidden_layers + 1} hidden states, "
          f"{n_texts} texts of {min_len}-{max_len} tokens ({tokens} tokens), batch {batch_size}")
    print(f"  median of {repeats} interleaved rounds (min - max in brackets)")
    for key, seconds in results.items():
        print(f"  {key:18s} {seconds:8.3f} s   {tokens / seconds:12,.0f} tokens/s   "
              f"[{min(samples[key]):.3f} - {max(samples[key]):.3f} s]")
    lengths = [len(x) for x in tokenizer(texts)["input_ids"]]
    for key in peaks:
        (errs, used) = errors[key]
        print_flop_ceilings(config, lengths, used, dtype, results["bare"])
        print(f"  {key}: {results['bare'] / results[key]:.2f}x the bare forward's throughput"
              + (f", {results['released'] / results[key]:.2f}x the released algorithm's" if released else ""))
        if device.type == "cuda":
            print(f"    peak GPU memory: bare {peak_bare / 2**30:.2f} GiB, moments {peaks[key] / 2**30:.2f} GiB")
        print(f"    relative error vs float64 ({used}): " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    if overlap:
        print(f"  moments[overlap]: {results['bare'] / results['moments[overlap]']:.2f}x the bare forward's throughput, "
              f"{results[next(iter(peaks))] / results['moments[overlap]']:.2f}x moments without overlap"
              + (f"; peak GPU memory {peak_overlap / 2**30:.2f} GiB" if device.type == "cuda" else ""))
        # Several batches, so that batches really overlap: the sums must match the plain run.
        subset, subset_labels = texts[:4 * batch_size], labels[:4 * batch_size]
        a = moments(model, tokenizer, subset, subset_labels, batch_size=batch_size, precision=precisions[0],
                    progress=False)
        b = moments(model, tokenizer, subset, subset_labels, batch_size=batch_size, precision=precisions[0],
                    progress=False, overlap=True)
        gaps = {name: float(np.abs(getattr(a, name) - getattr(b, name)).max() / np.abs(getattr(a, name)).max())
                for name in ("sum_xx", "sum_xy", "sum_ss", "sum_sh")}
        print("    overlap vs not, 4 batches, max difference / max entry: "
              + ", ".join(f"{k} {v:.1e}" for k, v in gaps.items()))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", nargs="+", default=None, choices=list(SHAPES))
    parser.add_argument("--texts", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--min-len", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=None, help="default 256 on a GPU, 128 on the CPU")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; medians are reported")
    parser.add_argument("--precisions", nargs="+", default=["auto"],
                        choices=["auto", "float32", "tf32x3", "split", "float64"])
    parser.add_argument("--skip-released", action="store_true")
    parser.add_argument("--overlap", action="store_true",
                        help="also time moments(overlap=True) (CUDA only) and compare its sums with the plain run")
    parser.add_argument("--marginal", nargs=2, type=int, metavar=("SMALL", "LARGE"),
                        help="steady-state throughput from two dataset sizes (no released, one precision)")
    parser.add_argument("--flops-only", action="store_true",
                        help="print the matrix-product FLOP ceilings of each shape and exit (no model is built)")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    shapes = args.shapes or (["qwen2-0.5b", "llama3-8b"] if gpu else ["cpu-mid"])
    dtype = torch.bfloat16 if gpu else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = False  # the float32 paths stay float32
    max_len = args.max_len or (256 if gpu else 128)
    if args.flops_only:
        for name in shapes:
            config = SHAPES[name]()
            n_texts = args.texts or (512 if gpu else 48)
            lengths = [len(t.split()) for t in random_texts(n_texts, args.min_len, max_len, 32000)]
            for precision in ("float32", "split"):
                print(f"== {name} ({str(dtype).removeprefix('torch.')} states), {n_texts} texts of "
                      f"{args.min_len}-{max_len} tokens, {precision} products")
                print_flop_ceilings(config, lengths, precision, dtype)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if args.marginal:
        for name in shapes:
            marginal(name, device, dtype, *args.marginal, args.batch_size or (32 if gpu else 16), args.min_len,
                     max_len, args.precisions[0])
        return
    for name in shapes:
        run_shape(name, device, dtype, args.texts or (512 if gpu else 48), args.batch_size or (32 if gpu else 16),
                  args.min_len, max_len, args.repeats, tuple(args.precisions),
                  not args.skip_released, args.overlap)



def marginal(name, device, dtype, small, large, batch_size, min_len, max_len, precision):
    """Steady-state throughput: time bare and moments at two dataset sizes and divide the extra
    tokens by the extra time. Fixed costs (allocating the float64 sums, copying them to the host at
    the end, tokenising) cancel, which matters at 8B where the sums alone are 13 GiB."""
    config, model, tokenizer, texts, labels, backbone = build(name, device, dtype, large, min_len, max_len)
    bare_pass(backbone, list(padded_batches(tokenizer, texts, batch_size, device)))  # warm every shape
    moments(model, tokenizer, texts[:small], labels[:small], batch_size=batch_size, precision=precision,
            progress=False)
    rows = {}
    for n in (small, large):
        tokens = sum(len(x) for x in tokenizer(texts[:n])["input_ids"])
        batches = list(padded_batches(tokenizer, texts[:n], batch_size, device))
        rows[n] = (tokens, timed(lambda: bare_pass(backbone, batches), device),
                   timed(lambda: moments(model, tokenizer, texts[:n], labels[:n], batch_size=batch_size,
                                         precision=precision, progress=False), device))
    (t1, b1, m1), (t2, b2, m2) = rows[small], rows[large]
    bare_rate, moments_rate = (t2 - t1) / (b2 - b1), (t2 - t1) / (m2 - m1)
    print(f"\n== {name}, {str(dtype).removeprefix('torch.')}, marginal over {small} -> {large} texts "
          f"({t1} -> {t2} tokens), batch {batch_size}, precision {precision}")
    for n, (tokens, bare_s, moments_s) in rows.items():
        print(f"  {n:5d} texts: bare {bare_s:7.3f} s, moments {moments_s:7.3f} s")
    print(f"  marginal: bare {bare_rate:,.0f} tokens/s, moments {moments_rate:,.0f} tokens/s -> "
          f"{moments_rate / bare_rate:.2f}x; fixed cost of moments ~ {m1 - t1 / moments_rate:.2f} s")
    errors, used = relative_error(model, tokenizer, texts[:batch_size], device, precision)
    print(f"  relative error vs float64 ({used}, one batch): " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
