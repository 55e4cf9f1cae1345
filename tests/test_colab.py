"""A chapter run the way Colab runs it: the package built as a wheel, a fresh environment where
`ntps` is not importable, the book's install cell active (a stand-in `google.colab` is loaded at
kernel start, as Colab's kernel loads the real one), an empty cache, to the end.

The fresh environment borrows the test environment's other packages (torch, transformers,
ipykernel, ...) through a path file, so nothing is downloaded: pip is told not to reach an index,
and the test environment's own `ntps` (an editable install) is left out of what is borrowed.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import nbformat
import pytest

import ntps
from ntps import notebooks

ROOT = notebooks.repo_root(Path(__file__).parent)
KERNEL = "ntps-colab-stand-in"

pytestmark = pytest.mark.slow


def _build_wheel(out: Path) -> Path:
    """The package's wheel, built from a copy of the sources (setuptools writes build/ and
    *.egg-info beside the sources it builds, and the checkout is not ours to write into)."""
    source = out / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "ntps", source / "ntps", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--disable-pip-version-check", "-q", str(source), "-w", str(out / "dist")],
                   check=True, capture_output=True, text=True)
    (wheel,) = (out / "dist").glob("ntps-*.whl")
    return wheel


def _fresh_environment(folder: Path) -> tuple[Path, Path]:
    """A virtual environment whose site-packages borrows this one's packages, except ntps:
    returns (its python, its site-packages)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    borrowed = folder / "borrowed"
    borrowed.mkdir()
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        # ntps itself (its editable finder and metadata) stays out; .pth files are not read from a
        # path entry anyway, only from site-packages
        if entry.name.lower().startswith(("ntps", "__editable__")) or entry.suffix == ".pth":
            continue
        (borrowed / entry.name).symlink_to(entry)
    (site / "borrowed_packages.pth").write_text(f"{borrowed}\n")
    return python, site


def _colab_kernel(jupyter_path: Path, python: Path, ipython_dir: Path) -> None:
    """A kernel for ``python`` that loads a stand-in google.colab before the first cell, as Colab's does."""
    stand_in = ipython_dir.parent / "stand_in"
    (stand_in / "google" / "colab").mkdir(parents=True)  # google stays a namespace package
    (stand_in / "google" / "colab" / "__init__.py").write_text('"""A stand-in for Colab\'s module."""\n')
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text(f"import sys\nsys.path.append({str(stand_in)!r})\nimport google.colab\n")
    spec = {"argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Colab stand-in", "language": "python",
            # nothing of the test process's own package may leak in, and pip may not reach an index
            "env": {"PYTHONPATH": "", "PYTHONNOUSERSITE": "1", "IPYTHONDIR": str(ipython_dir),
                    "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}}
    kernel_dir = jupyter_path / "kernels" / KERNEL
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps(spec))


def test_a_chapter_runs_on_colab_from_a_wheel_and_an_empty_cache(tmp_path, monkeypatch):
    start = time.perf_counter()
    wheel = _build_wheel(tmp_path / "wheel")
    members = zipfile.ZipFile(wheel).namelist()
    assert "ntps/data/__init__.py" in members and "ntps/data/_offline.py" in members
    assert {f"ntps/paper_data/{p.name}" for p in (ROOT / "ntps" / "paper_data").glob("*.csv")} <= set(members)

    python, site = _fresh_environment(tmp_path / "venv")
    clean_env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "NTPS_NO_FETCH")}
    before = subprocess.run([str(python), "-c", "import ntps"], cwd=ROOT / "notebooks", env=clean_env,
                            capture_output=True, text=True)
    assert before.returncode != 0 and "No module named 'ntps'" in before.stderr, before.stderr
    imports = subprocess.run([str(python), "-c", "import torch, transformers, ipykernel, pip"], env=clean_env,
                             capture_output=True, text=True)
    assert imports.returncode == 0, imports.stderr

    _colab_kernel(tmp_path / "jupyter", python, tmp_path / "ipython")
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("NTPS_CACHE", str(cache))
    monkeypatch.delenv("NTPS_NO_FETCH", raising=False)
    assert list(cache.iterdir()) == []

    output = notebooks.execute(ROOT / "notebooks" / "00_quickstart.py", "smoke", tmp_path / "out",
                               kernel_name=KERNEL, extra_parameters={"package_source": str(wheel)}, force=True,
                               timeout=600)
    executed = nbformat.read(output, as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert [o for o in outputs if o.output_type == "error"] == []
    # the install cell ran, and the kernel imported the wheel's ntps from the fresh environment
    install = next(c for c in executed.cells if c.source == notebooks.COLAB_INSTALL_CELL)
    printed = "".join(o.get("text", "") for o in install.outputs if o.output_type == "stream")
    installed = Path(printed.rsplit(" into ", 1)[-1].strip())
    assert printed.startswith(f"installed ntps {ntps.__version__} from {wheel} into "), printed
    assert installed.parent == site / "ntps" and installed.name == "__init__.py", printed
    (record,) = site.glob("ntps-*.dist-info/direct_url.json")
    assert json.loads(record.read_text())["url"] == wheel.as_uri()  # pip installed this very wheel
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the chapter's figures were drawn
    assert time.perf_counter() - start < 240
