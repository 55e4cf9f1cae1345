"""Hidden states of every layer for a batch of texts, and mean pooling over real tokens.

These are the plain building blocks; the streaming moment extraction builds on the same
conventions: layer 0 is the embedding output (as in ``output_hidden_states``), and the
attention mask decides which tokens are real (special tokens the tokenizer adds included).
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["resolve_device", "hidden_states", "mean_pool"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) means the first GPU when there is one, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def hidden_states(model, tokenizer, texts: Sequence[str], *, max_length: int | None = None):
    """Run one forward pass and return ``(states, attention_mask)``.

    states: tensor [L+1, B, T, d] on the model's device (layer 0 = embedding output).
    attention_mask: tensor [B, T], 1 for real tokens.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string; wrap it in a list")
    if len(texts) == 0:
        raise ValueError("no texts given: pass at least one string")
    device = next(model.parameters()).device
    batch = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=max_length is not None,
                      max_length=max_length)
    if batch["attention_mask"].sum(dim=1).min() == 0:
        empty = [i for i, n in enumerate(batch["attention_mask"].sum(dim=1).tolist()) if n == 0]
        raise ValueError(f"texts at positions {empty} tokenise to nothing; drop or fill them")
    batch = {name: value.to(device) for name, value in batch.items()}
    output = model(**batch, output_hidden_states=True, use_cache=False)
    if getattr(output, "hidden_states", None) is None:
        raise ValueError(f"{type(model).__name__} returned no hidden states; NTPS needs a model that supports "
                         "output_hidden_states=True")
    return torch.stack(output.hidden_states), batch["attention_mask"]


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens' states: x_i = (1/T_i) sum_t h_{i,t}.

    states: [..., B, T, d]; attention_mask: [B, T]. Returns [..., B, d] in float32 or wider.
    """
    mask = attention_mask.to(torch.float32 if states.dtype in (torch.float16, torch.bfloat16) else states.dtype)
    summed = (states.to(mask.dtype) * mask[..., None]).sum(dim=-2)
    return summed / mask.sum(dim=-1, keepdim=True)
