"""Run the book's notebooks: jupytext sources + a papermill parameter file -> executed .ipynb.

Layout: ``notebooks/<name>.py`` (jupytext percent format, one cell tagged ``parameters``) and
``notebooks/params/<name>/<profile>.yaml`` with profiles ``smoke`` (a tiny random model, seconds),
``cpu`` (what the book shows) and ``colab-paper`` (hub models on a GPU). The settings several
chapters must agree on (the model, text lengths and caps, dtype, device: so that one chapter reuses
another's cached forward passes) live once, in ``notebooks/params/shared/<profile>.yaml``; each
notebook receives those of them that its parameters cell declares, and its own file may not repeat
them.

The executed copy records a hash of everything it depends on (source, parameters, the ``ntps``
package, and the saved result tables it reads); an unchanged notebook is not run again. A failed run raises and leaves only a
``<name>.failed.ipynb`` beside the outputs, never a stale or half-written ``<name>.ipynb``.

Command line: ``python -m ntps.notebooks --profile cpu --out book/executed [NOTEBOOK ...]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import yaml

from .cache import atomic_file

__all__ = ["repo_root", "notebook_sources", "book_notebooks", "params_file", "shared_params_file",
           "parameter_names", "load_params", "execute", "page_style", "main"]

PROFILES = ("smoke", "cpu", "colab-paper")
SHARED = "shared"  # notebooks/params/shared/<profile>.yaml

# Added to every executed notebook right after its parameters (and hidden from the page): a reader
# who opens an executed chapter on Colab gets the package installed from the repository first.
COLAB_INSTALL_CELL = """\
# On Colab, install the package first (elsewhere `make setup` has installed it).
import importlib, importlib.util, subprocess, sys

if "google.colab" in sys.modules and importlib.util.find_spec("ntps") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package_source], check=True)
    importlib.invalidate_caches()  # the running kernel must see what pip just installed
    import ntps
    print(f"installed ntps {ntps.__version__} from {package_source} into {ntps.__file__}")"""


def repo_root(start: str | Path | None = None) -> Path:
    """The folder holding ``_config.yml``, searched upwards from ``start`` (default: this package)."""
    here = Path(start or Path(__file__).parent).resolve()
    for folder in (here, *here.parents):
        if (folder / "_config.yml").is_file() and (folder / "notebooks").is_dir():
            return folder
    raise FileNotFoundError(f"no _config.yml with a notebooks/ folder above {here}: run from a checkout of the book")


def notebook_sources(root: str | Path | None = None) -> list[Path]:
    """All notebook sources ``notebooks/*.py``, in name order."""
    return sorted((repo_root(root) / "notebooks").glob("[0-9]*.py"))


def book_notebooks(root: str | Path | None = None) -> list[Path]:
    """The notebook sources the book shows: those whose executed copy ``book/executed/<name>`` is in
    ``_toc.yml``, in name order, except that chapters reading saved results (``load_table``,
    ``should_you_use_ntps``) come after the others."""
    folder = repo_root(root)
    toc = (folder / "_toc.yml").read_text()
    shown = [source for source in notebook_sources(folder) if f"book/executed/{source.stem}" in toc]
    # A chapter that reads saved results runs after every chapter that saves them.
    return sorted(shown, key=lambda source: "load_table(" in source.read_text() or "should_you_use_ntps(" in
                  source.read_text())


def params_file(source: str | Path, profile: str) -> Path:
    source = Path(source)
    path = source.parent / "params" / source.stem / f"{profile}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"{source.name} has no {profile!r} parameter file ({path}); available: {available}")
    return path


def shared_params_file(source: str | Path, profile: str) -> Path:
    """``notebooks/params/shared/<profile>.yaml``: the settings that must agree between chapters."""
    return Path(source).parent / "params" / SHARED / f"{profile}.yaml"


def parameter_names(source: str | Path) -> list[str]:
    """The names the notebook's ``parameters`` cell assigns (read, never executed)."""
    import ast

    import jupytext

    for cell in jupytext.read(source).cells:
        if "parameters" in cell.metadata.get("tags", []):
            names = []
            for node in ast.parse(cell.source).body:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                    node, ast.AnnAssign) else []
                names += [t.id for t in targets if isinstance(t, ast.Name)]
            return names
    raise ValueError(f"{Path(source).name} has no cell tagged 'parameters'; papermill needs one")


def _read_mapping(path: Path) -> dict:
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of parameter names to values")
    return values


def load_params(source: str | Path, profile: str) -> dict:
    """The parameters of ``profile`` for ``source``: the shared settings its parameters cell
    declares, its own file, and ``package_source`` from ``_config.yml``."""
    own_file = params_file(source, profile)
    params = _read_mapping(own_file)
    shared_file = shared_params_file(source, profile)
    if shared_file.is_file():
        shared = _read_mapping(shared_file)
        repeated = sorted(set(shared) & set(params))
        if repeated:
            raise ValueError(f"{own_file} sets {repeated}, which {shared_file} already sets for every chapter: "
                             "remove them from one of the two")
        declared = set(parameter_names(source))
        params = {name: value for name, value in shared.items() if name in declared} | params
    with open(repo_root(source) / "_config.yml") as handle:
        config = yaml.safe_load(handle)
    # The repository URL lives only in _config.yml; Colab installs the package from it.
    params.setdefault("package_source", f"git+{config['repository']['url']}")
    return params


def _results_read(source: Path, params: dict) -> list[Path]:
    """The saved result tables (``ntps.results``) a notebook reads: those of its ``results_profile``,
    when its source calls ``load_table``. Another chapter rewriting one of them makes it stale."""
    profile = params.get("results_profile")
    if profile is None or not any(call in source.read_text() for call in ("load_table(", "should_you_use_ntps(")):
        return []
    from .cache import cache_dir

    return sorted(cache_dir("results").glob(f"*.{profile}.json"))


def _input_hash(source: Path, params: dict) -> str:
    digest = hashlib.sha256()
    digest.update(source.read_bytes())
    digest.update(yaml.safe_dump(params, sort_keys=True).encode())
    for table in _results_read(source, params):
        digest.update(table.name.encode() + table.read_bytes())
    for module in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(module.read_bytes())
    return digest.hexdigest()


def execute(source: str | Path, profile: str = "cpu", output_dir: str | Path = "book/executed", *,
            kernel_name: str = "python3", timeout: int | None = None, force: bool = False,
            extra_parameters: dict | None = None) -> Path:
    """Execute one notebook source with a parameter profile; return the executed ``.ipynb``.

    The notebook runs with its own folder (``notebooks/``) as working directory.
    """
    import jupytext
    import nbformat
    import papermill

    source = Path(source).resolve()
    if not source.is_file():
        raise FileNotFoundError(f"notebook source {source} does not exist")
    params = load_params(source, profile) | (extra_parameters or {})
    output_dir = Path(output_dir)
    output = output_dir / f"{source.stem}.ipynb"
    failed = output_dir / f"{source.stem}.failed.ipynb"
    wanted = _input_hash(source, params)
    if not force and output.is_file():
        previous = nbformat.read(output, as_version=4)
        if previous.metadata.get("ntps", {}).get("input_hash") == wanted:
            return output

    notebook = jupytext.read(source)
    if not any("parameters" in cell.metadata.get("tags", []) for cell in notebook.cells):
        raise ValueError(f"{source.name} has no cell tagged 'parameters'; papermill needs one")
    notebook.metadata["kernelspec"] = {"name": kernel_name, "display_name": "Python 3", "language": "python"}
    _add_install_cell(notebook)
    with atomic_file(output) as tmp:
        tmp_ipynb = tmp.with_suffix(".ipynb")
        try:
            executed = papermill.execute_notebook(
                notebook, str(tmp_ipynb), parameters=params, kernel_name=kernel_name,
                cwd=str(source.parent), execution_timeout=timeout, progress_bar=False)
        except Exception:
            if tmp_ipynb.exists():
                os.replace(tmp_ipynb, failed)
            raise
        finally:
            tmp_ipynb.unlink(missing_ok=True)
        _fold_parameter_cells(executed)
        executed.metadata["ntps"] = {"input_hash": wanted, "profile": profile, "source": f"notebooks/{source.name}"}
        nbformat.write(executed, tmp)
    failed.unlink(missing_ok=True)
    return output


def _add_install_cell(notebook) -> None:
    import nbformat

    position = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell(COLAB_INSTALL_CELL, metadata={"tags": ["remove-cell"]})
    notebook.cells.insert(position + 1, cell)


def page_style(*, precision: int = 3, quiet_transformers: bool = False) -> None:
    """The look every chapter shares: seaborn's white grid, tables at ``precision`` decimals, no
    tqdm note about missing widgets, and (``quiet_transformers``) no weight-loading bars or
    advisory warnings from ``transformers`` in the page."""
    import warnings

    import pandas as pd
    import seaborn as sns

    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's note about widgets, not ours
    sns.set_theme(style="whitegrid", context="notebook")
    pd.set_option("display.precision", precision)
    if quiet_transformers:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()


def _fold_parameter_cells(notebook) -> None:
    """Fold the parameters cell and papermill's injected copy (Jupyter Book's ``hide-cell``): a
    page opens on its argument, and a reader who wants the settings clicks to see them."""
    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if ("parameters" in tags or "injected-parameters" in tags) and "hide-cell" not in tags:
            tags.append("hide-cell")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ntps.notebooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebook sources (default: the notebooks in _toc.yml)")
    parser.add_argument("--profile", default="cpu", choices=PROFILES)
    parser.add_argument("--out", default=None, help="output folder (default: book/executed in the checkout)")
    parser.add_argument("--force", action="store_true", help="run even when nothing changed")
    parser.add_argument("--timeout", type=int, default=None, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    sources = [Path(p) for p in args.notebooks] or book_notebooks()
    out = Path(args.out) if args.out else repo_root() / "book" / "executed"
    for source in sources:
        start = time.perf_counter()
        print(f"[ntps] running {source.name} ({args.profile}) ...", flush=True)
        try:
            execute(source, args.profile, out, force=args.force, timeout=args.timeout)
        except Exception as error:  # report which notebook failed, then fail the build
            print(f"[ntps] {source.name} FAILED: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            return 1
        print(f"[ntps] {source.name} done in {time.perf_counter() - start:.1f} s", flush=True)
    if not args.notebooks:
        write_verdict(out, args.profile)
    return 0


def write_verdict(output_dir: str | Path, profile: str) -> Path:
    """``<output_dir>/should_you_use_ntps.md``: the answer the introduction includes, computed from
    the results the chapters just saved (``ntps.experiments.should_you_use_ntps``)."""
    from .experiments import should_you_use_ntps

    path = Path(output_dir) / "should_you_use_ntps.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_text(should_you_use_ntps(profile=profile) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
