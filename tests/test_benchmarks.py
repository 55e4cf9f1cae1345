"""The FLOP counts that `benchmarks/extract.py` prints (and the book quotes), against PyTorch's
own count of the matrix products each contender runs."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForCausalLM, LlamaConfig

from ntps.extract import extract_moments as moments


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).parents[1] / "benchmarks" / "extract.py"
    spec = importlib.util.spec_from_file_location("benchmark_extract", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("precision, dtype", [("float32", torch.float32), ("float64", torch.float32),
                                              ("split", torch.bfloat16), ("split", torch.float32),
                                              ("tf32x3", torch.float32)])
def test_matmul_flops_match_pytorchs_count(bench, precision, dtype):
    config = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=300)
    torch.manual_seed(0)
    # a bf16 model's states need no split of their own (as on a GPU); a float32 model's do
    model = AutoModelForCausalLM.from_config(config).to(dtype).eval()
    backbone = bench._backbone(model)
    tokenizer = bench.number_tokenizer(300)
    texts = bench.random_texts(5, 3, 20, 300) + ["7"]  # and a one-token text, which has no pair
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    predicted = bench.matmul_flops(config, lengths, precision, dtype)
    # One text per pass: no padding, so every counted product belongs to real tokens. PyTorch's
    # counter does not see the CPU attention kernel, so the forward is compared without it.
    forward = sum(counted(lambda t=t: backbone(**tokenizer([t], return_tensors="pt"), output_hidden_states=True))
                  for t in texts)
    attention = config.num_hidden_layers * 4 * config.hidden_size * sum(T * (T + 1) / 2 for T in lengths)
    assert forward == pytest.approx(predicted["forward"] - attention, rel=1e-12)
    with_moments = counted(lambda: moments(model, tokenizer, texts, np.arange(len(texts)) % 2, batch_size=1,
                                           precision=precision, progress=False))
    # Per text and hidden state, moments also forms x x^T (2 d^2) and x y^T (2 d C), and its C1 product
    # has one row fewer than its C0 product (one row of C1's product: per-token FLOPs minus C0's).
    d, states, classes = config.hidden_size, config.num_hidden_layers + 1, 2
    gram_per_row = 2 * d * d if precision in ("float32", "float64") else 4 * d * d
    cross_per_row = bench.moments_flops_per_token(d, precision, dtype) - gram_per_row
    per_text_state = 2 * d * d + 2 * d * classes - cross_per_row
    assert with_moments - forward == pytest.approx(predicted["moments"] + states * len(texts) * per_text_state,
                                                   rel=1e-12)
    released = counted(lambda: bench.released_pass(backbone, bench.padded_batches(tokenizer, texts, 1,
                                                                                  torch.device("cpu"))))
    assert released - forward == pytest.approx(predicted["released"], rel=1e-12)


# -- benchmarks/bf16_cpu.py: its arguments and a tiny run (what it prints, not how fast) -----------
@pytest.fixture(scope="module")
def bf16_bench():
    path = Path(__file__).parents[1] / "benchmarks" / "bf16_cpu.py"
    spec = importlib.util.spec_from_file_location("benchmark_bf16_cpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OFFLINE_ROOT = str(Path(__file__).parent / "data" / "offline")
TINY_RUN = ["--model", "tiny-llama", "--texts", "6", "--train", "8", "--test", "4", "--rounds", "1",
            "--tasks", "rt_sentiment", "fortunes_topic", "--data-root", OFFLINE_ROOT]


def test_bf16_benchmark_arguments(bf16_bench):
    args = bf16_bench.parse_args([])
    assert (args.model, args.tasks, args.agreement_max_length) == ("smollm2-135m", list(bf16_bench.TASKS), 32)
    assert args.threads is None and args.rounds == 2
    assert bf16_bench.parse_args(["--threads", "1", "--train", "160", "--test", "80"]).train == 160
    for bad in (["--threads", "0"], ["--train", "0"], ["--rounds", "0"]):
        with pytest.raises(SystemExit):
            bf16_bench.parse_args(bad)


def test_bf16_benchmark_tiny_run(bf16_bench, capsys):
    threads = torch.get_num_threads()
    try:
        results = bf16_bench.main(TINY_RUN + ["--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "CPU capability (torch.backends.cpu.get_cpu_capability)" in printed
    assert "native bf16 products (ntps.models.cpu_supports_bf16)" in printed
    assert "bare: bfloat16 / float32 throughput" in printed and "moments: bfloat16 / float32 throughput" in printed
    assert set(results["throughput"]["ratios"]) == {"bare", "moments"}
    assert all(r > 0 for r in results["throughput"]["ratios"].values())
    for task, row in results["agreement"].items():
        assert row["k_max"] == 8 - 1  # k < min(N, d): N = 8 texts, d = 32
        assert -1 <= row["ntps_spearman"] <= 1 and 0 <= row["ntps_max_diff"] < 0.1
        assert f"== {task}: 8 train / 4 test texts" in printed


def test_bf16_benchmark_finds_no_difference_between_equal_models(bf16_bench, monkeypatch, capsys):
    """The comparison itself: two float32 copies of one model agree exactly, in every figure."""
    from ntps.models import load_model

    def two_float32_copies(name):
        model, tokenizer = load_model(name)
        return {"float32": model, "bfloat16": load_model(name)[0]}, tokenizer

    monkeypatch.setattr(bf16_bench, "load_models", two_float32_copies)
    threads = torch.get_num_threads()
    try:
        results = bf16_bench.main(TINY_RUN + ["--threads", "1", "--skip-throughput"])
    finally:
        torch.set_num_threads(threads)
    assert "throughput" not in results
    for row in results["agreement"].values():
        assert row["ntps_max_diff"] == 0 and row["probe_max_diff"] == 0 and row["ntps_spearman"] == pytest.approx(1)
    assert "largest |difference| 0.0000" in capsys.readouterr().out


def test_n_above_d_run_reads_back_as_the_chapters_tables(tmp_path, monkeypatch):
    """The committed-run script on the tiny model and the stand-in tasks: what it writes is what
    `experiments.committed_run` reads, and each row agrees with the package's own tables."""
    from ntps import experiments, probes

    monkeypatch.setenv("NTPS_CACHE", str(tmp_path / "cache"))
    path = Path(__file__).parents[1] / "benchmarks" / "n_above_d.py"
    spec = importlib.util.spec_from_file_location("n_above_d", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    root = Path(__file__).parent / "data" / "offline"
    out = tmp_path / "run"
    assert script.main(["--model", "tiny-llama", "--tasks", "rt_sentiment", "fortunes_topic", "--train", "8",
                        "--test", "4", "--max-length", "16", "--depth", "2", "--layer-stride", "1", "--n-k", "3",
                        "--threads", "1", "--data-root", str(root), "--out", str(out)]) == 0
    ntps_rows, probe_rows, baselines = experiments.committed_run(out)
    assert sorted(probe_rows.task.unique()) == ["fortunes_topic", "rt_sentiment"]
    assert sorted(probe_rows.layer.unique()) == [0, 1, 2]
    # the majority share, against the training labels it came from
    from ntps import data

    labels = data.load("fortunes_topic", "train", max_examples=8, root=root).labels
    share = baselines.loc[baselines.task == "fortunes_topic", "majority_share"]
    assert np.allclose(share, probes.majority_accuracy(labels))
    # NTPS against its null, as the score module defines them
    assert np.allclose(ntps_rows["null"], np.minimum(ntps_rows["k"], ntps_rows["p"]) / ntps_rows["p"], atol=1e-5)
    # a second run finds every task there and rewrites only the combined table
    stamp = (out / "rt_sentiment.csv").stat().st_mtime_ns
    assert script.main(["--model", "tiny-llama", "--tasks", "rt_sentiment", "--train", "8", "--test", "4",
                        "--max-length", "16", "--depth", "2", "--layer-stride", "1", "--n-k", "3", "--threads", "1",
                        "--data-root", str(root), "--out", str(out)]) == 0
    assert (out / "rt_sentiment.csv").stat().st_mtime_ns == stamp
