"""The correlation experiment with more texts than the width: N = 1,200 > d = 576.

The book's CPU build caps every task at 320 training texts so that it fits its time budget, and
with N < d the perception second moment has rank p <= N: in-sample probes separate every task,
and NTPS at a large k sits near its null k / p. This script runs the same pipeline as the
correlation chapter (``ntps.experiments``) on the offline model over the offline suite at
1,200 training and 400 test texts per task (all of them where a task has fewer), and writes the
tables the chapter reads:

* ``layers.csv``: one row per (task, layer, k): theorem-consistent NTPS, p, null, lift, and the
  probes of that layer (in-sample and held-out accuracy, Cohen's kappa, majority baseline), with
  the task's sizes, number of classes and the training split's majority-class share;
* ``log.txt``: what ran, on what, and how long each stage took.

It keeps one CSV per task in the output folder and skips a task whose CSV is there with the same
settings, so it can be run in parts (the forward passes are cached by ``ntps.experiments``).

    python benchmarks/n_above_d.py                      # the whole suite (about an hour on 2 cores)
    python benchmarks/n_above_d.py --tasks rt_sentiment spam_assassin
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import ntps
from ntps import data, experiments, probes

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "n-above-d-cpu-2026-11-30"


def settings(args) -> dict:
    return {"model": args.model, "max_length": args.max_length, "train": args.train, "test": args.test,
            "layer_stride": args.layer_stride, "n_k": args.n_k, "probe_C": args.probe_C, "ridge": args.ridge,
            "dtype": "float32",
            "ntps_version": ntps.__version__}


def run_task(task: str, args, log) -> pd.DataFrame:
    start = time.perf_counter()
    run = experiments.run_statistics([args.model], [task], max_examples={"train": args.train, "test": args.test},
                                     max_length=args.max_length, batch_size=args.batch_size, dtype="float32",
                                     data_root=args.data_root,
                                     device="cpu", layers=list(range(0, args.depth + 1, args.layer_stride)))
    train, test = run.train[args.model][task], run.test[args.model][task]
    passes = run.extraction
    forward = time.perf_counter() - start
    start = time.perf_counter()
    scores, _ = experiments.ntps_table({task: train.moments}, k_fractions=experiments.k_fraction_grid(args.n_k),
                                       variants=["theorem"])
    scored = time.perf_counter() - start
    start = time.perf_counter()
    probed, _ = experiments.probe_table({task: train}, {task: test}, C=args.probe_C, ridge=args.ridge)
    probing = time.perf_counter() - start
    table = scores.drop(columns=["variant"]).merge(probed, on=["task", "layer"])
    table.insert(1, "n_train", len(train.labels))
    table.insert(2, "n_test", len(test.labels))
    table.insert(3, "classes", train.moments.num_classes)
    table.insert(4, "majority_share", probes.majority_accuracy(train.labels))
    tokens = {row.split: int(row.tokens) for row in passes.itertuples()}
    log(f"{task}: N = {len(train.labels)} train / {len(test.labels)} test texts, C = {train.moments.num_classes}, "
        f"tokens {tokens.get('train', 0)} / {tokens.get('test', 0)}; forward passes "
        f"{float(passes.seconds.sum()):.0f} s (cached: {bool(passes.cached.all())}), this call {forward:.0f} s; "
        f"NTPS {scored:.0f} s; probes {probing:.0f} s; p = {int(scores.p.min())}..{int(scores.p.max())}; "
        f"in-sample accuracy {probed.train_accuracy.min():.3f}..{probed.train_accuracy.max():.3f}, "
        f"held out {probed.test_accuracy.min():.3f}..{probed.test_accuracy.max():.3f}")
    return table


def with_majority_share(part: pd.DataFrame, root=None) -> pd.DataFrame:
    """The training split's majority-class share, for a task table written before the column was."""
    if "majority_share" not in part.columns:
        task, n_train = part["task"].iloc[0], int(part["n_train"].iloc[0])
        labels = data.load(task, "train", max_examples=n_train, root=root).labels
        part.insert(4, "majority_share", probes.majority_accuracy(labels))
    return part


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", default=None, help="offline tasks (default: the whole suite)")
    parser.add_argument("--model", default="smollm2-135m", help="the offline model")
    parser.add_argument("--train", type=int, default=1200, help="training texts per task")
    parser.add_argument("--test", type=int, default=400, help="test texts per task")
    parser.add_argument("--max-length", type=int, default=32, help="tokens per text")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--layer-stride", type=int, default=2, help="every n-th hidden state (0 = embeddings)")
    parser.add_argument("--depth", type=int, default=30, help="the model's number of layers")
    parser.add_argument("--n-k", type=int, default=19, help="k grid: round(f d), f = j / (n_k + 1)")
    parser.add_argument("--probe-C", type=float, default=1.0, help="inverse L2 strength of the logistic probe")
    parser.add_argument("--ridge", type=float, default=1.0, help="ridge of the least-squares probe")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-root", default=None, help="folder of built tasks (default: the cache)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tasks = list(data.OFFLINE_SUITE) if args.tasks is None else args.tasks
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = settings(args)
    log_path = args.out / "log.txt"

    def log(line: str) -> None:
        print(line, flush=True)
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    log(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} python benchmarks/n_above_d.py {' '.join(argv or sys.argv[1:])}")
    log(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
        f"settings {json.dumps(wanted)}")
    for task in tasks:
        part = args.out / f"{task}.csv"
        stamp = args.out / f"{task}.json"
        if part.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == wanted:
            log(f"{task}: already there")
            continue
        table = run_task(task, args, log)
        table.to_csv(part, index=False, float_format="%.6g")
        stamp.write_text(json.dumps(wanted) + "\n")
    parts = [with_majority_share(pd.read_csv(args.out / f"{task}.csv"), args.data_root) for task in data.OFFLINE_SUITE
             if (args.out / f"{task}.csv").is_file()]
    pd.concat(parts, ignore_index=True).to_csv(args.out / "layers.csv", index=False, float_format="%.6g")
    log(f"layers.csv: {len(parts)} tasks")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
