import numpy as np
import pytest
import torch

from ntps.features import hidden_states, mean_pool


def test_mean_pool_equals_a_per_text_float64_loop():
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(3, 4, 7, 5, generator=generator)  # [layers, texts, tokens, d]
    lengths = [7, 1, 4, 2]
    mask = torch.zeros(4, 7, dtype=torch.long)
    for i, n in enumerate(lengths):  # right padding for even texts, left padding for odd ones
        if i % 2 == 0:
            mask[i, :n] = 1
        else:
            mask[i, 7 - n:] = 1
    pooled = mean_pool(states, mask).numpy()
    for l in range(3):
        for i in range(4):
            real = [t for t in range(7) if mask[i, t]]
            expected = np.mean([states[l, i, t].double().numpy() for t in real], axis=0)
            np.testing.assert_allclose(pooled[l, i], expected, rtol=1e-6)


def test_hidden_states_shapes_and_errors(tiny_llama):
    model, tokenizer = tiny_llama
    states, mask = hidden_states(model, tokenizer, ["one", "one two three four"])
    assert states.shape[:2] == (model.config.num_hidden_layers + 1, 2)
    assert states.shape[-1] == model.config.hidden_size
    assert mask.sum(dim=1).tolist() == [len(tokenizer("one")["input_ids"]),
                                        len(tokenizer("one two three four")["input_ids"])]
    with pytest.raises(ValueError, match="no texts"):
        hidden_states(model, tokenizer, [])
    with pytest.raises(TypeError, match="not one string"):
        hidden_states(model, tokenizer, "one")
