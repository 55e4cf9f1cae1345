"""LoRA fine-tuning on tiny random models: it learns, it touches only adapters and head, it resumes
exactly, and the merged model is the adapted one."""

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ntps import lora
from ntps.tiny import tiny_model

WORDS = "the film was a dull story with nothing to say she he it is we were they".split()


def word_task(n=48, seed=0):
    """Learnable: label 1 iff the text contains 'amazing'."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        words = list(rng.choice(WORDS, 6))
        if i % 2:
            words.insert(int(rng.integers(0, 7)), "amazing")
        texts.append(" ".join(words))
        labels.append(i % 2)
    return texts, np.array(labels)


TEXTS, LABELS = word_task()
FAST = dict(batch_size=8, lr=3e-2, rank=4, alpha=8, progress=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not suffer from a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def trained(llama):
    model, tokenizer = llama
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = lora.train_lora(model, tokenizer, TEXTS, LABELS, steps=40, seed=0, **FAST)
    return result, before


def test_no_old_name_is_left():
    """The old names are gone: evaluate (which shadowed the module ntps.evaluate) and merge (as
    Moments.merge and `ntps merge`)."""
    assert not hasattr(lora, "evaluate") and not hasattr(lora, "merge")
    assert all(hasattr(lora, name) for name in lora.__all__)
    root = Path(__file__).parents[1]
    old = re.compile(r"\blora\.(evaluate|merge)\b|from ntps\.lora import[^\n]*\b(evaluate|merge)\b")
    stale = [f"{path.relative_to(root)}:{n}" for folder in ("ntps", "benchmarks", "tests")
             for path in sorted((root / folder).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if old.search(line)]
    assert stale == []


# -- module detection -------------------------------------------------------------------------
def test_attention_modules_found_per_architecture(llama):
    assert lora.find_attention_modules(llama[0]) == ["q_proj", "k_proj", "v_proj"]
    gpt2, _ = tiny_model("gpt2")
    assert lora.find_attention_modules(gpt2) == ["c_attn"]  # GPT-2's Conv1D counts as linear
    assert lora.linear_module_names(gpt2)["c_attn"] == 2
    assert lora.find_attention_modules(llama[0], ["q_proj", "o_proj"]) == ["q_proj", "o_proj"]


def test_no_attention_modules_lists_what_was_found(llama):
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)

    with pytest.raises(lora.AttentionModulesNotFoundError, match=r"no attention projections.*fc1 \(x1\), fc2 \(x1\)"):
        lora.find_attention_modules(Odd())
    with pytest.raises(lora.AttentionModulesNotFoundError, match=r"no linear layer named \['qkv'\].*q_proj \(x2\)"):
        lora.find_attention_modules(llama[0], ["qkv"])
    with pytest.raises(lora.AttentionModulesNotFoundError, match="no linear layer named"):
        lora.train_lora(*llama, TEXTS, LABELS, steps=1, target_modules=["nope"], progress=False)


# -- learning -----------------------------------------------------------------------------------
def test_training_lowers_the_loss_on_a_learnable_task(trained):
    result, _ = trained
    losses = result.losses
    assert losses.shape == (40,) and np.all(np.isfinite(losses))
    assert losses[-8:].mean() < 0.3 * losses[:8].mean()
    assert losses[:4].mean() == pytest.approx(math.log(2), abs=0.25)  # a fresh head is near chance
    assert lora.lora_accuracy(result, TEXTS, LABELS) >= 0.9
    held_texts, held_labels = word_task(32, seed=1)
    assert lora.lora_accuracy(result, held_texts, held_labels) >= 0.7
    assert result.trainable_parameters > 0 and result.seconds > 0 and result.resumed_from == 0


def test_only_adapter_and_head_weights_change(trained, llama):
    result, before = trained
    model, _ = llama
    # the caller's model is untouched: training works on a copy
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    changed, unchanged = [], []
    for name, value in result.model.named_parameters():
        if "lora_" in name:
            changed.append(name)
            continue
        # peft wraps a layer as ...q_proj.base_layer.weight: map back to the original name
        original = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(value, before[original]), name
        unchanged.append(name)
    assert len(unchanged) == len(before) - int(model.config.tie_word_embeddings)
    lora_b = [p for n, p in result.model.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 3 * model.config.num_hidden_layers
    assert all(p.abs().max() > 0 for p in lora_b)  # lora_B starts at zero and has moved
    fresh_head = torch.nn.Linear(model.config.hidden_size, 2)
    assert not torch.equal(result.head.weight, fresh_head.weight)


def test_head_init_is_used(llama):
    model, tokenizer = llama
    d = model.config.hidden_size
    weight, bias = np.full((2, d), 0.25), np.array([1.0, -1.0])
    result = lora.train_lora(model, tokenizer, TEXTS, LABELS, steps=1, seed=0, **(FAST | {"lr": 1e-9}))
    assert not np.allclose(result.head.weight.detach().numpy(), 0.25)
    result = lora.train_lora(model, tokenizer, TEXTS, LABELS, steps=1, seed=0, head_init=(weight, bias),
                             **(FAST | {"lr": 1e-9}))
    assert np.allclose(result.head.weight.detach().numpy(), 0.25, atol=1e-6)
    with pytest.raises(ValueError, match="head_init must be"):
        lora.train_lora(model, tokenizer, TEXTS, LABELS, steps=1, head_init=(weight[:, :3], bias), progress=False)


def test_seeded_runs_are_reproducible_and_leave_the_global_rng_alone(llama):
    model, tokenizer = llama
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = lora.train_lora(model, tokenizer, TEXTS, LABELS, steps=4, seed=3, dropout=0.1, **FAST)
    assert torch.equal(torch.get_rng_state(), state)
    b = lora.train_lora(model, tokenizer, TEXTS, LABELS, steps=4, seed=3, dropout=0.1, **FAST)
    c = lora.train_lora(model, tokenizer, TEXTS, LABELS, steps=4, seed=4, dropout=0.1, **FAST)
    assert np.array_equal(a.losses, b.losses) and not np.array_equal(a.losses, c.losses)


# -- checkpoints ------------------------------------------------------------------------------
class Interrupt(Exception):
    pass


def _stop_at(step):
    def callback(done, loss):
        if done == step:
            raise Interrupt

    return callback


def _weights(result):
    named = dict(result.model.named_parameters()) | {f"head.{k}": v for k, v in result.head.named_parameters()}
    return {k: v.detach().clone() for k, v in named.items()}


@pytest.mark.parametrize("optimizer,arch", [("adamw", "llama"), ("adafactor", "gpt2")])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, optimizer, arch):
    model, tokenizer = tiny_model(arch)
    settings = dict(steps=7, seed=1, dropout=0.1, optimizer=optimizer, warmup_ratio=0.2, **FAST)
    whole = lora.train_lora(model, tokenizer, TEXTS, LABELS, **settings)
    folder = tmp_path / "run"
    with pytest.raises(Interrupt):  # killed at step 5; the last checkpoint is step 3
        lora.train_lora(model, tokenizer, TEXTS, LABELS, checkpoint=folder, checkpoint_every=3,
                        callback=_stop_at(5), **settings)
    assert json.loads((folder / "checkpoint.json").read_text())["step"] == 3
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "checkpoint.safetensors"]  # no pickle
    resumed = lora.train_lora(model, tokenizer, TEXTS, LABELS, checkpoint=folder, checkpoint_every=3, **settings)
    assert resumed.resumed_from == 3
    assert np.array_equal(resumed.losses, whole.losses)
    expected, got = _weights(whole), _weights(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=0, atol=1e-7), name
    # a finished checkpoint is a cache: same result at once, and the original training time
    again = lora.train_lora(model, tokenizer, TEXTS, LABELS, checkpoint=folder, **settings)
    assert again.resumed_from == 7 and again.seconds == pytest.approx(resumed.seconds)
    assert all(torch.equal(v, _weights(again)[k]) for k, v in got.items())
    assert lora.lora_accuracy(again, TEXTS, LABELS) == lora.lora_accuracy(whole, TEXTS, LABELS)


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path, llama):
    model, tokenizer = llama
    folder = tmp_path / "run"
    lora.train_lora(model, tokenizer, TEXTS, LABELS, steps=2, seed=0, checkpoint=folder, **FAST)
    with pytest.warns(UserWarning, match="different run"):
        other = lora.train_lora(model, tokenizer, TEXTS, LABELS, steps=2, seed=1, checkpoint=folder, **FAST)
    assert other.resumed_from == 0
    assert json.loads((folder / "checkpoint.json").read_text())["settings"]["seed"] == 1


# -- merging ------------------------------------------------------------------------------------
def test_merged_and_unmerged_models_give_the_same_outputs(trained, llama):
    result, before = trained
    merged = lora.merge_adapter(result)
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    tokenizer = llama[1]
    batch = tokenizer(TEXTS[:6], return_tensors="pt", padding=True)
    with torch.no_grad():
        adapted = result.model(**batch, output_hidden_states=True)
        plain = merged(**batch, output_hidden_states=True)
    assert torch.allclose(plain.logits, adapted.logits, atol=1e-5)
    for a, b in zip(adapted.hidden_states, plain.hidden_states):
        assert torch.allclose(a, b, atol=1e-5)
    # the adapters did change the model, and the result stays usable after merging
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged.state_dict()[q], before[q])
    assert lora.lora_accuracy(result, TEXTS, LABELS) >= 0.9


def test_merged_model_feeds_the_extraction_with_the_heads_features(trained):
    """ntps.extract's mean-pooled last layer is exactly what the head reads: NTPS after LoRA is
    computed on the representation that was fine-tuned."""
    from ntps.extract import moments

    result, _ = trained
    merged = lora.merge_adapter(result)
    stats, features = moments(merged, result.tokenizer, TEXTS, LABELS, progress=False, return_features=True)
    assert stats.num_layers == merged.config.num_hidden_layers + 1
    with torch.no_grad():
        logits = result.head(torch.from_numpy(features[:, -1])).double().numpy()
    assert np.allclose(logits, lora.predict(result, TEXTS), atol=1e-4)


# -- schedule and batches -------------------------------------------------------------------------
def test_lr_factor_matches_transformers_cosine_schedule():
    from transformers import get_cosine_schedule_with_warmup

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schedule = get_cosine_schedule_with_warmup(opt, num_warmup_steps=3, num_training_steps=20)
        expected = []
        for _ in range(20):
            expected.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step()
    assert np.allclose([lora.lr_factor(s, 20, 3, "cosine") for s in range(20)], expected)
    assert lora.lr_factor(0, 10, 0, "constant") == 1.0 and lora.lr_factor(5, 10, 0, "linear") == 0.5


def test_batch_order_covers_each_epoch():
    order = lora.batch_order(10, steps=7, batch_size=3, seed=0)
    assert order.shape == (7, 3)
    flat = order.reshape(-1)
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert np.array_equal(order, lora.batch_order(10, 7, 3, seed=0))
    # grouped by length: the same texts in every window, batches of similar length
    lengths = np.random.default_rng(0).integers(1, 100, size=40)
    plain = lora.batch_order(40, steps=12, batch_size=4, seed=2)
    grouped = lora.batch_order(40, steps=12, batch_size=4, seed=2, lengths=lengths, group=5)
    for start in (0, 5, 10):
        assert sorted(grouped[start:start + 5].ravel()) == sorted(plain[start:start + 5].ravel())
    spread = lambda order: np.mean([np.ptp(lengths[b]) for b in order])  # noqa: E731
    assert spread(grouped) < 0.5 * spread(plain)
    with pytest.raises(ValueError, match="one length per text"):
        lora.batch_order(40, 2, 4, 0, lengths=lengths[:3])


# -- bad input ----------------------------------------------------------------------------------
def test_bad_input_is_rejected_with_a_clear_message(trained, llama):
    model, tokenizer = llama
    result, _ = trained
    with pytest.raises(ValueError, match="zero steps trains nothing"):
        lora.train_lora(model, tokenizer, TEXTS, LABELS, steps=0, progress=False)
    with pytest.raises(ValueError, match="at least 1"):
        lora.train_lora(model, tokenizer, TEXTS, LABELS, steps=-3, progress=False)
    with pytest.raises(ValueError, match="48 training texts but labels of shape"):
        lora.train_lora(model, tokenizer, TEXTS, LABELS[:-1], steps=1, progress=False)
    with pytest.raises(ValueError, match="no training texts"):
        lora.train_lora(model, tokenizer, [], [], steps=1, progress=False)
    with pytest.raises(ValueError, match="one class only"):
        lora.train_lora(model, tokenizer, TEXTS, np.zeros(48, int), steps=1, progress=False)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        lora.train_lora(model, tokenizer, TEXTS, LABELS, steps=1, optimizer="sgd", progress=False)
    with pytest.raises(ValueError, match=r"labels \[2\] occur in the test split but not in training"):
        lora.lora_accuracy(result, TEXTS[:3], [0, 1, 2])
    with pytest.raises(ValueError, match=r"labels \[1\] occur in training but not in the test split"):
        lora.lora_accuracy(result, TEXTS[:2], [0, 0])
    with pytest.raises(ValueError, match="label sets differ"):
        lora.check_label_sets([0, 1, 2], [0, 1, 3])
    assert lora.check_label_sets([1, 0, 1], [0, 1]) == [0, 1]


def test_gain_interval():
    low, high = lora.gain_interval(0.8, 0.7, 100)
    assert low < 0.1 < high and high - low == pytest.approx(2 * 1.959964 * np.sqrt(0.16 / 100 + 0.21 / 100))
    low, high = lora.gain_interval([0.5, 1.0], [0.5, 1.0], [400, 10])
    assert low[1] == high[1] == 0 and low[0] < 0 < high[0]
    with pytest.raises(ValueError, match="must lie in"):
        lora.gain_interval(1.2, 0.5, 10)


# -- one task end to end, cached ------------------------------------------------------------------
def test_fine_tune_task_caches_everything(tmp_path, monkeypatch, llama):
    from pathlib import Path

    from ntps.experiments import ModelSource

    monkeypatch.setenv("NTPS_CACHE", str(tmp_path))
    root = Path(__file__).parent / "data" / "offline"
    settings = dict(data_root=root, max_length=24, steps=3, batch_size=4, lr=1e-2, rank=2, seed=0)
    source = ModelSource("tiny-llama", loaded=llama)
    run = lora.fine_tune_task("tiny-llama", "rt_sentiment", model=source, **settings)
    assert not run.info["cached"] and run.losses.shape == (3,) and 0.0 <= run.test_accuracy <= 1.0
    assert run.after.num_layers == llama[0].config.num_hidden_layers + 1 and run.after.n_texts == 8
    assert run.info["train_seconds"] > 0 and run.info["target_modules"] == ["q_proj", "k_proj", "v_proj"]
    unloaded = ModelSource("tiny-llama")  # a cache hit never loads the model
    again = lora.fine_tune_task("tiny-llama", "rt_sentiment", model=unloaded, **settings)
    assert again.info["cached"] and not unloaded.loaded
    assert again.test_accuracy == run.test_accuracy and np.array_equal(again.losses, run.losses)
    assert np.array_equal(again.after.sum_sh, run.after.sum_sh)
    assert again.info["train_seconds"] == run.info["train_seconds"]
    how_often = lora.fine_tune_task("tiny-llama", "rt_sentiment", model=unloaded, checkpoint_every=1, **settings)
    assert how_often.info["cached"]  # checkpointing more often does not change the result
    files = {p.suffix for p in tmp_path.joinpath("lora").rglob("*") if p.is_file()}
    assert files <= {".json", ".safetensors"}  # nothing pickled
    with pytest.raises(TypeError, match="needs steps"):
        lora.fine_tune_task("tiny-llama", "rt_sentiment", model=source, data_root=root)
    with pytest.raises(ValueError, match="tokenizer from the model.*keyed wrongly"):
        lora.fine_tune_task("tiny-llama", "rt_sentiment", model=source, tokenizer="elsewhere", **settings)
