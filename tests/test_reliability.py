"""What the tools refuse, and that they never delete what a user has (issue #16).

Every case goes through ``ntps.cli.main``, the entry point of the ``ntps`` command. For each
data-loss case the user's files are compared byte for byte before and after; for each error,
the exit status is 2 and stderr is one line that names the file, line or argument.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ntps.cache import atomic_dir
from ntps.cli import main, read_local_dataset
from ntps.extract import extract_moments as moments, weights_fingerprint
from ntps.moments import Moments, MomentsMismatchError, NTPSWarning

ROWS = [("a fine film", "pos"), ("a dull film", "neg"), ("wonderful", "pos"),
        ("awful acting and a plot that goes nowhere", "neg"), ("I liked it a lot", "pos"), ("no", "neg"),
        ("great fun for everyone", "pos"), ("boring and long", "neg"), ("superb", "pos"), ("weak", "neg")]
TINY = ["--model", "tiny-llama"]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture()
def toy(tmp_path):
    return write_jsonl(tmp_path / "toy.jsonl", [{"text": t, "label": y} for t, y in ROWS])


def snapshot(path: Path) -> dict:
    """Every file under ``path`` (or ``path`` itself) with its bytes, to compare before and after."""
    path = Path(path)
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else None for p in sorted(path.rglob("*"))}


def run(capsys, *argv):
    """``(status, stdout, stderr lines)`` of ``ntps argv``."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def refused(capsys, *argv, match: str | None = None) -> str:
    """Run a command that must fail: status 2, one line on stderr, no traceback. Returns the line."""
    status, _, err = run(capsys, *argv)
    errors = [line for line in err if ": error: " in line]
    assert status == 2, err
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    if match is not None:
        assert match in errors[0], errors[0]
    return errors[0]


def extract(capsys, toy, out, *extra):
    status, _, err = run(capsys, "extract", *TINY, "--dataset", toy, "--batch-size", 2, "--out", out, *extra)
    assert status == 0, err
    return err


# -- 1. nothing a user has is ever deleted ------------------------------------------------------
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_extract_never_replaces_a_folder_of_notes_or_a_file(toy, tmp_path, capsys, overwrite):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "ideas.md").write_text("my notes\n")
    (notes / "sub").mkdir()
    (notes / "sub" / "data.bin").write_bytes(os.urandom(64))
    table = tmp_path / "r.csv"
    table.write_text("x,y\n1,2\n")
    before = snapshot(notes), snapshot(table)
    line = refused(capsys, "extract", *TINY, "--dataset", toy, "--out", notes, *overwrite, match=f"--out {notes}")
    assert "did not write" in line and "choose a new or empty folder" in line
    line = refused(capsys, "extract", *TINY, "--dataset", toy, "--out", table, *overwrite, match=f"--out {table}")
    assert "existing file" in line
    assert (snapshot(notes), snapshot(table)) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "r.csv", "toy.jsonl"]  # nothing left behind


def test_overwrite_replaces_only_a_folder_of_moments(toy, tmp_path, capsys):
    out = tmp_path / "m"
    extract(capsys, toy, out)
    first = snapshot(out)
    refused(capsys, "extract", *TINY, "--dataset", toy, "--out", out, match="pass --overwrite")
    assert snapshot(out) == first
    extract(capsys, toy, out, "--overwrite", "--seed", "1")  # a folder of moments: replaced
    assert Moments.load(out).metadata["seed"] == 1
    (out / "README.txt").write_text("what these moments are\n")
    kept = snapshot(out)
    line = refused(capsys, "extract", *TINY, "--dataset", toy, "--out", out, "--overwrite")
    assert "README.txt" in line and "move those files away" in line
    assert snapshot(out) == kept


def test_extract_never_writes_onto_its_own_input(toy, tmp_path, capsys):
    before = snapshot(toy)
    refused(capsys, "extract", *TINY, "--dataset", toy, "--out", toy, "--overwrite", match="is the input")
    assert snapshot(toy) == before


@pytest.fixture()
def shards(toy, tmp_path, capsys):
    """Three shards of the toy split, and the same split in one pass."""
    for i in range(3):
        extract(capsys, toy, tmp_path / f"s{i}", "--shard", f"{i}/3")
    extract(capsys, toy, tmp_path / "whole")
    return [tmp_path / f"s{i}" for i in range(3)], tmp_path / "whole"


def test_merge_never_deletes_its_inputs_or_other_folders(shards, tmp_path, capsys):
    (s0, s1, s2), _ = shards
    data = tmp_path / "data"
    data.mkdir()
    (data / "s0").mkdir()
    for name in ("moments.json", "moments.safetensors"):
        (data / "s0" / name).write_bytes((s0 / name).read_bytes())
    before = snapshot(data), snapshot(s0)
    # the report's case: --out holds the shard being merged
    refused(capsys, "merge", "--out", data, data / "s0", match=f"--out {data} contains the input {data / 's0'}")
    refused(capsys, "merge", "--out", s0, s0, s1, "--overwrite", match=f"--out {s0} is the input {s0}")
    assert (snapshot(data), snapshot(s0)) == before

    out = tmp_path / "merged"
    assert run(capsys, "merge", "--out", out, s0, s1, s2)[0] == 0
    merged = snapshot(out)
    refused(capsys, "merge", "--out", out, s0, s1, s2, match="pass --overwrite")  # no --overwrite: kept
    assert snapshot(out) == merged
    assert run(capsys, "merge", "--out", out, s0, s1, s2, "--overwrite")[0] == 0
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("mine")
    refused(capsys, "merge", "--out", notes, s0, s1, s2, "--overwrite", match="did not write")
    assert (notes / "a.txt").read_text() == "mine"


def test_atomic_dir_never_replaces_a_file_nor_a_users_hidden_folder(tmp_path):
    target = tmp_path / "out"
    target.write_text("a file")
    with pytest.raises(FileExistsError, match="existing file"), atomic_dir(target) as tmp:
        (tmp / "x").write_text("new")
    assert target.read_text() == "a file"
    folder, hidden = tmp_path / "folder", tmp_path / ".folder.old"  # the old fixed name of the backup
    folder.mkdir()
    hidden.mkdir()
    (hidden / "keep").write_text("mine")
    with atomic_dir(folder) as tmp:
        (tmp / "x").write_text("new")
    assert (hidden / "keep").read_text() == "mine" and (folder / "x").read_text() == "new"


# -- one writer per output folder --------------------------------------------------------------
def test_a_live_writer_holds_the_folder_and_a_stale_lock_is_taken_over(toy, tmp_path, capsys):
    out = tmp_path / "m"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom ntps.cache import output_lock\n"
        f"with output_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        assert holder.stdout.readline().strip() == "held"
        line = refused(capsys, "extract", *TINY, "--dataset", toy, "--out", out)
        assert f"pid {holder.pid}" in line and f"{out}.lock" in line and not out.exists()
        refused(capsys, "merge", "--out", out, toy, match=f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    # The holder died without cleaning up: its lock file names a pid that is gone.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    Path(f"{out}.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "folder": str(out)}))
    err = extract(capsys, toy, out)
    assert any(f"took over the stale lock {out}.lock of pid {dead.pid}" in line for line in err), err
    assert not Path(f"{out}.lock").exists() and Moments.load(out).n_texts == len(ROWS)


def test_a_file_at_the_lock_path_is_not_ours_and_is_kept(toy, tmp_path, capsys):
    lock = tmp_path / "m.lock"
    lock.write_text("my shopping list\n")
    refused(capsys, "extract", *TINY, "--dataset", toy, "--out", tmp_path / "m", match="not an ntps lock file")
    assert lock.read_text() == "my shopping list\n"


def test_a_checkpoint_of_another_run_is_neither_resumed_nor_overwritten(toy, tmp_path, capsys, monkeypatch):
    import ntps.extract as extract_module

    out = tmp_path / "m"
    original = extract_module._Accumulator.add_batch
    calls = {"n": 0}

    def killed_at_the_third_batch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(extract_module._Accumulator, "add_batch", killed_at_the_third_batch)
    common = ["extract", *TINY, "--batch-size", 2, "--checkpoint-every", 1, "--out", out]
    status, _, err = run(capsys, *common, "--dataset", toy)
    assert status == 130 and "run the same command again to resume" in err[-1]
    monkeypatch.setattr(extract_module._Accumulator, "add_batch", original)
    partial = snapshot(tmp_path / "m.partial")
    assert partial
    # A second run with other texts into the same --out: refused, the first run's progress kept.
    other = write_jsonl(tmp_path / "other.jsonl", [{"text": t + " indeed", "label": y} for t, y in ROWS])
    line = refused(capsys, *common, "--dataset", other, match=f"checkpoint {out}.partial")
    assert "other texts" in line and "--overwrite" in line
    assert snapshot(tmp_path / "m.partial") == partial and not out.exists()
    # The first run, run again, resumes and equals a run that was never interrupted.
    assert run(capsys, *common, "--dataset", toy)[0] == 0
    extract(capsys, toy, tmp_path / "straight")
    resumed, straight = Moments.load(out), Moments.load(tmp_path / "straight")
    np.testing.assert_array_equal(resumed.sum_sh, straight.sum_sh)
    assert not (tmp_path / "m.partial").exists()


def test_a_checkpoint_folder_of_user_files_is_left_alone(tiny_llama, tmp_path):
    model, tokenizer = tiny_llama
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "thesis.tex").write_text("chapter 1")
    with pytest.raises(FileExistsError, match="did not write"):
        moments(model, tokenizer, [t for t, _ in ROWS], [int(y == "pos") for _, y in ROWS], checkpoint=folder,
                progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]


# -- 2. integrity ------------------------------------------------------------------------------
def test_a_changed_byte_in_the_sums_is_detected(toy, tmp_path, capsys):
    out = tmp_path / "m"
    extract(capsys, toy, out)
    assert Moments.load(out).verified is True
    data = bytearray((out / "moments.safetensors").read_bytes())
    data[-3] ^= 0x01  # one bit of one float64 of the sums
    (out / "moments.safetensors").write_bytes(bytes(data))
    line = refused(capsys, "score", "--moments", out, match=f"{out}/moments.safetensors does not match the SHA-256")
    assert "extract the moments again" in line
    refused(capsys, "merge", "--out", tmp_path / "x", out, match="does not match the SHA-256")


def test_edited_or_truncated_files_are_one_line_naming_the_file(toy, tmp_path, capsys):
    good = tmp_path / "good"
    extract(capsys, toy, good)

    def copy(name):
        folder = tmp_path / name
        folder.mkdir()
        for item in good.iterdir():
            (folder / item.name).write_bytes(item.read_bytes())
        return folder

    edited = copy("edited")  # the report's "edited metadata": a count changed by hand
    info = json.loads((edited / "moments.json").read_text())
    info["n_texts"] = 0
    (edited / "moments.json").write_text(json.dumps(info))
    refused(capsys, "score", "--moments", edited, match=f"{edited}/moments.json was edited")
    cut = copy("cut-json")
    (cut / "moments.json").write_text((good / "moments.json").read_text()[:120])
    line = refused(capsys, "score", "--moments", cut, match=f"{cut}/moments.json is not valid JSON")
    assert "truncated" in line and "extract the moments again" in line
    cut = copy("cut-sums")
    (cut / "moments.safetensors").write_bytes((good / "moments.safetensors").read_bytes()[:1000])
    refused(capsys, "score", "--moments", cut, match=f"{cut}/moments.safetensors")


def test_folders_saved_without_checksums_still_load_unverified(toy, tmp_path, capsys):
    out = tmp_path / "old"
    extract(capsys, toy, out)
    info = json.loads((out / "moments.json").read_text())
    del info["sha256"]  # as written by ntps at 08d1224
    (out / "moments.json").write_text(json.dumps(info))
    loaded = Moments.load(out)
    assert loaded.verified is False and loaded.n_texts == len(ROWS)
    status, printed, err = run(capsys, "score", "--moments", out)
    assert status == 0 and "layer" in printed
    assert any("saved without checksums" in line and "unverified" in line for line in err)
    # without a checksum, a truncated file is still one line naming it
    (out / "moments.safetensors").write_bytes((out / "moments.safetensors").read_bytes()[:900])
    refused(capsys, "score", "--moments", out, match=f"{out}/moments.safetensors cannot be read")
    # edited by hand into nonsense: a line naming the field, not "fp16 overflow"
    info["n_texts"] = -4
    (out / "moments.json").write_text(json.dumps(info))
    line = refused(capsys, "score", "--moments", out, match="n_texts must be a non-negative integer")
    assert "overflow" not in line


def test_weights_fingerprint_sees_one_changed_entry_anywhere(tiny_llama):
    model, _ = tiny_llama
    reference = weights_fingerprint(model)
    assert weights_fingerprint(model) == reference  # deterministic
    weight = model.model.layers[0].mlp.down_proj.weight  # 32 x 64 = 2048 entries, 1024 sampled
    positions = torch.linspace(0, weight.numel() - 1, 1024).round().long()
    unsampled = int(np.setdiff1d(np.arange(weight.numel()), positions.numpy())[7])
    for index in (int(positions[5]), unsampled):
        flat = weight.data.view(-1)
        old = flat[index].clone()
        flat[index] = torch.nextafter(old, torch.tensor(float("inf"), dtype=old.dtype))  # the smallest change
        try:
            assert weights_fingerprint(model) != reference, index
        finally:
            flat[index] = old
    assert weights_fingerprint(model) == reference
    with torch.no_grad():
        saved = model.model.norm.weight.clone()
        model.model.norm.weight.mul_(1.5)  # a whole tensor
        try:
            assert weights_fingerprint(model) != reference
        finally:
            model.model.norm.weight.copy_(saved)


def test_a_checkpoint_is_not_reused_after_the_weights_changed(tmp_path):
    from ntps.tiny import tiny_model

    model, tokenizer = tiny_model("llama")
    texts, labels = [t for t, _ in ROWS], [int(y == "pos") for _, y in ROWS]
    folder = tmp_path / "ckpt"
    before = moments(model, tokenizer, texts, labels, batch_size=2, checkpoint=folder, progress=False)
    assert (folder / "state.json").is_file()  # complete: a rerun would return it at once
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[3, 5] += 0.25
    fresh = moments(model, tokenizer, texts, labels, batch_size=2, progress=False)
    with pytest.warns(NTPSWarning, match="model weights"):
        again = moments(model, tokenizer, texts, labels, batch_size=2, checkpoint=folder, progress=False)
    np.testing.assert_array_equal(again.sum_ss, fresh.sum_ss)  # the new model's moments...
    assert not np.allclose(again.sum_ss[-1], before.sum_ss[-1])  # ...which differ from the old ones
    # The command line's setting: the checkpoint (now of the changed model) is kept, and the run refused.
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[3, 5] -= 0.25
    kept = snapshot(folder)
    with pytest.raises(FileExistsError, match="other texts, labels, settings, tokenizer or model weights"):
        moments(model, tokenizer, texts, labels, batch_size=2, checkpoint=folder, progress=False,
                replace_checkpoint=False)
    assert snapshot(folder) == kept


# -- merge: shard identity ---------------------------------------------------------------------
def test_merge_refuses_duplicates_mismatches_and_overlaps(shards, toy, tmp_path, capsys):
    (s0, s1, s2), whole = shards
    copy = tmp_path / "copy-of-s1"
    copy.mkdir()
    for item in s1.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    refused(capsys, "merge", "--out", tmp_path / "x", s1, s1, match=f"{s1} is given twice")
    refused(capsys, "merge", "--out", tmp_path / "x", s0, s1, copy, match=f"shard 1/3 is in both {s1} and {copy}")
    refused(capsys, "merge", "--out", tmp_path / "x", whole, s1, match=f"{whole} holds a whole split")
    refused(capsys, "merge", "--out", tmp_path / "x", whole, whole, match="given twice")
    for option, value, key in (("--batch-size", "4", "batch_size"), ("--seed", "7", "seed"),
                               ("--max-length", "6", "max_length"), ("--max-examples", "8", "max_examples")):
        odd = tmp_path / f"odd-{key}"
        status, _, err = run(capsys, "extract", *TINY, "--dataset", toy, "--batch-size", 2, "--out", odd,
                             "--shard", "1/3", option, value)
        assert status == 0, err
        refused(capsys, "merge", "--out", tmp_path / "x", s0, odd, s2, match=f"different {key}")
    fourths = tmp_path / "q1"
    extract(capsys, toy, fourths, "--shard", "1/4")
    refused(capsys, "merge", "--out", tmp_path / "x", s0, fourths, match="different numbers of parts [3, 4]")
    assert run(capsys, "merge", "--out", tmp_path / "s01", s0, s1)[0] == 0
    refused(capsys, "merge", "--out", tmp_path / "x", tmp_path / "s01", s1, match="shard 1/3 is in both")
    assert not (tmp_path / "x").exists()


def test_merge_refuses_shards_of_another_tokenizer(tiny_llama):
    from ntps.tiny import tiny_tokenizer

    model, tokenizer = tiny_llama
    texts, labels = [t for t, _ in ROWS], [int(y == "pos") for _, y in ROWS]
    first = moments(model, tokenizer, texts, labels, batch_size=2, shard=(0, 2), progress=False)
    other = moments(model, tiny_tokenizer(vocab_size=300), texts, labels, batch_size=2, shard=(1, 2), progress=False)
    with pytest.raises(MomentsMismatchError, match="different tokenizer_sha256"):
        first.merge(other)


def test_an_incomplete_set_of_shards_is_marked_partial_and_score_says_so(shards, tmp_path, capsys):
    (s0, s1, s2), whole = shards
    part = tmp_path / "part"
    status, _, err = run(capsys, "merge", "--out", part, s0, s2)
    assert status == 0 and any("warning" in line and "shard(s) 0, 2 of 3 only" in line for line in err), err
    assert Moments.load(part).metadata["shards"] == {"count": 3, "indices": [0, 2], "complete": False}
    assert Moments.load(part).is_partial
    status, _, err = run(capsys, "score", "--moments", part)
    assert status == 0 and any("shard(s) 0, 2 of 3 only" in line and "merge the missing shard(s) 1" in line
                               for line in err), err
    status, _, err = run(capsys, "score", "--moments", s1)  # a single shard is partial too
    assert any("shard(s) 1 of 3 only" in line for line in err)
    full = tmp_path / "full"
    assert run(capsys, "merge", "--out", full, part, s1)[0] == 0
    merged, one_pass = Moments.load(full), Moments.load(whole)
    assert not merged.is_partial and merged.metadata["shards"]["complete"]
    np.testing.assert_allclose(merged.sum_sh, one_pass.sum_sh, rtol=1e-12, atol=1e-12)
    status, _, err = run(capsys, "score", "--moments", full)
    assert status == 0 and not any("shard" in line for line in err)


# -- 3. degenerate inputs ----------------------------------------------------------------------
def test_a_single_class_is_refused(tmp_path, capsys, tiny_llama):
    one = write_jsonl(tmp_path / "one.jsonl", [{"text": t, "label": "pos"} for t, _ in ROWS])
    refused(capsys, "extract", *TINY, "--dataset", one, "--out", tmp_path / "x",
            match=f"{one}: every row has the label 'pos'")
    model, tokenizer = tiny_llama
    with pytest.raises(ValueError, match="at least two classes"):
        moments(model, tokenizer, ["one text", "another"], [0, 0], num_classes=2, progress=False)
    # moments of one class saved by someone else: score refuses instead of printing 1.0 everywhere
    d = model.config.hidden_size
    single = Moments(np.eye(d)[None], np.ones((1, d, 1)), np.eye(d)[None], np.eye(d)[None], layers=[0],
                     n_texts=50, n_pairs=200)
    single.save(tmp_path / "single")
    refused(capsys, "score", "--moments", tmp_path / "single", match="1 class: NTPS needs labels of at least two")


@pytest.mark.parametrize("value", ["-3", "0", "1"])
def test_max_length_below_two_is_an_argument_error(toy, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as stop:
        main(["extract", *TINY, "--dataset", str(toy), "--out", str(tmp_path / "x"), "--max-length", value])
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert stop.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("ntps extract: error: argument --max-length: must be at least 2") and value in err[0]
    assert not (tmp_path / "x").exists()


def test_no_pairs_and_bad_max_length_through_the_api(tiny_llama):
    model, tokenizer = tiny_llama
    assert all(len(ids) == 1 for ids in tokenizer(["", ""])["input_ids"])  # only the <s> the tokenizer adds
    with pytest.raises(ValueError, match="no text has two tokens"):
        moments(model, tokenizer, ["", ""], [0, 1], progress=False)
    for bad in (0, 1, -3, 2.5):
        with pytest.raises(ValueError, match="max_length must be an integer of at least 2"):
            moments(model, tokenizer, ["a text", "another"], [0, 1], max_length=bad, progress=False)


@pytest.mark.parametrize("content, where, what", [
    ('{"text": "fine", "label": "a"}\n\n{"text": "ok", "label": "b"}\n{"text": "bad, "label": "a"}\n',
     ", line 4:", "not valid JSON"),
    ('{"text": "fine", "label": "a"}\n{"text": null, "label": "b"}\n', ", line 2:", "the text is missing"),
    ('{"text": "fine", "label": "a"}\n{"text": 17, "label": "b"}\n', ", line 2:", "not a string but an int"),
    ('{"text": "fine", "label": "a"}\n{"text": "   ", "label": "b"}\n', ", line 2:", "the text is empty"),
    ('{"text": "fine", "label": "a"}\n{"text": "ok", "label": null}\n', ", line 2:", "the label is missing"),
    ('{"text": "fine", "label": "a"}\n{"label": "b"}\n', ", line 2:", "no 'text' field"),
    ('{"text": "fine", "label": "a"}\n["ok", "b"]\n', ", line 2:", "not an object"),
])
def test_bad_rows_of_a_jsonl_file_name_the_file_and_line(tmp_path, capsys, content, where, what):
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    line = refused(capsys, "extract", *TINY, "--dataset", path, "--out", tmp_path / "x", match=f"{path}{where}")
    assert what in line
    with pytest.raises(ValueError, match=what.replace("(", r"\(")):
        read_local_dataset(path)


def test_bad_rows_of_a_csv_file_name_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "data.csv"
    path.write_text('text,label\n"a fine film",pos\n"a dull film",neg\n"",pos\n')
    refused(capsys, "extract", *TINY, "--dataset", path, "--out", tmp_path / "x", match=f"{path}, row 4: the text is empty")
    path.write_text("words,label\nfine,pos\n")
    refused(capsys, "extract", *TINY, "--dataset", path, "--out", tmp_path / "x", match="no column 'text'")


def test_few_texts_and_n_at_most_d_are_warnings_that_name_the_numbers(toy, tmp_path, capsys):
    out = tmp_path / "m"
    err = extract(capsys, toy, out)
    warned = [line for line in err if ": warning: " in line]
    assert any("N = 10 texts <= d = 32" in line for line in warned), err
    assert not any("fewer than" in line for line in warned)  # 5 texts in each class
    status, _, err = run(capsys, "score", "--moments", out)
    assert status == 0 and any("warning: N = 10 texts <= d = 32" in line for line in err)
    # The warning is warranted: with N <= d, NTPS is 1 at every k >= N (here for every layer).
    from ntps.score import ntps_grid

    data = Moments.load(out)
    for layer in data.layers:
        grid = ntps_grid(**data.layer(layer))
        np.testing.assert_allclose(grid[data.n_texts - 1:], 1.0, atol=1e-8)
    few = write_jsonl(tmp_path / "few.jsonl", [{"text": t, "label": y} for t, y in ROWS[:7]])
    err = extract(capsys, few, tmp_path / "few")
    assert any("fewer than 5 texts in 2 class(es) (class 0: 3, class 1: 4)" in line for line in err), err


def test_a_text_longer_than_the_models_positions_asks_for_max_length(tmp_path, capsys):
    long = write_jsonl(tmp_path / "long.jsonl", [{"text": " ".join(["word"] * 300), "label": "a"},
                                                 {"text": "short", "label": "b"}])
    line = refused(capsys, "extract", "--model", "tiny-gpt2", "--dataset", long, "--out", tmp_path / "x",
                   match="the model has 128 positions (max_position_embeddings)")
    assert "--max-length 128" in line and "index out of range" not in line
    status, _, err = run(capsys, "extract", "--model", "tiny-gpt2", "--dataset", long, "--out", tmp_path / "x",
                         "--max-length", "128")
    assert status == 0, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_one_line(toy, tmp_path, capsys):
    refused(capsys, "extract", *TINY, "--dataset", toy, "--out", tmp_path / "x", "--device", "cuda",
            match="--device cuda: torch finds no CUDA GPU")
    refused(capsys, "extract", *TINY, "--dataset", toy, "--out", tmp_path / "x", "--device", "gpu",
            match="--device 'gpu' is not a device")


def test_a_truncated_model_file_is_one_line_naming_the_model(tmp_path, capsys, toy):
    from ntps.tiny import tiny_model

    model, tokenizer = tiny_model("llama")
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4000])
    refused(capsys, "extract", "--model", folder, "--dataset", toy, "--out", tmp_path / "x",
            match=f"the weights of {folder} cannot be read")


def test_complex_arrays_are_a_type_error_naming_the_argument(tiny_llama):
    from ntps import peers
    from ntps.score import ntps_score

    d = 4
    with pytest.raises(TypeError, match="sum_ss is complex"):
        Moments(np.eye(d)[None], np.ones((1, d, 2)), np.eye(d)[None] * (1 + 1e-3j), np.eye(d)[None], layers=[0],
                n_texts=10, n_pairs=10)
    with pytest.raises(TypeError, match="c1 is complex"):
        ntps_score(np.eye(d), np.ones((d, 2)), np.eye(d), torch.eye(d, dtype=torch.complex64), k_v=1)
    with pytest.raises(TypeError, match="features is complex"):
        peers.logme(np.ones((6, 3)) + 1j, [0, 1, 0, 1, 0, 1])


def test_score_never_overwrites_a_csv_it_did_not_write(toy, tmp_path, capsys):
    out = tmp_path / "m"
    extract(capsys, toy, out)
    mine = tmp_path / "results.csv"
    mine.write_text("experiment,accuracy\nA,0.9\n")
    refused(capsys, "score", "--moments", out, "--csv", mine, match=f"--csv {mine} exists and is not a grid")
    assert mine.read_text() == "experiment,accuracy\nA,0.9\n"
    grid = tmp_path / "grid.csv"
    for _ in range(2):  # a grid that ntps wrote is rewritten
        assert run(capsys, "score", "--moments", out, "--csv", grid)[0] == 0
    assert grid.read_text().startswith("layer,k=1,")


# -- 4. the hub probe has a total time limit ---------------------------------------------------
class _Server:
    """A TCP server on 127.0.0.1 that accepts connections and either never answers or answers
    every request with one HTTP status line."""

    def __init__(self, answer: bytes | None):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.answer, self.connections = answer, []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections.append(connection)
            if self.answer is not None:
                connection.recv(1024)
                connection.sendall(self.answer)

    def close(self):
        self.socket.close()
        for connection in self.connections:
            connection.close()


def test_a_hub_that_accepts_and_never_answers_is_unreachable_within_the_limit(monkeypatch, toy, tmp_path, capsys):
    from ntps import models

    silent = _Server(answer=None)
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.port}")
        start = time.perf_counter()
        assert models.hub_reachable(timeout=1.0) is False
        assert time.perf_counter() - start < 2.5
        assert silent.connections  # the connection was accepted: only the answer never came
        start = time.perf_counter()
        with pytest.raises(models.ModelNotFoundError, match="no answer from 127.0.0.1"):
            models.load_model("org/not-cached-here", hub_timeout=1.0)
        assert time.perf_counter() - start < 10
        line = refused(capsys, "extract", "--model", "org/not-cached-here", "--dataset", toy, "--out", tmp_path / "x",
                       match="the hub cannot be reached (no answer from 127.0.0.1")
        assert "smollm2-135m" in line
    finally:
        silent.close()
    talking = _Server(answer=b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{talking.port}")
        assert models.hub_reachable(timeout=2.0) is True  # the probe can say yes
    finally:
        talking.close()


# -- every error is one line; --debug shows the traceback ------------------------------------
def test_debug_shows_the_traceback(toy, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("x")
    with pytest.raises(FileExistsError, match="did not write"):
        main(["--debug", "extract", *TINY, "--dataset", str(toy), "--out", str(notes)])
    with pytest.raises(FileExistsError, match="did not write"):
        main(["extract", *TINY, "--dataset", str(toy), "--out", str(notes), "--debug"])
    assert (notes / "a.txt").read_text() == "x"


def test_the_command_itself_prints_one_line_and_exits_2(tmp_path):
    # The installed entry point, as a user runs it: a separate process, real stderr.
    table = tmp_path / "r.csv"
    table.write_text("x,y\n")
    result = subprocess.run([sys.executable, "-m", "ntps.cli", "merge", "--out", str(table), str(tmp_path / "none")],
                            capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        (f"ntps merge: error: --out {table} is an existing file; ntps never replaces it: give the name of a new folder "
         "for the moments")]
    assert table.read_text() == "x,y\n"


def test_moments_save_through_the_api_never_replaces_other_files(tmp_path):
    data = Moments(np.eye(3)[None], np.ones((1, 3, 2)), np.eye(3)[None], np.eye(3)[None], layers=[0], n_texts=4,
                   n_pairs=8)
    project = tmp_path / "project"
    project.mkdir()
    (project / "paper.tex").write_text("draft")
    with pytest.raises(FileExistsError, match="not moments"):
        data.save(project)
    assert snapshot(project) == {"paper.tex": b"draft"}
    data.save(tmp_path / "m")
    data.save(tmp_path / "m")  # over moments: fine
    assert Moments.load(tmp_path / "m").verified is True


def test_fingerprint_positions_stay_inside_large_tensors():
    # a float32 linspace put the last position of SmolLM2's 49152 x 576 embedding one past its end
    from ntps.extract import _sample_positions

    for n in (1, 2, 1023, 1024, 1025, 49152 * 576, 2**24 + 1, 151936 * 896):
        positions = _sample_positions(n, 1024).tolist()
        assert len(positions) == min(n, 1024) and positions[0] == 0 and positions[-1] == n - 1
        assert positions == sorted(set(positions))  # distinct, increasing
        step = (n - 1) / max(len(positions) - 1, 1)
        assert all(abs(p - round(i * step)) <= 1 for i, p in enumerate(positions))  # evenly spaced
