import time
from pathlib import Path

import pytest
import torch

from ntps import models
from ntps.cache import cache_dir
from ntps.models import ModelNotFoundError, load_model


def _logits(model, tokenizer, texts):
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_saved_folder_loads_back_identically(tmp_path, architecture):
    from ntps.tiny import tiny_model

    model, tokenizer = tiny_model(architecture, seed=3)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_model(tmp_path)
    texts = ["a short one", "and a somewhat longer text to pad against"]
    assert loaded_tokenizer(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    torch.testing.assert_close(_logits(loaded, loaded_tokenizer, texts), _logits(model, tokenizer, texts),
                               rtol=0, atol=0)
    assert not loaded.training
    assert loaded.config.pad_token_id == loaded_tokenizer.pad_token_id is not None


def test_model_saved_without_tokenizer_needs_and_takes_one(tmp_path):
    from ntps.tiny import tiny_model

    model, tokenizer = tiny_model("llama", seed=1)
    model.save_pretrained(tmp_path / "model")  # weights only, as OpenELM's repositories ship them
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    with pytest.raises(ModelNotFoundError, match="has no tokenizer.*tokenizer="):
        load_model(tmp_path / "model")
    loaded, loaded_tokenizer = load_model(tmp_path / "model", tokenizer=tmp_path / "tokenizer")
    texts = ["a short one", "and a somewhat longer text"]
    assert loaded_tokenizer(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    torch.testing.assert_close(_logits(loaded, loaded_tokenizer, texts), _logits(model, tokenizer, texts),
                               rtol=0, atol=0)


def test_openelm_is_paired_with_the_tokenizer_its_authors_name(monkeypatch):
    assert models.paired_tokenizer("apple/OpenELM-270M") == "meta-llama/Llama-2-7b-hf"
    assert models.paired_tokenizer("Qwen/Qwen2-0.5B") is None
    seen = {}

    def fake_from_pretrained(source, **kwargs):
        seen[source] = kwargs["tokenizer_source"]
        raise OSError("not cached")

    monkeypatch.setattr(models, "_from_pretrained", fake_from_pretrained)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout: False)
    for name, expected in (("apple/OpenELM-450M", "meta-llama/Llama-2-7b-hf"), ("Qwen/Qwen2-0.5B", None)):
        with pytest.raises(ModelNotFoundError, match="cannot be reached"):
            load_model(name)
        assert seen[name] == expected
    with pytest.raises(ModelNotFoundError):
        load_model("apple/OpenELM-270M", tokenizer="someone/other-tokenizer")
    assert seen["apple/OpenELM-270M"] == "someone/other-tokenizer"  # an explicit choice wins


def test_pad_token_set_when_the_tokenizer_has_none(tmp_path):
    from ntps.tiny import tiny_model

    model, tokenizer = tiny_model("gpt2")
    tokenizer.pad_token = None
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    _, loaded_tokenizer = load_model(tmp_path)
    assert loaded_tokenizer.pad_token == loaded_tokenizer.eos_token == "</s>"
    batch = loaded_tokenizer(["one", "one two three"], padding=True)
    assert len(set(map(len, batch["input_ids"]))) == 1


def test_dtype_and_bad_dtype():
    model, _ = load_model("tiny-llama", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        load_model("tiny-llama", dtype="float8")


def test_bf16_on_a_cpu_without_native_bf16_warns_once_with_the_fix(monkeypatch):
    import warnings

    from ntps.moments import NTPSWarning

    monkeypatch.setattr(models, "cpu_supports_bf16", lambda: False)
    with pytest.warns(NTPSWarning) as caught:
        model, _ = load_model("tiny-llama", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16  # warned, not refused
    slow = [w for w in caught if issubclass(w.category, NTPSWarning)]
    assert len(slow) == 1
    message = str(slow[0].message)
    assert models.BF16_CPU_BENCHMARK in message and "dtype='float32'" in message and "slower" in message
    assert slow[0].filename == __file__  # points at the caller's line
    assert (Path(__file__).parents[1] / models.BF16_CPU_BENCHMARK).is_file()  # the log it names exists
    with warnings.catch_warnings():
        warnings.simplefilter("error", NTPSWarning)
        load_model("tiny-llama")  # float32: nothing to say
        load_model("tiny-llama", dtype="bfloat16", device="meta")  # not on the CPU
        monkeypatch.setattr(models, "cpu_supports_bf16", lambda: True)
        load_model("tiny-llama", dtype="bfloat16")  # AVX512-BF16 or AMX: bf16 pays


def test_cpu_supports_bf16_reads_torchs_capabilities(monkeypatch):
    def capabilities(**features):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "x86_64", "avx2": True, **features})
        return models.cpu_supports_bf16()

    assert capabilities() is False
    assert capabilities(avx512_f=True, avx512_bf16=False) is False
    assert capabilities(avx512_bf16=True) is True
    assert capabilities(amx_bf16=True) is True
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "arm64", "bf16": True})
    assert models.cpu_supports_bf16() is True
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "arm64", "neon": True})
    assert models.cpu_supports_bf16() is False


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ModelNotFoundError, match="unknown model 'smollm2-135'.*Did you mean 'smollm2-135m'"):
        load_model("smollm2-135")


def test_missing_paths_say_so(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(tmp_path / "absent" / "model.gguf")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model("./no/such/folder")
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        load_model(tmp_path)


def test_hub_id_offline_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="hub cannot be reached.*smollm2-135m"):
        load_model("Qwen/Qwen2-0.5B-not-cached-here")
    assert time.perf_counter() - start < 15


def test_unreachable_endpoint_is_detected_without_hanging(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    start = time.perf_counter()
    assert models.hub_reachable(timeout=2.0) is False
    assert time.perf_counter() - start < 5


def test_trust_remote_code_is_off_unless_asked(monkeypatch):
    seen = []

    def fake_from_pretrained(source, **kwargs):
        seen.append(kwargs["trust_remote_code"])
        return load_model("tiny-llama")

    monkeypatch.setattr(models, "_from_pretrained", fake_from_pretrained)
    load_model("org/model")
    load_model("org/model", trust_remote_code=True)
    assert seen == [False, True]


GGUF = Path(cache_dir("downloads")) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.skipif(not GGUF.is_file(), reason="offline model not fetched (run `make setup`)")
def test_offline_model_matches_a_direct_gguf_load():
    model, tokenizer = load_model("smollm2-135m")
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    assert (models.prepare_offline_model() / "ntps_source.json").is_file()
    # Independent of the converted copy: transformers dequantising the GGUF file itself, through
    # load()'s .gguf path (one dequantisation: it takes most of this test's time).
    reference, reference_tokenizer = load_model(GGUF)
    text = ["The capital of France is"]
    assert tokenizer(text)["input_ids"] == reference_tokenizer(text)["input_ids"]
    torch.testing.assert_close(_logits(model, tokenizer, text), _logits(reference, reference_tokenizer, text),
                               rtol=0, atol=0)
