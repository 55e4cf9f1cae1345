"""LoRA fine-tuning on tiny random models: it learns, it touches only adapters and head, it resumes
exactly, and the merged model is the adapted one; its settings are checked once and key the cache."""

import dataclasses
import doctest
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ntps
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


# -- settings -----------------------------------------------------------------------------------
BAD_SETTINGS = [  # field, bad value, error, what the message says
    ("steps", 0, ValueError, "steps must be at least 1, got 0: a budget of zero steps trains nothing"),
    ("steps", 2.5, TypeError, "steps must be an integer"),
    ("batch_size", 0, ValueError, "batch_size must be at least 1"),
    ("lr", 0.0, ValueError, "lr must be positive and finite"),
    ("lr", float("nan"), ValueError, "lr must be positive and finite"),
    ("lr", "1e-4", TypeError, "lr must be a number"),  # what YAML 1.1 makes of 1e-4
    ("rank", -2, ValueError, "rank must be at least 1"),
    ("alpha", 0, ValueError, "alpha must be positive and finite"),
    ("dropout", 1.0, ValueError, r"dropout must lie in \[0, 1\)"),
    ("target_modules", [], ValueError, "target_modules must name at least one linear layer"),
    ("target_modules", ["q_proj", 3], TypeError, "target_modules must be module names"),
    ("optimizer", "sgd", ValueError, r"optimizer must be one of \('adamw', 'adafactor'\)"),
    ("weight_decay", -0.1, ValueError, "weight_decay must be at least 0"),
    ("schedule", "step", ValueError, "schedule must be one of"),
    ("warmup_ratio", 1.0, ValueError, r"warmup_ratio must lie in \[0, 1\)"),
    ("max_grad_norm", 0.0, ValueError, r"max_grad_norm must be positive and finite \(or None: no clipping\)"),
    ("head_lr_scale", math.inf, ValueError, "head_lr_scale must be positive and finite"),
    ("max_length", 0, ValueError, "max_length must be at least 1"),
    ("group_by_length", "yes", TypeError, "group_by_length must be True or False"),
    ("seed", -1, ValueError, "seed must be at least 0"),
    ("checkpoint_every", 0, ValueError, "checkpoint_every must be at least 1"),
    ("autocast", "float16", ValueError, r"autocast must be None \(no autocast\) or 'bfloat16'.*loss scaling"),
    ("autocast", 16, TypeError, "autocast must be None or a dtype name"),
]


def test_every_setting_is_checked():
    assert {f.name for f in dataclasses.fields(lora.LoraSettings)} == {name for name, *_ in BAD_SETTINGS}


@pytest.mark.parametrize("name,value,error,message", BAD_SETTINGS)
def test_a_bad_setting_is_refused_by_name(name, value, error, message, llama):
    good = {"steps": 3}
    with pytest.raises(error, match=message):
        lora.LoraSettings(**(good | {name: value}))
    with pytest.raises(error, match=message):  # replace checks again
        lora.LoraSettings(**good).replace(**{name: value})
    if name != "steps":  # keyword overrides of train_lora are checked alike, before any work
        with pytest.raises(error, match=message):
            lora.train_lora(*llama, TEXTS, LABELS, steps=1, progress=False, **{name: value})


def test_equal_settings_have_one_form():
    plain = lora.LoraSettings(steps=4, lr=1e-3, alpha=16, target_modules=("q_proj",), group_by_length=True)
    numpy = lora.LoraSettings(steps=np.int64(4), lr=np.float64(1e-3), alpha=16.0, target_modules="q_proj",
                              group_by_length=np.bool_(True))
    assert plain == numpy and hash(plain) == hash(numpy)
    assert json.dumps(plain.to_dict()) == json.dumps(numpy.to_dict())  # hence one cache key
    assert type(numpy.steps) is int and type(numpy.lr) is float and type(numpy.group_by_length) is bool
    assert lora.LoraSettings(steps=1, alpha=2.5).alpha == 2.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain.steps = 5


def test_settings_round_trip_through_json():
    settings = lora.LoraSettings(steps=7, lr=3e-3, target_modules=["q_proj", "v_proj"], max_grad_norm=None,
                                 max_length=64, optimizer="adafactor", seed=2)
    assert lora.LoraSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    assert settings.replace(seed=3) == lora.LoraSettings(**(settings.to_dict() | {"seed": 3}))
    assert settings.result_dict() == {k: v for k, v in settings.to_dict().items() if k != "checkpoint_every"}
    with pytest.raises(TypeError, match=r"unknown LoRA setting\(s\) \['learning_rate'\]; the settings are steps"):
        lora.LoraSettings.from_dict({"steps": 1, "learning_rate": 1e-3})
    with pytest.raises(TypeError, match=r"unknown LoRA setting\(s\) \['ranks'\]"):
        settings.replace(ranks=4)
    with pytest.raises(TypeError, match="needs steps"):
        lora.train_lora(None, None, TEXTS, LABELS, lr=1e-3)


def test_keyword_overrides_are_the_settings_object(llama):
    model, tokenizer = llama
    settings = lora.LoraSettings(steps=2, batch_size=8, lr=3e-2, rank=4, alpha=8, dropout=0.1, seed=5)
    by_object = lora.train_lora(model, tokenizer, TEXTS, LABELS, settings, progress=False)
    by_keywords = lora.train_lora(model, tokenizer, TEXTS, LABELS, steps=2, batch_size=8, lr=3e-2, rank=4, alpha=8,
                                  dropout=0.1, seed=5, progress=False)
    mixed = lora.train_lora(model, tokenizer, TEXTS, LABELS, settings.replace(seed=0, rank=2), seed=5, rank=4,
                            progress=False)
    for other in (by_keywords, mixed):
        assert other.settings == by_object.settings and other.config == by_object.config
        assert np.array_equal(other.losses, by_object.losses)
        expected, got = _weights(by_object), _weights(other)
        assert expected.keys() == got.keys() and all(torch.equal(got[k], v) for k, v in expected.items())


def test_the_run_key_keeps_the_form_of_the_first_cached_runs():
    """The book's runs were keyed on the keywords passed, less checkpoint_every: the settings object
    must give the very same dict, or their caches would be lost."""
    book_cpu = dict(steps=48, batch_size=8, lr=0.003, rank=8, alpha=16, dropout=0.05, target_modules=None,
                    optimizer="adamw", schedule="cosine", warmup_ratio=0.05, max_grad_norm=1.0, group_by_length=True,
                    checkpoint_every=16, seed=0)
    book_gpu = book_cpu | dict(steps=5000, batch_size=1, lr=0.0001, rank=32, alpha=32,
                               target_modules=["q_proj", "k_proj", "v_proj"], optimizer="adafactor",
                               group_by_length=False, checkpoint_every=500)
    for kwargs in (book_cpu, book_gpu):
        legacy = {k: kwargs[k] for k in sorted(kwargs) if k not in ("checkpoint_every", "callback")}
        keyed = lora._train_key(lora.LoraSettings(**kwargs), None)
        assert json.dumps(keyed, sort_keys=True) == json.dumps(legacy, sort_keys=True)
    settings = lora.LoraSettings(**book_cpu)
    changed = lora._train_key(settings.replace(weight_decay=0.01, checkpoint_every=1), None)
    assert changed == lora._train_key(settings, None) | {"weight_decay": 0.01}
    assert "max_length" not in lora._train_key(settings.replace(max_length=32), None)  # keyed on its own
    # autocast enters the key only when on, in one spelling
    for spelling in ("bfloat16", "bf16", "BF16", torch.bfloat16):
        assert settings.replace(autocast=spelling).autocast == "bfloat16"
        assert lora._train_key(settings.replace(autocast=spelling), None) == \
            lora._train_key(settings, None) | {"autocast": "bfloat16"}


def test_default_autocast_leaves_the_checkpoint_record_as_it_was(llama):
    """The record (hence the fingerprint) of a run without autocast has no autocast entry, as before
    the field existed, so that existing checkpoints still resume; with autocast it differs."""
    model, tokenizer = llama
    settings = lora.LoraSettings(steps=3)
    plain = lora._plan(model, tokenizer, TEXTS, LABELS, settings, None, None)
    assert "autocast" not in plain.record
    legacy = {k: v for k, v in settings.result_dict().items() if k != "autocast"}
    assert {k: plain.record[k] for k in legacy if k not in ("alpha", "target_modules")} == \
        {k: v for k, v in legacy.items() if k not in ("alpha", "target_modules")}
    cast = lora._plan(model, tokenizer, TEXTS, LABELS, settings.replace(autocast="bfloat16"), None, None)
    assert cast.record == plain.record | {"autocast": "bfloat16"} and cast.fingerprint != plain.fingerprint


def test_no_old_name_is_left():
    """The old names are gone: evaluate (which shadowed the module ntps.evaluate) and merge (as
    Moments.merge and `ntps merge`)."""
    assert not hasattr(lora, "evaluate") and not hasattr(lora, "merge")
    assert all(hasattr(lora, name) for name in lora.__all__)
    root = Path(__file__).parents[1]
    old = re.compile(r"\blora\.(evaluate|merge)\b|from ntps\.lora import[^\n]*\b(evaluate|merge)\b")
    stale = [f"{path.relative_to(root)}:{n}" for folder in ("ntps", "benchmarks", "tests", "notebooks")
             for path in sorted((root / folder).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if old.search(line)]
    assert stale == []


def test_docstring_examples_run():
    failures, tried = doctest.testmod(lora, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


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


@pytest.mark.parametrize("optimizer,arch,autocast", [("adamw", "llama", None), ("adafactor", "gpt2", None),
                                                     ("adamw", "llama", "bfloat16")])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, optimizer, arch, autocast):
    model, tokenizer = tiny_model(arch)
    settings = dict(steps=7, seed=1, dropout=0.1, optimizer=optimizer, warmup_ratio=0.2, autocast=autocast, **FAST)
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


# -- bfloat16 autocast -------------------------------------------------------------------------------
def _first_step_loss_by_hand(result, order, model_dtype, autocast):
    """The loss of update 0 written out: the first batch through the run's (unchanged) model, in
    eval mode (dropout 0), pooled over real tokens, through the float32 head."""
    import copy

    from ntps.extract import _right_padded

    tokenizer = result.tokenizer
    peft_model = copy.deepcopy(result.model).to(model_dtype).eval()
    ids, mask = _right_padded([tokenizer(TEXTS[i])["input_ids"] for i in order[0]], tokenizer.pad_token_id,
                              torch.device("cpu"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        states = peft_model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    states, weights = states.float(), mask.float()
    pooled = (states * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
    logits = result.head(pooled)
    return float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(LABELS[order[0]])))


def test_bf16_autocast_step_is_the_float32_step_within_bf16_round_off(llama):
    model, tokenizer = llama
    # warm-up: update 0 has learning rate 0, so the returned model is the one that computed loss 0
    settings = lora.LoraSettings(steps=1, batch_size=8, lr=3e-2, rank=4, alpha=8, dropout=0.0, warmup_ratio=0.5,
                                 seed=2)
    order = lora.batch_order(len(TEXTS), 1, 8, seed=2)
    seen = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: seen.append(out.dtype) if isinstance(module, torch.nn.Linear) else None)
    try:
        cast = lora.train_lora(model, tokenizer, TEXTS, LABELS, settings.replace(autocast="bfloat16"), progress=False)
    finally:
        hook.remove()
    plain = lora.train_lora(model, tokenizer, TEXTS, LABELS, settings, progress=False)
    # the projections ran in bf16, the head (the last Linear) in float32
    assert torch.bfloat16 in seen and seen[-1] == torch.float32
    # master weights, adapters, head and optimiser state stay float32
    assert all(p.dtype == torch.float32 for p in cast.model.parameters())
    assert cast.head.weight.dtype == cast.head.bias.dtype == torch.float32
    assert cast.config["autocast"] == "bfloat16" and "autocast" not in plain.config
    # independent: the same batch written out, in float32 exactly and in bf16 (a bf16 copy of the model)
    float32_loss = _first_step_loss_by_hand(plain, order, torch.float32, autocast=False)
    assert plain.losses[0] == pytest.approx(float32_loss, rel=1e-6)
    by_hand_bf16 = _first_step_loss_by_hand(cast, order, torch.bfloat16, autocast=False)
    by_hand_autocast = _first_step_loss_by_hand(cast, order, torch.float32, autocast=True)
    assert cast.losses[0] == pytest.approx(by_hand_autocast, rel=1e-6)
    # bf16 rounds to 8 significant bits (a relative 2^-9, 0.2%): the losses agree to a few of those
    assert cast.losses[0] == pytest.approx(float32_loss, rel=5e-3) and cast.losses[0] != plain.losses[0]
    assert cast.losses[0] == pytest.approx(by_hand_bf16, rel=5e-3)


def test_bf16_autocast_training_learns(llama):
    model, tokenizer = llama
    result = lora.train_lora(model, tokenizer, TEXTS, LABELS, steps=40, seed=0, autocast="bfloat16", **FAST)
    assert result.losses[-8:].mean() < 0.3 * result.losses[:8].mean()
    assert lora.lora_accuracy(result, TEXTS, LABELS) >= 0.9  # evaluated in float32, without autocast


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
    from ntps.extract import extract_moments as moments

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
    test_labels = ntps.data.load("rt_sentiment", "test", root=root).labels
    predictions = np.asarray(run.info["test_predictions"])
    assert predictions.shape == test_labels.shape and run.test_accuracy == np.mean(predictions == test_labels)
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
    as_object = lora.LoraSettings(steps=3, batch_size=4, lr=1e-2, rank=2, seed=0, checkpoint_every=2)
    same = lora.fine_tune_task("tiny-llama", "rt_sentiment", as_object, model=unloaded, data_root=root, max_length=24)
    assert same.info["cached"] and same.info["key"] == run.info["key"]  # an object or keywords: one run
    with pytest.raises(ValueError, match="settings.max_length is 32 but max_length is 24"):
        lora.fine_tune_task("tiny-llama", "rt_sentiment", as_object.replace(max_length=32), model=source,
                            data_root=root, max_length=24)
    with pytest.raises(ValueError, match="tokenizer from the model.*keyed wrongly"):
        lora.fine_tune_task("tiny-llama", "rt_sentiment", model=source, tokenizer="elsewhere", **settings)


def test_gain_bootstrap_is_a_paired_resampling_of_the_test_texts():
    from ntps.lora import gain_bootstrap

    rng = np.random.default_rng(3)
    lora_right = rng.random(120) < 0.8
    probe_right = np.where(rng.random(120) < 0.7, lora_right, ~lora_right)  # errors that go together
    gain, low, high = gain_bootstrap(lora_right, probe_right, n_boot=500, seed=9)
    assert gain == pytest.approx(lora_right.mean() - probe_right.mean())
    # the same resampling, written as a loop over draws
    draws = np.random.default_rng(9).integers(0, 120, size=(500, 120))
    by_hand = [lora_right[d].mean() - probe_right[d].mean() for d in draws]
    assert (low, high) == pytest.approx(tuple(np.quantile(by_hand, [0.025, 0.975])))
    assert low <= gain <= high
    with pytest.raises(ValueError, match="one length"):
        gain_bootstrap([1, 0], [1])
