"""Moments from the streaming extractor against a per-text float64 loop, and its guarantees."""

import contextlib
import json

import numpy as np
import pytest
import torch

from ntps.extract import NonFiniteStatesError, extract_moments as moments, plan_batches
from ntps.moments import Moments, MomentsMismatchError

TEXTS = [
    "The film was a delight from start to finish.",
    "Dull.",
    "A",
    "Next token prediction shapes what a language model perceives, or so the paper says.",
    "I am, you are, it is.",
    "She was lovely, enjoyable, amazing and delighted; he was horrible, unhappy and lonely.",
    "0123",
]
LABELS = np.array([0, 1, 2, 0, 1, 2, 0])


def reference_moments(model, tokenizer, texts, labels, num_classes, max_length=None, layers=None):
    """The definitions (theory chapter, table of symbols) written out per text and per token, in float64, each text run alone (no padding)."""
    num_states = model.config.num_hidden_layers + 1
    layers = list(range(num_states)) if layers is None else layers
    d = model.config.hidden_size
    sums = {k: np.zeros((len(layers), d, d)) for k in ("xx", "ss", "sh")}
    sums["xy"] = np.zeros((len(layers), d, num_classes))
    pairs = 0
    for text, label in zip(texts, labels):
        ids = tokenizer(text, truncation=max_length is not None, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            states = model(**ids, output_hidden_states=True).hidden_states
        y = np.eye(num_classes)[label]
        for slot, layer in enumerate(layers):
            h = states[layer][0].double().numpy()  # [T, d]
            T = h.shape[0]
            x = h.mean(axis=0)
            sums["xx"][slot] += np.outer(x, x)
            sums["xy"][slot] += np.outer(x, y)
            for t in range(1, T):  # s_t = h_1 + ... + h_t paired with h_{t+1} (1-indexed)
                s = h[:t].sum(axis=0)
                sums["ss"][slot] += np.outer(s, s)
                sums["sh"][slot] += np.outer(s, h[t])
        pairs += max(states[0].shape[1] - 1, 0)
    n = len(texts)
    return {"sxx": sums["xx"] / n, "sxy": sums["xy"] / n, "c0": sums["ss"] / n, "c1": sums["sh"] / n}, pairs


def assert_moments_close(result, expected, rtol=2e-5):
    for i, layer in enumerate(result.layers):
        got = result.layer(layer)
        for key in ("sxx", "sxy", "c0", "c1"):
            scale = np.abs(expected[key][i]).max()
            np.testing.assert_allclose(got[key], expected[key][i], rtol=0, atol=rtol * scale,
                                       err_msg=f"{key} of layer {layer}")


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("batch_size", [3, 7])
def test_equals_per_text_float64_loop(architecture, padding_side, batch_size):
    from ntps.tiny import tiny_model

    model, tokenizer = tiny_model(architecture, seed=1)
    tokenizer.padding_side = padding_side
    result = moments(model, tokenizer, TEXTS, LABELS, batch_size=batch_size, progress=False)
    expected, pairs = reference_moments(model, tokenizer, TEXTS, LABELS, 3)
    assert result.n_texts == len(TEXTS) and result.n_pairs == pairs
    assert result.layers == list(range(model.config.num_hidden_layers + 1))
    assert_moments_close(result, expected)


def test_truncation_one_token_texts_and_chosen_layers(tiny_llama):
    model, tokenizer = tiny_llama
    texts = TEXTS + [""]  # "" is one token: the <s> the tokenizer adds
    labels = np.append(LABELS, 1)
    assert len(tokenizer("")["input_ids"]) == 1
    result = moments(model, tokenizer, texts, labels, max_length=5, layers=[0, 2], batch_size=4, progress=False)
    expected, pairs = reference_moments(model, tokenizer, texts, labels, 3, max_length=5, layers=[0, 2])
    assert result.n_pairs == pairs and result.layers == [0, 2]
    assert_moments_close(result, expected)


@pytest.mark.parametrize("chunk_rows", [2048, 5])  # 5: many chunks, pairs straddling their edges
def test_split_precision_the_gpu_code_path_on_the_cpu(tiny_llama, monkeypatch, chunk_rows):
    import ntps.extract as extract

    monkeypatch.setattr(extract, "_CHUNK_ROWS", chunk_rows)
    model, tokenizer = tiny_llama
    exact = moments(model, tokenizer, TEXTS, LABELS, precision="float64", progress=False)
    for precision, bound in (("split", 1e-5), ("tf32x3", 1e-6), ("float32", 1e-6)):
        result = moments(model, tokenizer, TEXTS, LABELS, precision=precision, progress=False)
        for name in ("sum_ss", "sum_sh"):
            error = np.linalg.norm(getattr(result, name) - getattr(exact, name)) / np.linalg.norm(getattr(exact, name))
            assert error < bound, (precision, name, error)
    # bf16 states (what a GPU forward gives): products of bf16 values, split path against float64.
    model16 = type(model)(model.config).to(torch.bfloat16)
    model16.load_state_dict(model.state_dict())
    exact16 = moments(model16, tokenizer, TEXTS, LABELS, precision="float64", progress=False)
    for precision in ("split", "tf32x3"):
        split16 = moments(model16, tokenizer, TEXTS, LABELS, precision=precision, progress=False)
        for name in ("sum_xx", "sum_ss", "sum_sh"):
            exact_sum = getattr(exact16, name)
            error = np.linalg.norm(getattr(split16, name) - exact_sum) / np.linalg.norm(exact_sum)
            assert error < 1e-5, (precision, name, error)


def test_shards_merge_to_one_pass(tiny_llama):
    model, tokenizer = tiny_llama
    whole = moments(model, tokenizer, TEXTS, LABELS, batch_size=2, progress=False)
    shards = [moments(model, tokenizer, TEXTS, LABELS, batch_size=2, shard=(i, 3), progress=False) for i in range(3)]
    assert sum(s.n_texts for s in shards) == len(TEXTS)
    merged = shards[0].merge(*shards[1:])
    for name in ("sum_xx", "sum_xy", "sum_ss", "sum_sh"):
        np.testing.assert_allclose(getattr(merged, name), getattr(whole, name), rtol=1e-12, atol=1e-12)
    assert (merged.n_texts, merged.n_pairs) == (whole.n_texts, whole.n_pairs)
    before = shards[0].sum_xx.copy()
    shards[0].merge(shards[1])
    np.testing.assert_array_equal(shards[0].sum_xx, before)  # merging never mutates


def test_plan_batches_covers_every_text_once():
    lengths = [5, 1, 9, 9, 3, 7, 2]
    plans = [plan_batches(lengths, 2, (i, 3)) for i in range(3)]
    covered = sorted(int(i) for plan in plans for batch in plan for i in batch)
    assert covered == list(range(7))
    assert [lengths[i] for i in np.concatenate(plan_batches(lengths, 2))] == sorted(lengths, reverse=True)


def test_resume_after_a_crash_equals_an_uninterrupted_run(tiny_llama, tmp_path, monkeypatch):
    import ntps.extract as extract

    model, tokenizer = tiny_llama
    whole = moments(model, tokenizer, TEXTS, LABELS, batch_size=2, progress=False)
    original = extract._Accumulator.add_batch
    calls = {"n": 0}

    def crash_on_third(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(extract._Accumulator, "add_batch", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        moments(model, tokenizer, TEXTS, LABELS, batch_size=2, checkpoint=tmp_path / "ckpt", checkpoint_every=1,
                progress=False)
    assert json.loads((tmp_path / "ckpt" / "state.json").read_text())["next_batch"] == 2
    monkeypatch.setattr(extract._Accumulator, "add_batch", original)
    resumed_calls = {"n": 0}

    def counting(self, *args, **kwargs):
        resumed_calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(extract._Accumulator, "add_batch", counting)
    resumed = moments(model, tokenizer, TEXTS, LABELS, batch_size=2, checkpoint=tmp_path / "ckpt",
                      checkpoint_every=1, progress=False)
    assert resumed_calls["n"] == 2  # 4 batches, 2 done before the crash
    for name in ("sum_xx", "sum_xy", "sum_ss", "sum_sh"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name))
    # A checkpoint of other inputs is ignored, not trusted.
    other = moments(model, tokenizer, TEXTS[:3], LABELS[:3], batch_size=2, checkpoint=tmp_path / "ckpt",
                    progress=False)
    assert other.n_texts == 3


def test_host_buffers_of_a_device_run_give_the_same_sums(tiny_llama, tmp_path, monkeypatch):
    # On a GPU the sums are copied into host arrays faulted in by a background thread; the same
    # code runs here when forced, through checkpoints (a copy per batch) and the final result.
    import ntps.extract as extract

    model, tokenizer = tiny_llama
    plain = moments(model, tokenizer, TEXTS, LABELS, batch_size=2, progress=False)
    copies = {"n": 0}
    original = extract._HostSums.copy_from

    def counting(self, tensors):
        copies["n"] += 1
        return original(self, tensors)

    monkeypatch.setattr(extract, "_host_buffers_for", lambda device: True)
    monkeypatch.setattr(extract._HostSums, "copy_from", counting)
    buffered = moments(model, tokenizer, TEXTS, LABELS, batch_size=2, progress=False, checkpoint=tmp_path / "ckpt",
                       checkpoint_every=1)
    assert copies["n"] == 4 + 1  # one per checkpoint of the 4 batches, one for the result
    for name in ("sum_xx", "sum_xy", "sum_ss", "sum_sh"):
        np.testing.assert_array_equal(getattr(buffered, name), getattr(plain, name))
    saved = Moments.load(tmp_path / "ckpt" / "moments")
    np.testing.assert_array_equal(saved.sum_sh, plain.sum_sh)


def test_save_load_round_trip_and_merge_checks(tiny_llama, tmp_path):
    model, tokenizer = tiny_llama
    result = moments(model, tokenizer, TEXTS, LABELS, progress=False, metadata={"dataset": "toy", "split": "train"})
    result.save(tmp_path / "m")
    loaded = Moments.load(tmp_path / "m")
    for name in ("sum_xx", "sum_xy", "sum_ss", "sum_sh"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(result, name))
    assert loaded.metadata == json.loads(json.dumps(result.metadata))
    assert (loaded.n_texts, loaded.n_pairs, loaded.layers) == (result.n_texts, result.n_pairs, result.layers)
    other = moments(model, tokenizer, TEXTS, LABELS, progress=False, metadata={"dataset": "toy", "split": "test"})
    with pytest.raises(MomentsMismatchError, match="different split"):
        result.merge(other)
    with pytest.raises(FileNotFoundError, match="does not hold saved moments"):
        Moments.load(tmp_path)


def test_bad_input_is_rejected_with_clear_messages(tiny_llama):
    model, tokenizer = tiny_llama
    with pytest.raises(ValueError, match="no texts"):
        moments(model, tokenizer, [], [], progress=False)
    with pytest.raises(ValueError, match="3 texts but labels of shape \\(2,\\)"):
        moments(model, tokenizer, TEXTS[:3], [0, 1], progress=False)
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        moments(model, tokenizer, TEXTS[:3], [0, 1, 2], num_classes=2, progress=False)
    with pytest.raises(ValueError, match="layers \\[9\\] do not exist"):
        moments(model, tokenizer, TEXTS[:3], [0, 1, 0], layers=[9], progress=False)
    tokenizer_without_bos = type(tokenizer)(tokenizer_object=tokenizer.backend_tokenizer, pad_token="<pad>")
    tokenizer_without_bos.backend_tokenizer.post_processor = None
    with pytest.raises(ValueError, match="tokenise to nothing"):
        moments(model, tokenizer_without_bos, ["fine", ""], [0, 1], progress=False)


def test_non_finite_states_name_the_layer(tiny_llama):
    model, tokenizer = tiny_llama
    broken = type(model)(model.config)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.model.layers[1].mlp.down_proj.weight.fill_(float("inf"))
    with pytest.raises(NonFiniteStatesError, match="layer 2.*fp16 overflow"):
        moments(broken, tokenizer, TEXTS[:3], [0, 1, 0], progress=False)


@pytest.mark.parametrize("checkpointed", [False, True])
def test_a_non_finite_batch_is_reported_as_itself_and_never_checkpointed(tiny_llama, tmp_path, monkeypatch,
                                                                         checkpointed):
    # Finiteness is read back one batch late: the error must still name the bad batch's texts
    # and layer, and no checkpoint may hold sums that the bad batch touched.
    import ntps.extract as extract

    model, tokenizer = tiny_llama
    original = extract._forward_states
    calls = {"n": 0}

    def inf_in_second_batch(backbone, ids, mask):
        states = original(backbone, ids, mask)
        calls["n"] += 1
        if calls["n"] == 2:
            states = tuple(s.clone() for s in states)
            states[1][0, 0, 0] = float("inf")
        return states

    monkeypatch.setattr(extract, "_forward_states", inf_in_second_batch)
    lengths = [len(ids) for ids in tokenizer(TEXTS)["input_ids"]]
    second_batch = plan_batches(lengths, 2)[1]
    folder = tmp_path / "ckpt" if checkpointed else None
    expected = rf"layer 1 \(layers \[1\]\).*texts \[{second_batch[0]}, {second_batch[1]}\]"
    with pytest.raises(NonFiniteStatesError, match=expected):
        moments(model, tokenizer, TEXTS, LABELS, batch_size=2, checkpoint=folder, checkpoint_every=1,
                progress=False)
    if checkpointed:
        assert json.loads((folder / "state.json").read_text())["next_batch"] == 1
        saved = Moments.load(folder / "moments")
        assert saved.n_texts == 2 and all(np.isfinite(getattr(saved, name)).all() for name in
                                          ("sum_xx", "sum_xy", "sum_ss", "sum_sh"))


def test_features_from_the_same_pass_equal_mean_pooling(tiny_llama):
    from ntps.features import hidden_states, mean_pool

    model, tokenizer = tiny_llama
    result, features = moments(model, tokenizer, TEXTS, LABELS, batch_size=3, layers=[0, 2], return_features=True,
                               progress=False)
    assert features.shape == (len(TEXTS), 2, model.config.hidden_size) and features.dtype == np.float32
    for i, text in enumerate(TEXTS):  # each text alone, in its own order
        states, mask = hidden_states(model, tokenizer, [text])
        expected = mean_pool(states, mask)[[0, 2], 0].double().numpy()
        np.testing.assert_allclose(features[i], expected, rtol=1e-5, atol=1e-6)
    # sxx is the second moment of exactly these features
    second_moment = features[:, 1].astype(np.float64).T @ features[:, 1] / len(TEXTS)
    np.testing.assert_allclose(result.layer(2)["sxx"], second_moment, rtol=0, atol=1e-6 * np.abs(second_moment).max())
    with pytest.raises(ValueError, match="cannot be combined with shard"):
        moments(model, tokenizer, TEXTS, LABELS, shard=(0, 2), return_features=True, progress=False)


def test_auto_precision_uses_split_products_only_where_bf16_tensor_cores_exist(monkeypatch):
    from ntps.extract import _auto_precision

    capability = {"value": (9, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability["value"])
    gpu = torch.device("cuda", 0)  # a device object needs no GPU
    assert _auto_precision(gpu, torch.bfloat16) == _auto_precision(gpu, torch.float16) == "split"
    assert _auto_precision(gpu, torch.float32) == "float32"
    capability["value"] = (7, 5)  # a T4, Colab's usual GPU
    assert _auto_precision(gpu, torch.float16) == "float32"
    assert _auto_precision(torch.device("cpu"), torch.bfloat16) == "float32"


class _FakeSideStream:
    """Stands in for extract._SideStream on the CPU and logs the hand-overs between streams."""

    def __init__(self, log):
        self.log, self.inside = log, False

    @contextlib.contextmanager
    def run(self, *inputs):
        self.log.append(("run", len(inputs)))
        self.inside = True
        yield
        self.inside = False

    def join(self):
        self.log.append(("join",))


@pytest.mark.parametrize("features", [False, True])
def test_overlap_hands_over_between_streams_in_order(tiny_llama, tmp_path, monkeypatch, features):
    # The CUDA side stream cannot run here; a fake one checks the protocol the GPU relies on: the
    # accumulation runs inside the side stream with every state and input handed over, each batch's
    # flags are read only after its event, and nothing reads the sums or features before a join.
    import ntps.extract as extract

    model, tokenizer = tiny_llama
    plain = moments(model, tokenizer, TEXTS, LABELS, batch_size=2, progress=False, return_features=features)
    log = []
    side = _FakeSideStream(log)
    monkeypatch.setattr(extract, "_side_stream", lambda device: side)
    add_batch, to_moments = extract._Accumulator.add_batch, extract._Accumulator.to_moments

    def logged_add_batch(self, *args, **kwargs):
        assert side.inside, "the accumulation must be queued on the side stream"
        log.append(("add_batch",))
        return add_batch(self, *args, **kwargs)

    def logged_to_moments(self, *args, **kwargs):
        log.append(("to_moments",))
        return to_moments(self, *args, **kwargs)

    def logged_flags(finite):
        # on a GPU: a copy to host memory and an event, both queued on the stream that made the flags
        index = sum(1 for entry in log if entry[0] == "record")
        log.append(("record", index, side.inside))

        class Event:
            def synchronize(self):
                log.append(("synchronize", index))

        return finite, Event()

    monkeypatch.setattr(extract._Accumulator, "add_batch", logged_add_batch)
    monkeypatch.setattr(extract._Accumulator, "to_moments", logged_to_moments)
    monkeypatch.setattr(extract, "_flags_for_host", logged_flags)
    kwargs = {"return_features": True} if features else {"checkpoint": tmp_path / "ckpt", "checkpoint_every": 2}
    overlapped = moments(model, tokenizer, TEXTS, LABELS, batch_size=2, progress=False, overlap=True, **kwargs)
    if features:
        overlapped, overlapped_features = overlapped
        plain, plain_features = plain
        np.testing.assert_array_equal(overlapped_features, plain_features)
    for name in ("sum_xx", "sum_xy", "sum_ss", "sum_sh"):
        np.testing.assert_array_equal(getattr(overlapped, name), getattr(plain, name))

    states = model.config.num_hidden_layers + 1
    runs = [entry for entry in log if entry[0] == "run"]
    assert len(runs) == 4 and all(n == states + 2 + features for _, n in runs)  # states, lengths, labels[, pooled]
    records = [entry for entry in log if entry[0] == "record"]
    assert records == [("record", i, True) for i in range(4)]  # queued on the side stream
    synced = [entry[1] for entry in log if entry[0] == "synchronize"]
    assert sorted(synced) == [0, 1, 2, 3]  # every batch's flags read after its own event
    for position, entry in enumerate(log):
        if entry[0] == "to_moments":
            last_side = [e for e in log[:position] if e[0] in ("run", "join")][-1]
            assert last_side == ("join",), "the sums were read before the side stream was joined"
    assert sum(entry[0] == "to_moments" for entry in log) == (1 if features else 2 + 1)
    if features:  # each batch's features are copied after a join
        assert sum(entry[0] == "join" for entry in log) >= 4


def test_overlap_needs_a_cuda_device(tiny_llama):
    model, tokenizer = tiny_llama
    with pytest.raises(ValueError, match="second CUDA stream.*overlap=False"):
        moments(model, tokenizer, TEXTS[:2], LABELS[:2], progress=False, overlap=True)


def test_a_model_on_apple_mps_is_refused_with_the_fix(tiny_llama):
    # MPS tensors cannot be made on this machine; a stand-in model reports its parameters there.
    model, tokenizer = tiny_llama

    class OnMps(torch.nn.Module):
        config = model.config

        def parameters(self, recurse=True):
            yield type("Parameter", (), {"device": torch.device("mps"), "dtype": torch.float32})()

    with pytest.raises(ValueError, match="MPS has no float64.*device='cpu'"):
        moments(OnMps(), tokenizer, TEXTS[:2], LABELS[:2], progress=False)


def test_inf_in_a_padded_position_changes_nothing(tiny_llama, monkeypatch):
    # fp16 can overflow on a pad token; its state never counts, and must not turn the zero rows of
    # the C1 product into NaN (0 * inf).
    import ntps.extract as extract

    model, tokenizer = tiny_llama
    clean = moments(model, tokenizer, TEXTS, LABELS, batch_size=2, progress=False)
    original = extract._forward_states
    poisoned = {"n": 0}

    def inf_on_padding(backbone, ids, mask):
        states = tuple(s.clone() for s in original(backbone, ids, mask))
        for row in torch.nonzero(mask[:, -1] == 0).flatten().tolist():
            for state in states:
                state[row, -1] = float("inf")
            poisoned["n"] += 1
        return states

    monkeypatch.setattr(extract, "_forward_states", inf_on_padding)
    result = moments(model, tokenizer, TEXTS, LABELS, batch_size=2, progress=False)
    assert poisoned["n"] > 0
    for name in ("sum_xx", "sum_xy", "sum_ss", "sum_sh"):
        np.testing.assert_array_equal(getattr(result, name), getattr(clean, name))


def test_overlap_joins_the_side_stream_when_a_run_fails(tiny_llama, monkeypatch):
    import ntps.extract as extract

    model, tokenizer = tiny_llama
    log = []
    monkeypatch.setattr(extract, "_side_stream", lambda device: _FakeSideStream(log))
    original = extract._forward_states
    calls = {"n": 0}

    def fails_on_third(backbone, ids, mask):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.cuda.OutOfMemoryError("simulated")
        return original(backbone, ids, mask)

    monkeypatch.setattr(extract, "_forward_states", fails_on_third)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        moments(model, tokenizer, TEXTS, LABELS, batch_size=2, progress=False, overlap=True)
    assert [entry[0] for entry in log] == ["run", "run", "join"]  # the sums are freed only after it
