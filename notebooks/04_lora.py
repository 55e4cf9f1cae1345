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
# # Does NTPS predict what LoRA adds?
#
# ## What this page shows
#
# ```{glue:md} findings
# :format: myst
# ```
#
# These statements are computed from the tables further down this page (the cell that writes them
# sits near the end). The symbols are those of the theory chapter's [table of symbols](notation).
#
# ## The question, and how this page tests it
#
# The paper's practical promise is a prescreening tool. Before fine-tuning anything, compute NTPS
# from a few moments of the frozen model's hidden states; a task with a **high** NTPS is one whose
# features already suit it, so fine-tuning should add **little** over a linear probe, and a task
# with a low NTPS is where fine-tuning pays. Its Figure 3 fine-tunes LoRA adapters
# {cite:p}`hu2022lora` on twelve datasets for each of eight models and reports, per model, a
# Spearman correlation between NTPS and minus the gain (gain = LoRA test accuracy - linear-probe
# test accuracy) of 0.40 to 0.90. Its abstract adds a second claim: NTPS **rises** after LoRA
# fine-tuning. And the tool is only worth having if NTPS costs a small fraction of the runs it
# replaces.
#
# This page runs the whole pipeline and tests the three claims:
#
# 1. for each task: NTPS of every layer and k from the frozen model, a logistic-regression probe on
#    the last layer, a LoRA fine-tune with a linear head on the same layer, and the gain;
# 2. the correlation of NTPS (each variant) with minus the gain across tasks, with bootstrap
#    intervals, at a (layer, k) fixed before any gain was seen, and how much that choice matters;
# 3. NTPS of every layer again, from the fine-tuned model with its adapters merged into the weights;
# 4. what each step cost, measured in the run, and the prescreening ratio.
#
# Every number in the prose of this page is computed by a cell of the page. **On the CPU this page
# is a demonstration of the pipeline at a much smaller budget than the paper's** (the next section
# says exactly what is cut, and by how much); the `colab-paper` parameter file runs the paper's
# setting on a GPU.

# %% tags=["parameters"]
model_name = "smollm2-135m"  # an offline name, a local folder, or a hub id such as "Qwen/Qwen2-0.5B"
tasks = ["rt_sentiment", "rt_subjectivity", "debate_party", "fortunes_topic"]  # offline tasks or paper datasets
data_root = None  # folder of the built offline tasks (None: the cache, fetched into on first use)
max_length = 64  # tokens per text, for the moments, the probe and LoRA alike
max_examples_train = None  # texts per task and split; None: the default cap of each task (offline 320 / 160)
max_examples_test = None
batch_size = 16  # texts per forward pass when extracting and evaluating
dtype = "float32"  # "bfloat16" on a GPU
device = "cpu"  # "cuda" on Colab
trust_remote_code = False
feature_layer_stride = 1  # as in the correlation chapter, so that its cached passes are reused
# LoRA (peft) on the attention projections, with a linear head on the mean-pooled last hidden state
lora_rank = 8
lora_alpha = 16
lora_dropout = 0.05
target_modules = None  # None: found per architecture (q/k/v projections for Llama and Qwen2)
optimizer = "adamw"  # or "adafactor" (the paper's)
learning_rate = 3e-3
schedule = "cosine"
warmup_ratio = 0.05
steps = 48  # optimiser updates per task (the training budget)
train_batch_size = 8
group_by_length = True  # batches of similar length: less padding, same texts per window
max_grad_norm = 1.0
lora_autocast = None  # "bfloat16": train under autocast (only where the CPU has native bf16, or on a GPU)
checkpoint_every = 16  # updates between checkpoints (an interrupted run resumes from the last one)
after_lora_tasks = None  # the tasks whose merged model is run again for NTPS after LoRA (None: every task)
seed = 0
# NTPS and the statistics
n_k = 19  # k grid: k_v is round(f d) for f in 1/(n_k+1), ..., n_k/(n_k+1)
fixed_layer_fraction = 0.5  # the configuration fixed in advance, as in the correlation chapter: this
fixed_k_fraction = 0.1  # fraction of the depth for the layer, and of the width for k
probe_C = 1.0  # inverse L2 strength of the logistic probe (standardised features)
n_boot = 2000  # bootstrap resamples of the tasks
confidence = 0.95
results_profile = "cpu"  # the name under which the per-task results are saved (ntps.results)
package_source = None  # what Colab pip-installs; `make book` fills it in from _config.yml

# %%
import time

import IPython
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

import ntps
from ntps import data, evaluate, experiments, lora, paper, probes, results
from ntps.notebooks import page_style
from ntps.score import ntps_grid

page_style(precision=3, quiet_transformers=True)

try:  # the book pastes the findings at the top of the page (MyST-NB glue) ...
    from myst_nb import glue
except ImportError:  # ... elsewhere (Colab) they show where they are computed
    def glue(name, value, display=True):
        IPython.display.display(value)

task_names = list(tasks) if tasks is not None else list(data.OFFLINE_SUITE)
after_names = [t for t in task_names if after_lora_tasks is None or t in after_lora_tasks]
k_fractions = experiments.k_fraction_grid(n_k)
pct = f"{confidence:.0%}"
lora_settings = lora.LoraSettings(  # checked once, here: a bad value fails at the top of the page
    steps=steps, batch_size=train_batch_size, lr=learning_rate, rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout,
    target_modules=target_modules, optimizer=optimizer, schedule=schedule, warmup_ratio=warmup_ratio,
    max_grad_norm=max_grad_norm, group_by_length=group_by_length, checkpoint_every=checkpoint_every, seed=seed,
    autocast=lora_autocast)
interval = evaluate.format_interval
print(f"ntps {ntps.__version__}; model {model_name}; {len(task_names)} tasks: {task_names}")

# %% [markdown]
# ## What this run does, beside the paper
#
# The paper fine-tunes for 5,000 updates of one text each with Adafactor at a learning rate of
# $10^{-4}$, rank-32 adapters on the query, key and value projections (the defaults of the released
# `lora_finetuning.py`; see the [provenance note](provenance)), on twelve datasets of thousands of
# texts, on GPUs. The book is rebuilt on two CPU cores within a fixed time, and a LoRA update of even
# the offline model, SmolLM2-135M-Instruct, is slow there (the cost section below measures it). So
# the CPU profile cuts, and says so:
#
# * **tasks**: eight of the fourteen offline tasks, chosen before any gain was seen to cover the
#   kinds of task the suite has: two sentiment tasks (film snippets, food reviews), subjectivity,
#   two stance tasks (debates, conventions), a six-way and a seven-way topic task (fortunes,
#   manual sections) and a four-way era task (State of the Union addresses);
# * **budget**: a few dozen updates of a batch of 8 texts (a few hundred texts seen, about one
#   pass over each training split) instead of 5,000 updates of one text, with AdamW at a larger
#   learning rate to make the most of it; batches group texts of similar length to waste less on
#   padding;
# * **data**: each task's default cap of 320 training and 160 test texts, truncated to
#   `max_length` tokens: the very texts the correlation chapter uses, so its cached forward passes
#   serve this page too.
#
# A LoRA run this short is **under-trained**, and the gains below say more about how far a short
# run gets than about what LoRA can add. What the page can show on the CPU is that the pipeline
# works end to end, what each step costs, and how little eight tasks can tell about a correlation.

# %%
paper_updates, paper_batch = 5000, 1  # the released lora_finetuning.py: n_steps and batch_size
paper_row = {"model": "Qwen2, OpenELM, Llama-3 (0.27B-8B)", "tasks": "12 hub datasets",
             "texts (train / test)": "full splits", "LoRA rank / alpha / dropout": "32 / 32 / 0.05",
             "adapted modules": "q, k, v projections", "optimiser": "Adafactor, lr 1e-4, cosine, 5% warm-up",
             "updates x batch": f"{paper_updates} x {paper_batch}"}
this_row = {"model": model_name, "tasks": f"{len(task_names)}: {', '.join(task_names)}",
            "texts (train / test)": f"{max_examples_train or 'default cap'} / {max_examples_test or 'default cap'}, "
                                    f"max {max_length} tokens",
            "LoRA rank / alpha / dropout": f"{lora_rank} / {lora_alpha:g} / {lora_dropout:g}",
            "adapted modules": "found per architecture" if target_modules is None else ", ".join(target_modules),
            "optimiser": f"{optimizer}, lr {learning_rate:g}, {schedule}, {warmup_ratio:.0%} warm-up",
            "updates x batch": f"{steps} x {train_batch_size}" + (" (grouped by length)" if group_by_length else "")}
pd.DataFrame({"paper (Figure 3)": paper_row, "this run": this_row})

# %% tags=["remove-input"]
texts_seen, paper_texts_seen = steps * train_batch_size, paper_updates * paper_batch
display(Markdown(f"Texts seen in training, per task: {paper_texts_seen:,} in the paper's protocol, {texts_seen:,} here "
                 f"({paper_texts_seen / texts_seen:.1f} times fewer); here each text is also truncated to "
                 f"{max_length} tokens."))

# %% [markdown]
# ## Before fine-tuning: moments, NTPS and the probe
#
# `ntps.experiments.run_statistics` runs the frozen model once over each split and keeps the NTPS
# moments of every layer and the mean-pooled features of the same pass, cached on disk (the
# correlation chapter fills the same cache). From the training split's moments,
# `ntps.experiments.ntps_table` computes NTPS of every layer and k in the theorem-consistent and
# spectral variants, and the released code's variant at the fixed configuration only (it costs
# more, and its k means something else, see the theory chapter).
#
# The probe is a logistic regression (`ntps.probes.logistic_probe`) on the **last** layer's
# mean-pooled features, trained on the training split and scored on the test split: the features
# the LoRA classifier's head reads, before the adapters change them. The gain is therefore what
# adapting the model adds over a linear read-out of the very same representation.

# %%
run = experiments.run_statistics([model_name], task_names, max_examples={"train": max_examples_train,
                                 "test": max_examples_test}, max_length=max_length, data_root=data_root,
                                 batch_size=batch_size, dtype=dtype, device=device,
                                 trust_remote_code=trust_remote_code, feature_stride=feature_layer_stride)
train, test = run.train[model_name], run.test[model_name]  # the test split keeps only its features
first = train[task_names[0]].moments
depth, width, last_layer = first.num_layers, first.hidden_size, first.layers[-1]
fixed_layer = int(round(fixed_layer_fraction * (depth - 1)))
fixed_k = float(experiments.nearest(k_fractions, fixed_k_fraction))
feature_layers = train[task_names[0]].info["feature_layers"]
if last_layer not in feature_layers:
    raise ValueError(f"the cached features skip the last layer {last_layer} (feature_layer_stride = "
                     f"{feature_layer_stride}); choose a stride that keeps it")
last_position = feature_layers.index(last_layer)

before, before_timing = experiments.ntps_table({t: s.moments for t, s in train.items()}, k_fractions=k_fractions,
                                               reference_fractions=[fixed_k], reference_layers=[fixed_layer])
before, dropped_fractions = experiments.below_rank(before)  # at k >= p every encoder scores 1
k_fractions = np.array(sorted(before.loc[before.variant == "theorem", "k_fraction"].unique()))
probe_rows = []
for task in task_names:
    began = time.perf_counter()
    fit = probes.logistic_probe(train[task].features[:, last_position], train[task].labels,
                                test[task].features[:, last_position], test[task].labels, C=probe_C,
                                num_classes=train[task].moments.num_classes)
    probe_rows.append({"task": task, "probe_test_accuracy": fit.test_accuracy,
                       "probe_correct": np.asarray(fit.test_predictions) == test[task].labels,
                       "probe_train_accuracy": fit.train_accuracy, "probe_converged": fit.converged,
                       "probe_seconds": time.perf_counter() - began})
probe = pd.DataFrame(probe_rows).set_index("task")
# What prescreening needs from the moments: one layer's whole k grid, from one decomposition.
score_seconds = {}
for task in task_names:
    began = time.perf_counter()
    ntps_grid(**train[task].moments.layer(fixed_layer))
    score_seconds[task] = time.perf_counter() - began
train = {t: s._replace(moments=None) for t, s in train.items()}  # the scores are computed: free the moments
del first
extraction = run.extraction
print(f"{model_name}: hidden states 0..{depth - 1} (0 = embeddings), width d = {width}; "
      f"fixed in advance: layer {fixed_layer}, k = {fixed_k:.2f} d = {int(round(fixed_k * width))}; "
      f"probe and LoRA head on layer {last_layer}")
extraction.pivot(index="task", columns="split", values=["texts", "tokens", "seconds", "cached"])

# %% [markdown]
# ## Fine-tuning
#
# `ntps.lora.fine_tune_task` does one task end to end: it loads the same texts, fine-tunes
# (`ntps.lora.train_lora`: `peft` LoRA adapters on the attention projections found for the
# architecture, a linear head on the mean-pooled last hidden state, cross-entropy, a fixed number
# of updates, seeded), scores the test split (`ntps.lora.lora_accuracy`), merges the adapters into the
# weights (`ntps.lora.merge_adapter`, `merge_and_unload`) and extracts the moments of the merged model on the
# training texts, for NTPS after LoRA. Everything is cached (safetensors and JSON), training
# checkpoints included, so an interrupted run resumes where it stopped and a finished one is read
# back in milliseconds; the seconds reported are those measured when it ran.

# %%
source = experiments.ModelSource(model_name, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
runs, after_tables, after_timings = {}, [], []
for task in task_names:
    run = lora.fine_tune_task(model_name, task, lora_settings, model=source, max_length=max_length,
                              max_examples_train=max_examples_train, max_examples_test=max_examples_test,
                              data_root=data_root, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                              batch_size_eval=batch_size, after_layers=None if task in after_names else [])
    if run.after is not None:  # NTPS of every layer and k after LoRA, from the merged model's moments (below)
        table, timing = experiments.ntps_table({task: run.after}, k_fractions=k_fractions,
                                               variants=("theorem", "spectral"))
        after_tables.append(experiments.below_rank(table)[0])
        after_timings.append(timing)
    runs[task] = run._replace(after=None)  # keep the scores, free the moments
source.release()
info = runs[task_names[0]].info
print(f"adapted modules: {info['target_modules']}; trainable parameters (adapters + head): "
      f"{info['trainable_parameters']:,} for the first task")
outcome = pd.DataFrame([{
    "task": task, "classes": len(run.info["classes"]), "train texts": run.info["n_train"],
    "test texts": run.info["n_test"],
    "majority class (test)": probes.majority_accuracy(train[task].labels, test[task].labels),
    "probe accuracy": probe.loc[task, "probe_test_accuracy"], "LoRA accuracy": run.test_accuracy,
    "final loss (mean of last 10%)": float(np.mean(run.losses[-max(1, len(run.losses) // 10):])),
    "cached": run.info["cached"]} for task, run in runs.items()]).set_index("task")
gains = {task: lora.gain_bootstrap(np.asarray(run.info["test_predictions"]) == test[task].labels,
                                   probe.loc[task, "probe_correct"], n_boot=n_boot, confidence=confidence, seed=seed)
         for task, run in runs.items()}
outcome["gain"], outcome["gain low"], outcome["gain high"] = (outcome.index.map(lambda t, i=i: gains[t][i])
                                                              for i in range(3))
outcome

# %% [markdown]
# The training loss of every update (faint) and its running mean over a tenth of the run. The
# first updates of a cosine schedule with warm-up are small; a loss still falling at the end means
# the run stopped early.

# %%
curves = pd.concat([pd.DataFrame({"task": task, "update": np.arange(1, len(run.losses) + 1), "loss": run.losses})
                    for task, run in runs.items()], ignore_index=True)
window = max(1, steps // 10)
curves["running mean"] = curves.groupby("task")["loss"].transform(lambda s: s.rolling(window, min_periods=1).mean())
fig, ax = plt.subplots(figsize=(8, 4))
palette = dict(zip(task_names, sns.color_palette("tab10", len(task_names))))
sns.lineplot(data=curves, x="update", y="loss", hue="task", palette=palette, alpha=0.25, lw=1, legend=False, ax=ax)
sns.lineplot(data=curves, x="update", y="running mean", hue="task", palette=palette, lw=2.2, ax=ax)
for task in task_names:
    ax.axhline(np.log(len(runs[task].info["classes"])), color=palette[task], ls=":", lw=0.9)
ax.set(title=f"LoRA training loss ({steps} updates of {train_batch_size} texts; dotted: chance, log C)",
       xlabel="update", ylabel="cross-entropy")
ax.legend(title=None, fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The gain
#
# Gain = LoRA test accuracy - probe test accuracy, on the same test texts. The error bars are
# paired bootstrap intervals (at the `confidence` level) over the test texts
# (`ntps.lora.gain_bootstrap`): each resample draws test texts with replacement and scores both
# classifiers on the same draw, so the interval accounts for the two classifiers being right and
# wrong on many of the same texts. It says how large a gain the size of the test split alone can
# produce.

# %%
fig, ax = plt.subplots(figsize=(7.5, 3.8))
order = list(outcome.index)
sns.barplot(x=order, y=outcome["gain"].to_numpy(), hue=order, palette=palette, legend=False, ax=ax)
ax.errorbar(np.arange(len(order)), outcome["gain"], yerr=[outcome["gain"] - outcome["gain low"],
                                                            outcome["gain high"] - outcome["gain"]],
            fmt="none", ecolor="k", capsize=4, lw=1.2)
ax.axhline(0, color="k", lw=0.8)
ax.set(title=f"LoRA gain over the last-layer probe ({pct} interval, test split)", ylabel="gain (accuracy)",
       xlabel="")
fig.tight_layout()
plt.show()
excludes_zero = int(((outcome["gain low"] > 0) | (outcome["gain high"] < 0)).sum())
print(f"gains from {outcome['gain'].min():+.3f} to {outcome['gain'].max():+.3f}; the interval excludes 0 for "
      f"{excludes_zero} of {len(outcome)} tasks")

# %% [markdown]
# ## Does NTPS predict the gain?
#
# The paper's convention: correlate NTPS with **minus** the gain, so that a positive correlation is
# agreement (high NTPS, small gain). `ntps.experiments.selection_table` does it for each NTPS
# variant under three ways of choosing the (layer, k) at which NTPS is read:
#
# * **fixed in advance**, this page's main answer: the rule of the correlation chapter, the
#   middle layer and k at a tenth of the width, chosen before any gain was seen;
# * **in-sample**: the (layer, k) whose correlation over these same tasks is largest, as the paper
#   chose its configuration (optimistic by construction);
# * **leave-one-task-out**: each task is scored at the configuration chosen on the others.
#
# The released variant's value is not a function of the moments alone (its basis is picked by
# round-off, see the correlation chapter): it can differ between two machines, or two BLAS thread
# counts, on the same data.
#
# The intervals are percentile bootstrap intervals over tasks (`ntps.evaluate.correlations`). With
# the eight tasks of the CPU page, Spearman's coefficient can take only a few dozen values (the
# cell below prints how many), a resample of eight tasks usually repeats some, and no interval can
# be narrow: **a correlation on the CPU page is weak evidence**, whichever way it points, unless its
# interval excludes 0. That is a property of eight points, not of NTPS.

# %%
minus_gain = before[["task", "layer"]].drop_duplicates().assign(
    minus_gain=lambda f: -f["task"].map(outcome["gain"]))
summary, selections = experiments.selection_table(before, minus_gain, targets={"minus_gain": True},
                                                    fixed_layer=fixed_layer, fixed_k_fraction=fixed_k,
                                                    n_boot=n_boot, confidence=confidence, seed=seed)
rules = ["fixed", "in-sample", "leave-one-task-out"]
summary["Spearman [CI]"] = summary.apply(interval, axis=1)
table = summary.pivot(index="score", columns="rule", values="Spearman [CI]").reindex(columns=rules)
notes = summary.groupby("score")["note"].first()
if notes.astype(bool).any():
    table["note"] = notes
n_tasks = len(task_names)
print(f"Spearman of NTPS with minus the gain over {n_tasks} tasks, {pct} bootstrap intervals; fixed: layer "
      f"{fixed_layer}, k = {fixed_k:.2f} d. With {n_tasks} tasks Spearman takes {n_tasks * (n_tasks**2 - 1) // 6 + 1} "
      f"possible values.")
table

# %%
variants = [v for v in ("theorem", "spectral", "reference") if v in set(before["variant"])]
fig, axes = plt.subplots(1, len(variants), figsize=(4.6 * len(variants), 4.0), squeeze=False)
for ax, variant in zip(axes.ravel(), variants):
    part = before[(before.variant == variant) & (before.layer == fixed_layer) & np.isclose(before.k_fraction, fixed_k)]
    points = part.set_index("task")["ntps"].reindex(task_names).to_frame().join(outcome[["gain", "gain low",
                                                                                         "gain high"]])
    ax.errorbar(points["ntps"], points["gain"], yerr=[points["gain"] - points["gain low"],
                                                      points["gain high"] - points["gain"]],
                fmt="none", ecolor="0.6", lw=1, capsize=3, zorder=1)
    sns.scatterplot(x=points["ntps"], y=points["gain"], hue=points.index, palette=palette, s=90, ax=ax,
                    legend=ax is axes[0, 0], zorder=2)
    row = summary[(summary.score == f"ntps:{variant}") & (summary.rule == "fixed")]
    title = interval(row.iloc[0]) if len(row) else "undefined"
    ax.axhline(0, color="k", lw=0.8)
    ax.set(title=f"{variant}: Spearman(NTPS, -gain)\n{title}", xlabel=f"NTPS ({variant}), layer {fixed_layer}, "
           f"k = {fixed_k:.2f} d", ylabel="LoRA gain")
if axes[0, 0].get_legend() is not None:
    axes[0, 0].legend(fontsize=8, title=None)
fig.suptitle(f"NTPS before fine-tuning against the LoRA gain, {len(task_names)} tasks (fixed configuration)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### How much the choice of (layer, k) matters
#
# The same correlation at every layer and k (theorem-consistent NTPS): the map the in-sample rule
# searches. The fixed configuration is boxed. The cells are not independent tests: wherever NTPS
# orders the tasks the same way, they repeat one comparison of the same few points, so a map of one
# colour says that the order of the tasks by NTPS hardly depends on (layer, k), not that the
# correlation is established. Where the sign flips from one cell to the next, the value read at any
# single cell is mostly chance.

# %%
theorem = before[before.variant == "theorem"].merge(minus_gain, on=["task", "layer"])
grid = evaluate.config_correlations(theorem, score="ntps", target="minus_gain", config=["layer", "k_fraction"])
heat = grid["correlation"].unstack("k_fraction")
undefined = [f for f in heat.columns if heat[f].isna().all()]
heat = heat.drop(columns=undefined)
fig, ax = plt.subplots(figsize=(1.0 + 0.55 * heat.shape[1] + 1.5, max(3.0, 0.2 * len(heat) + 1.4)))
sns.heatmap(heat, cmap="RdBu_r", vmin=-1, vmax=1, center=0, ax=ax, cbar_kws={"label": "Spearman(NTPS, -gain)"},
            xticklabels=[f"{f:.2f}" for f in heat.columns])
row_pos = list(heat.index).index(fixed_layer)
col_pos = int(np.argmin(np.abs(np.asarray(heat.columns, dtype=float) - fixed_k)))
ax.add_patch(plt.Rectangle((col_pos, row_pos), 1, 1, fill=False, edgecolor="k", lw=2))
ax.invert_yaxis()
ax.grid(False)
ax.set(title=f"theorem-consistent NTPS against minus the gain, every (layer, k), {len(task_names)} tasks",
       xlabel="k / d", ylabel="layer")
fig.tight_layout()
plt.show()
values = grid["correlation"].dropna()
if undefined:  # NTPS takes one value for every task there: no correlation is defined
    flat = before[(before.variant == "theorem") & before.k_fraction.isin(undefined)]["ntps"]
    n_train_min = min(stats.info["n_texts"] for stats in train.values())
    why = (f"; the {n_train_min} training texts span at most {n_train_min} of the {width} dimensions, and V then "
           "covers their whole span") if n_train_min < width else ""
    print(f"k / d >= {min(undefined):.2f} left out: there NTPS lies in [{flat.min():.6f}, {flat.max():.6f}] on every "
          f"task and layer{why}")
share_positive, share_negative = float(np.mean(values > 0)), float(np.mean(values < 0))
at_last = grid["correlation"].get((last_layer, fixed_k), np.nan)
print(f"over {len(values)} configurations with a defined correlation: {share_positive:.0%} positive, "
      f"{share_negative:.0%} negative, {values.nunique()} distinct values; at the last layer (k = {fixed_k:.2f} d): "
      + (f"{at_last:+.2f}" if np.isfinite(at_last) else "undefined"))

# %% [markdown]
# ## NTPS after LoRA
#
# The abstract says NTPS increases after LoRA fine-tuning. The moments of the merged model on the
# same training texts give NTPS of every layer again; the adapters change only the attention's
# query, key and value maps, yet every later layer moves with them. To fit the CPU budget, the
# merged model is run again only on the tasks in `after_lora_tasks` (on the CPU page, the first
# four). Below, one column per task: the theorem-consistent NTPS along the depth before (solid)
# and after (dashed) fine-tuning, at the fixed k of a tenth of the width and at a larger k (top, on
# a zoomed scale), and the change, after minus before (bottom).

# %%
after = pd.concat(after_tables, ignore_index=True)
both = pd.concat([before[before.variant != "reference"].assign(model="before LoRA"), after.assign(model="after LoRA")],
                 ignore_index=True)
at_k = both[np.isclose(both.k_fraction, fixed_k)]
small_k = fixed_k  # the findings read the change at the fixed k, far from NTPS's ceiling of 1
shown_k = sorted({fixed_k, float(experiments.nearest(k_fractions, 0.3))})
theorem_both = both[(both.variant == "theorem") & both.k_fraction.apply(lambda f: bool(np.isclose(f, shown_k).any()))]
columns = min(4, len(after_names))
groups = [after_names[i:i + columns] for i in range(0, len(after_names), columns)]
fig, axes = plt.subplots(2 * len(groups), columns, figsize=(4.2 * columns, 5.6 * len(groups)), squeeze=False,
                         sharex=True)
k_colours = dict(zip(shown_k, ["C2", "C0"]))
for g, group in enumerate(groups):
    for j in range(columns):
        top, bottom = axes[2 * g, j], axes[2 * g + 1, j]
        if j >= len(group):
            top.axis("off")
            bottom.axis("off")
            continue
        task = group[j]
        for f in shown_k:
            part = theorem_both[(theorem_both.task == task) & np.isclose(theorem_both.k_fraction, f)]
            wide = part.pivot_table(index="layer", columns="model", values="ntps")
            top.plot(wide.index, wide["before LoRA"], color=k_colours[f], lw=1.8, label=f"before, k = {f:.2f} d")
            top.plot(wide.index, wide["after LoRA"], color=k_colours[f], lw=1.4, ls="--", label=f"after, k = {f:.2f} d")
            bottom.plot(wide.index, wide["after LoRA"] - wide["before LoRA"], color=k_colours[f], lw=1.6,
                        label=f"k = {f:.2f} d")
        bottom.axhline(0, color="k", lw=0.8)
        for ax in (top, bottom):
            ax.axvline(fixed_layer, color="0.6", lw=0.8, ls=":")
        top.set(title=task, ylabel="NTPS (theorem)" if j == 0 else "")
        bottom.set(xlabel="layer", ylabel="after - before" if j == 0 else "")
handles, labels = axes[0, 0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9, bbox_to_anchor=(0.5, -0.01))
fig.suptitle("NTPS before and after LoRA along the depth (dotted: the fixed layer)")
fig.tight_layout(rect=(0, 0.05, 1, 1))
plt.show()

# %%
pieces = {}
for f in shown_k:
    wide = theorem_both[np.isclose(theorem_both.k_fraction, f)].pivot_table(index=["task", "layer"], columns="model",
                                                                            values="ntps")
    delta = wide["after LoRA"] - wide["before LoRA"]
    pieces[f"k = {f:.2f} d"] = pd.DataFrame({
        f"before, layer {fixed_layer}": wide["before LoRA"].xs(fixed_layer, level="layer"),
        f"after, layer {fixed_layer}": wide["after LoRA"].xs(fixed_layer, level="layer"),
        f"change, layer {last_layer}": delta.xs(last_layer, level="layer"),
        "mean change over layers": delta.groupby("task").mean(),
        "share of layers where it rises": delta.groupby("task").apply(lambda c: float((c > 0).mean())),
    })
change = pd.concat(pieces, axis=1).reindex(after_names)
change

# %% [markdown]
# ## What prescreening costs
#
# The point of NTPS is to skip the runs it predicts. For each task, the steps and what they cost
# in seconds, measured when each was computed (cached steps report their original time; the
# forward passes are shared with the correlation chapter):
#
# * **NTPS**: the forward pass over the training split with the moments of every layer (the
#   moments of one layer would be enough; all are extracted here, so this is an upper bound), and
#   the scores of one layer at every k;
# * **probe**: the forward passes over both splits for the features (the same passes), and the
#   logistic fit;
# * **LoRA**: the training and the scoring of the test split.
#
# The prescreening ratio is NTPS's cost over the cost of the probe and LoRA together; the
# extraction of the merged model's moments, needed only to study NTPS after LoRA, is listed apart.

# %%
cost = pd.DataFrame({
    "NTPS: forward + moments (train)": {t: train[t].info["extract_seconds"] for t in task_names},
    "NTPS: one layer, every k": score_seconds,
    "probe: forward (train + test)": {t: train[t].info["extract_seconds"] + test[t].info["extract_seconds"]
                                      for t in task_names},
    "probe: logistic fit": probe["probe_seconds"].to_dict(),
    "LoRA: training": {t: runs[t].info["train_seconds"] for t in task_names},
    "LoRA: test scoring": {t: runs[t].info["evaluate_seconds"] for t in task_names},
    "(after LoRA: merged-model moments)": {t: runs[t].info["after_extract_seconds"] for t in task_names},
}).reindex(task_names)
cost["NTPS total"] = cost["NTPS: forward + moments (train)"] + cost["NTPS: one layer, every k"]
cost["probe + LoRA total"] = cost[["probe: forward (train + test)", "probe: logistic fit", "LoRA: training",
                                   "LoRA: test scoring"]].sum(axis=1)
cost["prescreening ratio"] = cost["NTPS total"] / cost["probe + LoRA total"]
cost.loc["all tasks"] = cost.drop(columns="prescreening ratio").sum()
cost.loc["all tasks", "prescreening ratio"] = cost.loc["all tasks", "NTPS total"] / \
    cost.loc["all tasks", "probe + LoRA total"]
seconds_per_update = float(np.mean([runs[t].info["train_seconds"] / steps for t in task_names]))
tokens_per_second = extraction["tokens"].sum() / extraction["seconds"].sum()
cost.round(3)

# %%
fig, ax = plt.subplots(figsize=(8, 4.2))
stack = cost.drop(index="all tasks")[["NTPS total", "probe: forward (train + test)", "probe: logistic fit",
                                      "LoRA: training", "LoRA: test scoring"]]
left = np.zeros(len(stack))
for colour, column in zip(["C0", "0.75", "0.55", "C3", "C1"], stack.columns):
    ax.barh(stack.index, stack[column], left=left, color=colour, label=column)
    left += stack[column].to_numpy()
ax.invert_yaxis()
ax.set(xlabel="seconds", title=f"What each step cost (prescreening ratio over all tasks: "
       f"{cost.loc['all tasks', 'prescreening ratio']:.2f})")
fig.legend(fontsize=8, loc="lower center", ncol=3)
fig.tight_layout(rect=(0, 0.12, 1, 1))
plt.show()
print(f"one LoRA update of {train_batch_size} texts: {seconds_per_update:.2f} s; forward passes: "
      f"{tokens_per_second:.0f} tokens/s; the paper's budget ({paper_updates} updates of {paper_batch} text) would "
      f"take at least {paper_texts_seen / train_batch_size * seconds_per_update / 3600:.1f} h per task here")

# %% tags=["remove-input"]
# The findings shown at the top of the page ("What this page shows"), composed from the tables above.
fixed_rows = summary[summary.rule == "fixed"].set_index("score")
t_fix = fixed_rows.loc["ntps:theorem"]
t_in = summary[(summary.score == "ntps:theorem") & (summary.rule == "in-sample")].iloc[0]
t_out = summary[(summary.score == "ntps:theorem") & (summary.rule == "leave-one-task-out")].iloc[0]
fixed_col, small_col = f"k = {fixed_k:.2f} d", f"k = {small_k:.2f} d"
rises_fixed = change[(fixed_col, f"after, layer {fixed_layer}")] - change[(fixed_col, f"before, layer {fixed_layer}")]
rises_small = change[(small_col, "mean change over layers")]
rises_small_last = change[(small_col, f"change, layer {last_layer}")]
small_before = theorem_both[np.isclose(theorem_both.k_fraction, small_k) & (theorem_both.model == "before LoRA")]
small_range = (float(small_before["ntps"].min()), float(small_before["ntps"].max()))
widths = (summary["high"] - summary["low"]).dropna()
width_fixed = float((fixed_rows["high"] - fixed_rows["low"]).dropna().mean()) if fixed_rows["high"].notna().any() \
    else float("nan")
width_median = float(widths.median()) if len(widths) else float("nan")
spread_between_tasks = float(np.ptp(change[(fixed_col, f"before, layer {fixed_layer}")]))
forward_share = float(cost.loc["all tasks", "NTPS: forward + moments (train)"] / cost.loc["all tasks", "NTPS total"])
lines = [
    f"- **The gains.** After {steps} updates, LoRA's test accuracy minus the last-layer probe's ranges from "
    f"{outcome['gain'].min():+.3f} to {outcome['gain'].max():+.3f} over {len(task_names)} tasks "
    f"(mean {outcome['gain'].mean():+.3f}); the {pct} interval of the gain excludes 0 for {excludes_zero} of them. "
    + ("LoRA beats the probe on no task: at this budget the fine-tune is under-trained, and the gain measures "
       "that more than what the adapters could add." if (outcome["gain"] <= 0).all() else
       f"LoRA beats the probe on {int((outcome['gain'] > 0).sum())} task(s)."),
    f"- **NTPS against the gain.** At the configuration fixed in advance (layer {fixed_layer}, k = {fixed_k:.2f} d), "
    f"Spearman(NTPS, -gain) is {interval(t_fix)} for the theorem-consistent score, "
    + ", ".join(f"{interval(fixed_rows.loc[s])} for the {s.split(':')[1]} score" for s in fixed_rows.index
                if s != "ntps:theorem")
    + f". Chosen in-sample, the best configuration reaches {interval(t_in)}; chosen without the task it "
    f"scores, {interval(t_out)}. Over every (layer, k) the correlation is positive at {share_positive:.0%} of "
    f"the configurations and negative at {share_negative:.0%} ({values.nunique()} distinct values: the "
    "configurations mostly repeat one ordering of the same tasks). "
    + (f"With {len(task_names)} tasks none of this is evidence either way: the intervals at the fixed "
       f"configuration span {width_fixed:.1f} of the 2 units of [-1, 1]." if n_tasks < 8 else
       f"The median interval is {width_median:.2f} wide; only an interval that excludes 0 under the fixed or "
       "held-out rule would be evidence."),
    f"- **NTPS after LoRA.** At the fixed configuration (layer {fixed_layer}, k = {fixed_k:.2f} d) NTPS rises on "
    f"{int((rises_fixed > 0).sum())} of {len(rises_fixed)} tasks (changes {rises_fixed.min():+.3f} to "
    f"{rises_fixed.max():+.3f}; for scale, the tasks differ by up to {spread_between_tasks:.3f} there before "
    f"fine-tuning). At k = {small_k:.2f} d, where NTPS before fine-tuning lies between {small_range[0]:.2f} and "
    f"{small_range[1]:.2f} (further from its ceiling of 1), the change averaged over layers is "
    f"positive on {int((rises_small > 0).sum())} of {len(rises_small)} tasks ({rises_small.min():+.3f} to "
    f"{rises_small.max():+.3f}), and at the last layer, the one the head reads, {rises_small_last.min():+.3f} to "
    f"{rises_small_last.max():+.3f}. "
    + (f"That is the direction the abstract describes, after only {steps} updates; with {len(after_names)} tasks and "
       "one seed it is an observation, not a test." if (rises_small > 0).all() else
       f"The abstract's claim does not hold uniformly here; after only {steps} updates this is a weak test of it."),
    f"- **Cost.** NTPS took {cost.loc['all tasks', 'NTPS total']:.1f} s for {len(task_names)} tasks, "
    f"{forward_share:.1%} of it the forward pass; the probe and the LoRA runs "
    f"{cost.loc['all tasks', 'probe + LoRA total']:.1f} s: a "
    f"prescreening ratio of {cost.loc['all tasks', 'prescreening ratio']:.2f}. The ratio shrinks as the fine-tuning "
    f"budget grows: at the paper's {paper_updates} updates of {paper_batch} text a LoRA run would take at least "
    f"{paper_texts_seen / train_batch_size * seconds_per_update / 3600:.1f} h per task on this machine (one update of "
    f"{train_batch_size} texts took {seconds_per_update:.2f} s here), against "
    f"{cost.loc['all tasks', 'NTPS total'] / len(task_names):.1f} s per task for NTPS.",
]
glue("findings", Markdown("\n".join(lines)), display=False)

# %% [markdown]
# The per-task results are saved (`ntps.results`) for the chapter that sets the companion's numbers
# beside the paper's, with NTPS read at the fixed configuration.

# %%
records = []
for task in task_names:
    at_fixed = before[(before.task == task) & (before.layer == fixed_layer) & np.isclose(before.k_fraction, fixed_k)]
    record = {"model": model_name, "task": task, "selection": "fixed",
              "ntps": float(at_fixed.loc[at_fixed.variant == "theorem", "ntps"].iloc[0]),
              "lora_test_accuracy": float(outcome.loc[task, "LoRA accuracy"]),
              "linear_probe_test_accuracy": float(outcome.loc[task, "probe accuracy"]),
              "gain": float(outcome.loc[task, "gain"]), "gain_low": float(outcome.loc[task, "gain low"]),
              "gain_high": float(outcome.loc[task, "gain high"]),
              "ntps_after": float(change.loc[task, (fixed_col, f"after, layer {fixed_layer}")])
              if task in after_names else None}
    for variant in ("spectral", "reference"):
        values = at_fixed.loc[at_fixed.variant == variant, "ntps"]
        record[f"ntps_{variant}"] = float(values.iloc[0]) if len(values) else None
    records.append(record)
saved = results.save_table("lora", records, profile=results_profile, meta={
    "model": model_name, "layer": fixed_layer, "k_fraction": fixed_k, "steps": steps,
    "lora": lora_settings.to_dict(), "ntps_version": ntps.__version__})
print(f"saved {len(records)} records as 'lora' ({results_profile})")

# %% [markdown]
# ## Running the paper's setting
#
# The `colab-paper` parameter file runs the paper's protocol on a GPU: Qwen2-0.5B in bfloat16 over
# the paper's twelve hub datasets, rank-32 adapters with alpha 32 and dropout 0.05 on the query,
# key and value projections, Adafactor at a learning rate of $10^{-4}$ with a cosine schedule and
# 5% warm-up, 5,000 updates of one text, and the text caps of the correlation chapter's paper
# profile (so that its cached forward passes are shared). Set `model_name` to another of the
# paper's models for its row of Figure 3 (OpenELM needs `trust_remote_code = True`). With twelve
# tasks the intervals are narrower but still wide; the chapter on the paper's own numbers computes
# them for the published values.
#
# For reference, the Spearman correlations of NTPS with minus the gain printed in the paper's
# Figure 3 (`ntps.paper`), one per model:

# %%
display(pd.Series({paper.MODEL_LABELS[m]: v for m, v in paper.PRINTED_SPEARMAN["3"].items()},
                  name="printed Spearman(NTPS, -gain), Fig. 3").to_frame().T)
