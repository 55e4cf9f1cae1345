"""ntps: the Next Token Perception Score of a causal LM's layers, from one forward pass.

The whole job in six calls (each documented, with a runnable example)::

    model, tokenizer = ntps.load_model("smollm2-135m")          # offline name, folder or hub id
    train = ntps.load_dataset("reviews.csv")                     # a task name, CSV/JSONL, DataFrame
    moments = ntps.extract_moments(model, tokenizer, train.texts, train.labels)
    table = ntps.score_layers(moments)                           # NTPS of every layer and k
    ntps.probe_layers(features_train, y_train, features_test, y_test)   # linear probes, every layer

``k`` is always the dimension of the autoregressive subspace, an absolute number; where a
fraction of the width is meant, the name says so (``k_fraction``). Everything else lives in the
modules: ``ntps.score`` (the closed form), ``ntps.bounds``, ``ntps.peers``, ``ntps.lora``,
``ntps.evaluate``, ``ntps.experiments`` (the cached pipeline of the book's chapters).
"""

__version__ = "0.1.0"

# Public name -> module that defines it. Imported on first use, so that `import ntps` (and the
# command line) stay fast: torch and transformers load only when a model is needed.
_ENTRY_POINTS = {
    "load_model": "ntps.models",
    "load_dataset": "ntps.data",
    "TextDataset": "ntps.data",
    "ExtractionSettings": "ntps.extract",
    "extract_moments": "ntps.extract",
    "Moments": "ntps.moments",
    "score_layers": "ntps.score",
    "probe_layers": "ntps.probes",
}
__all__ = [*_ENTRY_POINTS, "__version__"]
_SUBMODULES = ("bounds", "cache", "data", "evaluate", "experiments", "extract", "features", "lora", "models",
               "moments", "notebooks", "paper", "peers", "probes", "results", "score", "synthetic", "tiny")


def __getattr__(name):
    import importlib

    if name in _ENTRY_POINTS:
        value = getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:  # `ntps.score.default_k` works after a bare `import ntps`
        return importlib.import_module(f"ntps.{name}")
    raise AttributeError(f"module 'ntps' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
