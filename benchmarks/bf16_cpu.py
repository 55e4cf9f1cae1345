"""bfloat16 against float32 on the CPU: what it costs in time, and how far it moves NTPS and the probes.

On the real offline model (SmolLM2-135M-Instruct, d = 576, 31 hidden states), in one run:

* throughput: the bare forward with all hidden states, and `ntps.extract_moments`, over the same
  rt_sentiment texts in the same length-sorted batches; the two dtypes take turns (float32,
  bfloat16, float32, bfloat16, ...), so that a machine whose speed drifts hands the drift to both.
  It prints tokens per second of every round and the bfloat16 / float32 ratios of the means;
* agreement: on four short-text tasks, the moments and the per-text features (the mean-pooled
  states of every layer, as the probes use them) of the train and test splits, in both dtypes. Per
  task it prints the Spearman correlation of the two NTPS grids over every (layer, k) cell with
  k < min(N, d) (at k >= N the score is 1 whatever the model), the largest absolute difference,
  the best layer at one k in each dtype, and the held-out accuracy of the logistic probe on every
  layer in both dtypes (largest difference, Spearman over layers).

First it prints the CPU's capability as PyTorch sees it and whether the CPU multiplies bf16
matrices in hardware (AVX512-BF16 or AMX: `ntps.models.cpu_supports_bf16`). Without that,
PyTorch's bf16 matrix products take a slow fallback path, and bf16 is slower than float32.

    python benchmarks/bf16_cpu.py --threads 1        # 17 minutes on 2 AVX2 cores, one used
    python benchmarks/bf16_cpu.py --threads 1 --train 160 --test 80 --texts 64   # larger, slower

bf16 on a CPU without native products is slow (18 to 21 tokens/s on one AVX2 core for this
model, `benchmarks/results/cpu-2core-2026-11-30-bf16.txt`), so the defaults are small: 32
throughput texts, 128 train and 64 test texts per task.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

import numpy as np
import torch

TASKS = ("rt_sentiment", "rt_subjectivity", "debate_party", "fortunes_topic")
DTYPES = ("float32", "bfloat16")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="what ntps.load_model loads (default: the offline model)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--texts", type=int, default=32, help="rt_sentiment train texts for the throughput part")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per text in the throughput part")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the throughput part")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--train", type=int, default=128, help="train texts per task (agreement part)")
    parser.add_argument("--test", type=int, default=64, help="test texts per task (agreement part)")
    parser.add_argument("--agreement-max-length", type=int, default=32, help="tokens per text in the agreement part")
    parser.add_argument("--data-root", default=None, help="the folder holding tasks/ (default: the cache)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--note", default=None, help="a line for the log's header (e.g. what else ran)")
    args = parser.parse_args(argv)
    for name in ("texts", "max_length", "batch_size", "rounds", "train", "test", "agreement_max_length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def machine_lines() -> list[str]:
    from ntps.models import cpu_supports_bf16

    capabilities = dict(torch.cpu.get_capabilities()) if hasattr(torch.cpu, "get_capabilities") else {}
    flags = ", ".join(f"{name} {capabilities[name]}" for name in ("avx512_f", "avx512_bf16", "amx_tile", "amx_bf16")
                      if name in capabilities)
    return [
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {platform.platform()}",
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) of {os.cpu_count()} CPU(s), "
        f"CPU {capabilities.get('cpu_name', platform.processor() or '?')}",
        f"CPU capability (torch.backends.cpu.get_cpu_capability): {torch.backends.cpu.get_cpu_capability()}"
        + (f"; {flags}" if flags else ""),
        f"native bf16 products (ntps.models.cpu_supports_bf16): {cpu_supports_bf16()}",
        "load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    ]


def load_models(name: str):
    """float32 and bfloat16 copies of the model, and what load_model warned when loading bf16."""
    from ntps.models import load_model
    from ntps.moments import NTPSWarning

    models = {}
    for dtype in DTYPES:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NTPSWarning)
            models[dtype], tokenizer = load_model(name, dtype=dtype)
        said = [str(w.message) for w in caught if issubclass(w.category, NTPSWarning)]
        if dtype == "bfloat16":
            print(f"load_model(dtype='bfloat16') warned: {said[0]}" if said else
                  "load_model(dtype='bfloat16') did not warn", flush=True)
    return models, tokenizer


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")  # a constant has no ranking
    return float(spearmanr(a, b).statistic)


# -- throughput ----------------------------------------------------------------------------------
def batches(tokenizer, texts, batch_size, max_length):
    from ntps.extract import _right_padded, plan_batches

    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return [_right_padded([ids[i] for i in batch], pad, torch.device("cpu"))
            for batch in plan_batches([len(x) for x in ids], batch_size)], sum(len(x) for x in ids)


@torch.no_grad()
def bare_pass(backbone, padded):
    for ids, mask in padded:
        backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)


def throughput(models, tokenizer, args) -> dict:
    import ntps
    from ntps.extract import _backbone

    data = ntps.load_dataset("rt_sentiment", "train", max_examples=args.texts, root=args.data_root)
    padded, tokens = batches(tokenizer, data.texts, args.batch_size, args.max_length)
    print(f"\n== throughput: {len(data)} rt_sentiment train texts, max_length {args.max_length} ({tokens} tokens), "
          f"batch {args.batch_size}, {len(padded)} batches; {args.rounds} interleaved rounds", flush=True)
    contenders = {}
    for dtype, model in models.items():
        backbone = _backbone(model)
        warm, _ = batches(tokenizer, data.texts[:2], 2, args.max_length)
        bare_pass(backbone, warm)  # first calls allocate and pick kernels
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # two texts: too few to score, enough to warm up
            ntps.extract_moments(model, tokenizer, data.texts[:2], [0, 1], num_classes=2, batch_size=2,
                                 max_length=args.max_length, progress=False)
        contenders[(dtype, "bare")] = lambda b=backbone: bare_pass(b, padded)
        contenders[(dtype, "moments")] = lambda m=model: ntps.extract_moments(
            m, tokenizer, data.texts, data.labels, num_classes=data.num_classes, batch_size=args.batch_size,
            max_length=args.max_length, progress=False)
    seconds = {key: [] for key in contenders}
    for round_ in range(args.rounds):
        for dtype in models:
            for what in ("bare", "moments"):
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # N <= d: these moments are timed, not scored
                    contenders[(dtype, what)]()
                seconds[(dtype, what)].append(time.perf_counter() - start)
                print(f"  round {round_ + 1}, {dtype:8s} {what:8s} {seconds[(dtype, what)][-1]:8.2f} s "
                      f"{tokens / seconds[(dtype, what)][-1]:8.1f} tokens/s", flush=True)
    print(f"  mean of {args.rounds} rounds:")
    means = {key: float(np.mean(times)) for key, times in seconds.items()}
    for (dtype, what), mean in means.items():
        print(f"  {dtype:8s} {what:8s} {mean:8.2f} s {tokens / mean:8.1f} tokens/s")
    ratios = {}
    for what in ("bare", "moments"):
        ratios[what] = means[("float32", what)] / means[("bfloat16", what)]
        per_round = [f / b for f, b in zip(seconds[("float32", what)], seconds[("bfloat16", what)])]
        print(f"  {what}: bfloat16 / float32 throughput {ratios[what]:.3f}x "
              f"(float32 {1 / ratios[what]:.1f}x faster; per round {', '.join(f'{r:.3f}x' for r in per_round)})")
    for dtype in models:
        print(f"  {dtype}: moments / bare {means[(dtype, 'bare')] / means[(dtype, 'moments')]:.2f}x")
    return {"ratios": ratios, "seconds": seconds, "tokens": tokens}


# -- agreement -----------------------------------------------------------------------------------
def agreement(models, tokenizer, task: str, args) -> dict:
    import ntps
    from ntps.probes import probe_layers
    from ntps.score import default_k, ntps_grids

    train = ntps.load_dataset(task, "train", max_examples=args.train, root=args.data_root)
    test = ntps.load_dataset(task, "test", max_examples=args.test, root=args.data_root)
    out = {}
    for dtype, model in models.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # N <= d is expected: k stays below N
            moments, features = ntps.extract_moments(
                model, tokenizer, train.texts, train.labels, num_classes=train.num_classes,
                batch_size=args.batch_size, max_length=args.agreement_max_length, return_features=True,
                progress=False)
            _, test_features = ntps.extract_moments(
                model, tokenizer, test.texts, test.labels, num_classes=train.num_classes,
                batch_size=args.batch_size, max_length=args.agreement_max_length, return_features=True,
                progress=False)
        extract_seconds = time.perf_counter() - start
        tokens = moments.n_texts + moments.n_pairs  # every real token: one per text, plus one per pair
        start = time.perf_counter()
        grids = [ntps_grids(**moments.layer(layer)) for layer in moments.layers]
        probes = probe_layers(features, train.labels, test_features, test.labels, num_classes=train.num_classes,
                              mse=False)
        out[dtype] = {"moments": moments, "grids": grids, "probes": probes, "extract_seconds": extract_seconds,
                      "train_tokens": tokens, "score_seconds": time.perf_counter() - start}
    fp32, bf16 = out["float32"], out["bfloat16"]
    n, d = fp32["moments"].n_texts, fp32["moments"].hidden_size
    k_max = min(n, d) - 1
    k_max = min([k_max] + [g.theorem.size for run in (fp32, bf16) for g in run["grids"]])
    theorem = {dtype: np.stack([g.theorem[:k_max] for g in out[dtype]["grids"]]) for dtype in out}
    spectral = {dtype: np.stack([g.spectral[:k_max] for g in out[dtype]["grids"]]) for dtype in out}
    gap = np.abs(theorem["bfloat16"] - theorem["float32"])
    worst = np.unravel_index(np.argmax(gap), gap.shape)
    layers = fp32["moments"].layers
    k_summary = min(default_k(d), k_max)
    best = {dtype: int(np.argmax(theorem[dtype][:, k_summary - 1])) for dtype in out}
    accuracy = {dtype: out[dtype]["probes"]["test_accuracy"] for dtype in out}
    accuracy_gap = np.abs(accuracy["bfloat16"] - accuracy["float32"])

    def relative(name):
        return max(float(np.linalg.norm(bf16["moments"].layer(l)[name] - fp32["moments"].layer(l)[name])
                         / np.linalg.norm(fp32["moments"].layer(l)[name])) for l in layers)

    print(f"\n== {task}: {n} train / {len(test)} test texts, {train.num_classes} classes, max_length "
          f"{args.agreement_max_length}, {fp32['train_tokens']} train tokens; d = {d}, {len(layers)} hidden states")
    for dtype in out:
        print(f"  {dtype:8s} extraction (train + test) {out[dtype]['extract_seconds']:7.1f} s, "
              f"grids and probes {out[dtype]['score_seconds']:5.1f} s")
    print(f"  moments, largest relative difference over layers (Frobenius): sxx {relative('sxx'):.1e}, "
          f"c0 {relative('c0'):.1e}, c1 {relative('c1'):.1e}")
    print(f"  NTPS grid, {gap.size} cells (layers 0-{layers[-1]}, k = 1..{k_max}): Spearman "
          f"{spearman(theorem['float32'], theorem['bfloat16']):.4f}, largest |difference| {gap.max():.4f} "
          f"(layer {layers[worst[0]]}, k = {worst[1] + 1}), mean |difference| {gap.mean():.4f}")
    print(f"  spectral NTPS grid: Spearman {spearman(spectral['float32'], spectral['bfloat16']):.4f}, largest "
          f"|difference| {np.abs(spectral['bfloat16'] - spectral['float32']).max():.4f}")
    print(f"  best layer by NTPS at k = {k_summary}: float32 layer {layers[best['float32']]} "
          f"({theorem['float32'][best['float32'], k_summary - 1]:.4f}), bfloat16 layer {layers[best['bfloat16']]} "
          f"({theorem['bfloat16'][best['bfloat16'], k_summary - 1]:.4f})")
    for dtype in out:
        print(f"  probe test accuracy, {dtype:8s}: " + " ".join(f"{a:.3f}" for a in accuracy[dtype]))
    print(f"  probes: largest |difference| {accuracy_gap.max():.4f} (layer {layers[int(np.argmax(accuracy_gap))]}), "
          f"equal on {int((accuracy_gap == 0).sum())} of {len(layers)} layers, Spearman over layers "
          f"{spearman(accuracy['float32'], accuracy['bfloat16']):.4f}; best layer float32 "
          f"{layers[int(np.argmax(accuracy['float32']))]} ({accuracy['float32'].max():.3f}), bfloat16 "
          f"{layers[int(np.argmax(accuracy['bfloat16']))]} ({accuracy['bfloat16'].max():.3f})", flush=True)
    return {"ntps_spearman": spearman(theorem["float32"], theorem["bfloat16"]), "ntps_max_diff": float(gap.max()),
            "probe_max_diff": float(accuracy_gap.max()),
            "probe_spearman": spearman(accuracy["float32"], accuracy["bfloat16"]), "k_max": k_max}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    print("command: python benchmarks/bf16_cpu.py " + " ".join(sys.argv[1:] if argv is None else argv))
    for line in machine_lines():
        print(line)
    if args.note:
        print(f"note: {args.note}")
    print(f"model {args.model}; python {sys.version.split()[0]}", flush=True)
    models, tokenizer = load_models(args.model)
    results = {}
    if not args.skip_throughput:
        start = time.perf_counter()
        results["throughput"] = throughput(models, tokenizer, args)
        print(f"  (throughput part: {time.perf_counter() - start:.0f} s)")
    if not args.skip_agreement:
        start = time.perf_counter()
        results["agreement"] = {task: agreement(models, tokenizer, task, args) for task in args.tasks}
        print(f"\n(agreement part: {time.perf_counter() - start:.0f} s)")
        rows = results["agreement"]
        print("summary, bfloat16 against float32: " + "; ".join(
            f"{task} NTPS Spearman {r['ntps_spearman']:.4f}, max |diff| {r['ntps_max_diff']:.4f}, probes max "
            f"|diff| {r['probe_max_diff']:.4f}" for task, r in rows.items()))
    print(f"total {time.perf_counter() - began:.0f} s; load average at the end: "
          + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return results


if __name__ == "__main__":
    main()
