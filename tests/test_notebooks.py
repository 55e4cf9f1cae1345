"""Every notebook runs through papermill with its smoke parameters, as `make book` runs it."""

from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

from ntps import notebooks
from ntps.bookcheck import unsupported_numbers
from ntps.notebooks import params_file

ROOT = notebooks.repo_root(Path(__file__).parent)
SOURCES = notebooks.notebook_sources(ROOT)


def test_there_are_notebooks():
    assert [p.name for p in SOURCES][:1] == ["00_quickstart.py"]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_parameter_files_and_parameters_cell(source):
    for profile in notebooks.PROFILES:
        params = notebooks.load_params(source, profile)
        assert params["package_source"].startswith("git+https://")
    tagged = [c for c in jupytext.read(source).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    names_in_cell = {line.split("=")[0].strip() for line in tagged[0].source.splitlines() if "=" in line}
    for profile in notebooks.PROFILES:  # a parameter file may only set parameters the notebook has
        assert set(notebooks.load_params(source, profile)) <= names_in_cell


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_smoke_run(source, tmp_path):
    output = notebooks.execute(source, "smoke", tmp_path)
    executed = nbformat.read(output, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and all(f"{name} = " in injected[0].source for name in notebooks.load_params(source, "smoke"))
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    # every figure quoted in the chapter's prose is computed (or set) by the chapter itself
    assert unsupported_numbers(output) == []
    assert any("image/png" in o.get("data", {}) for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    # Unchanged inputs: the executed copy is reused, not run again.
    stamp = output.stat().st_mtime_ns
    assert notebooks.execute(source, "smoke", tmp_path) == output
    assert output.stat().st_mtime_ns == stamp


def _toy_repo(tmp_path, code):
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://example.org/toy\n")
    (tmp_path / "notebooks" / "params" / "01_toy").mkdir(parents=True)
    (tmp_path / "notebooks" / "params" / "01_toy" / "smoke.yaml").write_text("value: 2\n")
    source = tmp_path / "notebooks" / "01_toy.py"
    source.write_text('# %% tags=["parameters"]\nvalue = 1\npackage_source = None\n\n# %%\n' + code + "\n")
    return source


def test_a_failing_notebook_raises_and_leaves_no_output(tmp_path):
    source = _toy_repo(tmp_path, "assert value == 1, 'parameter was injected'")
    out = tmp_path / "out"
    with pytest.raises(Exception, match="parameter was injected"):
        notebooks.execute(source, "smoke", out)
    assert not (out / "01_toy.ipynb").exists()
    assert (out / "01_toy.failed.ipynb").exists()
    assert sorted(p.name for p in out.iterdir()) == ["01_toy.failed.ipynb"]


def test_missing_profile_and_missing_parameters_cell(tmp_path):
    source = _toy_repo(tmp_path, "print(value)")
    with pytest.raises(FileNotFoundError, match="no 'cpu' parameter file.*available: \\['smoke'\\]"):
        notebooks.execute(source, "cpu", tmp_path / "out")
    source.write_text("# %%\nprint(1)\n")
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        notebooks.execute(source, "smoke", tmp_path / "out")


def test_a_notebook_reading_saved_results_reruns_when_they_change(tmp_path, monkeypatch):
    monkeypatch.setenv("NTPS_CACHE", str(tmp_path / "cache"))
    from ntps import results

    results.save_table("toy", [{"x": 1}], profile="smoke")
    (tmp_path / "reader").mkdir()
    reader = _toy_repo(tmp_path / "reader", "from ntps.results import load_table\nprint(load_table('toy', profile='smoke'))")
    (reader.parent / "params" / "01_toy" / "smoke.yaml").write_text("value: 2\nresults_profile: smoke\n")
    reader.write_text(reader.read_text().replace("value = 1\n", "value = 1\nresults_profile = 'cpu'\n"))
    out = tmp_path / "out"
    first = notebooks.execute(reader, "smoke", out)
    stamp = first.stat().st_mtime_ns
    assert notebooks.execute(reader, "smoke", out).stat().st_mtime_ns == stamp  # nothing changed: reused
    results.save_table("other", [{"y": 2}], profile="cpu")  # another profile's table: still reused
    assert notebooks.execute(reader, "smoke", out).stat().st_mtime_ns == stamp
    results.save_table("toy", [{"x": 3}], profile="smoke")
    rerun = nbformat.read(notebooks.execute(reader, "smoke", out), as_version=4)
    assert "'x': 3" in "".join(o.get("text", "") for c in rerun.cells if c.cell_type == "code" for o in c.outputs)


def test_shared_settings_reach_every_chapter_that_declares_them():
    from ntps.notebooks import load_params, notebook_sources, parameter_names, shared_params_file

    sources = {s.stem: s for s in notebook_sources()}
    for profile in ("smoke", "cpu", "colab-paper"):
        shared = yaml.safe_load(shared_params_file(sources["03_correlation"], profile).read_text())
        # the chapters that reuse one another's forward passes see the same settings
        seen = {name: load_params(sources[name], profile) for name in ("03_correlation", "04_lora", "05_paper")}
        for key in ("model_name", "max_length", "max_examples_train", "max_examples_test", "dtype", "data_root"):
            values = {name: params[key] for name, params in seen.items() if key in parameter_names(sources[name])}
            assert values and all(v == shared[key] for v in values.values()), (profile, key, values)
        for name, source in sources.items():
            own = yaml.safe_load(params_file(source, profile).read_text()) or {}
            assert not set(own) & set(shared), f"{name}/{profile}.yaml repeats a shared setting"
            # only what the notebook declares is injected: papermill would otherwise warn and add names
            assert set(load_params(source, profile)) - {"package_source"} <= set(parameter_names(source))


def test_a_repeated_shared_setting_is_refused(tmp_path):
    from ntps.notebooks import load_params

    (tmp_path / "_config.yml").write_text("repository:\n  url: https://example.org/x\n")
    notebooks = tmp_path / "notebooks"
    (notebooks / "params" / "shared").mkdir(parents=True)
    (notebooks / "params" / "01_x").mkdir()
    source = notebooks / "01_x.py"
    source.write_text('# %% tags=["parameters"]\nmax_length = 8\nother = 1\n')
    (notebooks / "params" / "shared" / "cpu.yaml").write_text("max_length: 64\nmodel_name: m\n")
    (notebooks / "params" / "01_x" / "cpu.yaml").write_text("other: 2\n")
    assert load_params(source, "cpu") == {"max_length": 64, "other": 2, "package_source": "git+https://example.org/x"}
    (notebooks / "params" / "01_x" / "cpu.yaml").write_text("other: 2\nmax_length: 32\n")
    with pytest.raises(ValueError, match=r"sets \['max_length'\], which .*shared/cpu.yaml already sets"):
        load_params(source, "cpu")
