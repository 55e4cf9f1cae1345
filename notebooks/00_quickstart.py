# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quickstart: NTPS of a model on a task, layer by layer
#
# The question this page answers, for one model and one labelled task: **which layers carry the
# task, by NTPS, and do linear probes on those layers agree?** It takes five package calls:
#
# 1. `ntps.load_model`: the model and its tokenizer;
# 2. `ntps.load_dataset`: the task's texts and labels (a task name, or your own CSV, JSONL,
#    DataFrame or Hugging Face dataset);
# 3. `ntps.extract_moments`: one forward pass, the four moments NTPS needs at every layer (and,
#    from the same pass, the mean-pooled features a probe needs);
# 4. `ntps.score_layers`: NTPS of every layer at every $k$, the dimension of the autoregressive
#    subspace;
# 5. `ntps.probe_layers`: a logistic-regression probe on every layer, scored on held-out texts.
#
# The book runs it on the CPU with **SmolLM2-135M-Instruct** (a real pretrained Llama-architecture
# model, 30 blocks, width 576, from a PyPI wheel) and the Rotten Tomatoes sentiment task of the
# offline suite. On Colab, choose a hub model (for example `Qwen/Qwen2-0.5B`) in the parameters.

# %% tags=["parameters"]
model_name = "smollm2-135m"  # an offline name, a local folder, or a hub id such as "Qwen/Qwen2-0.5B"
task = "rt_sentiment"  # a task name of ntps.data, or the path of your own .csv / .jsonl file
data_root = None  # folder of the built offline tasks (None: the cache, fetched into on first use)
dtype = "float32"  # "bfloat16" halves memory on a GPU
device = "cpu"  # "cuda" on a GPU
max_length = 64  # tokens per text
batch_size = 16
max_examples_train = None  # None: the task's default cap
max_examples_test = None
results_profile = "cpu"  # whose saved results the closing section reads (the correlation chapter's)
package_source = None  # what Colab pip-installs; `make book` fills it in from _config.yml

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

import ntps
from ntps import evaluate, experiments, probes, score
from ntps.notebooks import page_style

page_style(precision=3, quiet_transformers=True)

# %% [markdown]
# ## 1-2. The model and the task

# %%
start = time.perf_counter()
model, tokenizer = ntps.load_model(model_name, dtype=dtype, device=device)
train = ntps.load_dataset(task, "train", max_examples=max_examples_train, root=data_root)
test = ntps.load_dataset(task, "test", max_examples=max_examples_test, classes=train.classes, root=data_root)
print(f"{model_name}: {model.config.num_hidden_layers} blocks, width d = {model.config.hidden_size} "
      f"(loaded in {time.perf_counter() - start:.1f} s)")
print(f"{task}: {len(train)} training and {len(test)} test texts, classes {list(train.classes)}")
train.texts[:3]

# %% [markdown]
# ## 3. One forward pass: the moments of every layer
#
# `extract_moments` streams the texts through the model once, in batches, and accumulates the four
# second moments of every hidden state ($S_{xx}$, $S_{xy}$, $C_0$, $C_1$: the theory chapter's
# [table of symbols](notation) defines them). With `return_features=True` the same pass also
# returns each text's mean-pooled state at every layer, which is what a linear probe reads. The
# test split is passed through too, for the probe's held-out accuracy.

# %%
start = time.perf_counter()
moments, train_features = ntps.extract_moments(model, tokenizer, train.texts, train.labels, max_length=max_length,
                                               batch_size=batch_size, return_features=True, progress=False)
_, test_features = ntps.extract_moments(model, tokenizer, test.texts, test.labels, num_classes=train.num_classes,
                                        max_length=max_length, batch_size=batch_size, return_features=True,
                                        progress=False)
extract_seconds = time.perf_counter() - start
width, n_texts = moments.hidden_size, moments.n_texts
print(f"{moments}: {moments.n_pairs:,} (prefix, next token) pairs; both splits in {extract_seconds:.1f} s")

# %% [markdown]
# ## 4. NTPS of every layer and every $k$
#
# $k$ is the dimension of the autoregressive subspace: the $k$ directions of a layer that best
# predict the next token's state. NTPS at $k$ is the share of the task's (perception) subspace that
# those $k$ directions capture, between 0 and 1. One decomposition per layer gives every $k$ at
# once.

# %%
start = time.perf_counter()
table = ntps.score_layers(moments)
score_seconds = time.perf_counter() - start
k_default = score.default_k(width)
at_default = table[table.k == k_default].set_index("layer")["ntps"]
p = int(np.linalg.matrix_rank(moments.layer(moments.layers[-1])["sxx"]))
print(f"{len(table):,} (layer, k) values in {score_seconds:.1f} s; rank of the last layer's S_xx: p = {p} "
      f"(N = {n_texts} texts, d = {width})")

# %% [markdown]
# ## 5. Linear probes on the same features, and NTPS beside them
#
# A multinomial logistic regression on each layer's mean-pooled features, trained on the training
# split and scored on the test split: what NTPS is meant to predict without training anything.

# %%
start = time.perf_counter()
probed = ntps.probe_layers(train_features, train.labels, test_features, test.labels, mse=False)
probe_seconds = time.perf_counter() - start
majority = probes.majority_accuracy(train.labels, test.labels)
by_layer = pd.DataFrame({"layer": moments.layers, f"NTPS (k = {k_default})": at_default.reindex(moments.layers),
                         "probe accuracy (test)": probed["test_accuracy"]}).set_index("layer")
best_ntps, best_probe = int(by_layer.iloc[:, 0].idxmax()), int(by_layer.iloc[:, 1].idxmax())
agreement = evaluate.correlation(by_layer.iloc[:, 0], by_layer.iloc[:, 1])

ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if k < width} | {k_default})
heat = table[table.k.isin(ks)].pivot(index="layer", columns="k", values="ntps")
fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.1, 1]})
image = left.imshow(heat.to_numpy(), aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1)
left.set_xticks(range(heat.shape[1]), heat.columns)
left.set(xlabel="k (dimensions of the autoregressive subspace)", ylabel="layer (0 = embeddings)",
         title=f"NTPS of {task}, every layer and k")
fig.colorbar(image, ax=left, fraction=0.05)
right.plot(by_layer.index, by_layer.iloc[:, 0], marker="o", color="C0", label=by_layer.columns[0])
right.set(xlabel="layer", ylabel="NTPS", ylim=(0, 1.02), title="NTPS and probe accuracy by layer")
twin = right.twinx()
twin.plot(by_layer.index, by_layer.iloc[:, 1], marker="s", color="k", ls="--", label="probe accuracy (test)")
twin.axhline(majority, color="0.6", ls=":", lw=1, label="majority class (test)")
twin.set(ylabel="held-out accuracy", ylim=(0, 1.02))
twin.grid(False)
fig.legend(loc="lower center", ncol=3, bbox_to_anchor=(0.72, -0.02), fontsize=9)
fig.tight_layout(rect=(0, 0.06, 1, 1))
plt.show()
by_layer.T.round(3)

# %% [markdown]
# ## How to read it

# %% tags=["remove-input"]
display(Markdown(f"""\
- **The heat map** reads along a row: a layer's NTPS rises with $k$ and reaches 1 once the
  autoregressive subspace holds the whole range of $S_{{xx}}$ (here from about $k = p = {p}$, because
  {n_texts} texts span at most {n_texts} dimensions of the {width}). Only small $k$ discriminates
  between layers; the summaries read it at $k = {k_default}$, a tenth of the width.
- **On this task**, NTPS at $k = {k_default}$ peaks at layer {best_ntps} and the held-out probe at
  layer {best_probe} (accuracy {by_layer.iloc[:, 1].max():.3f}, against {majority:.3f} for always answering
  the majority class). Over the layers the two agree at a Spearman correlation of {agreement:+.2f}.
- **What it does not tell you.** NTPS is an unsupervised-by-the-probe reading of second moments:
  it does not predict accuracy on its own scale, and a high NTPS is not a guarantee that a probe or
  LoRA will do well. How well it ranks layers and tasks on real models is measured, with
  intervals, in the [correlation chapter](03_correlation) and the [LoRA chapter](04_lora).
- **Cost here**: the forward passes took {extract_seconds:.1f} s, NTPS of every layer and $k$
  {score_seconds:.1f} s, and the logistic probes on every layer {probe_seconds:.1f} s.
"""))

# %% [markdown]
# ## Should you use NTPS?
#
# Computed from the book's own results (the correlation and LoRA chapters, profile
# `results_profile`), not written by hand:

# %% tags=["remove-input"]
display(Markdown(experiments.should_you_use_ntps(profile=results_profile)))
