"""Tiny random causal LMs with a tokenizer built on the spot: for tests and smoke runs.

They need no download: the model is random-init from a small config, and the tokenizer is a
byte-level BPE trained in a fraction of a second on a few built-in lines, so it encodes any
text. Its post-processor prepends a beginning-of-text token, as Llama's tokenizers do, so code
that must count special tokens is exercised too.
"""

from __future__ import annotations

import torch

__all__ = ["TINY_MODELS", "tiny_tokenizer", "tiny_model"]

TINY_MODELS = ("tiny-llama", "tiny-gpt2")

_CORPUS = [
    "The film was a delight from start to finish.",
    "A dull, plodding story with nothing to say.",
    "Next token prediction shapes what a language model perceives.",
    "Linear probes read labels off mean-pooled hidden states.",
    "She was lovely, enjoyable, amazing and delighted; he was horrible, unhappy and lonely.",
    "I am, you are, it is, we were, they was not.",
    "0123456789 !?.,;:'\"()[]{}<>-_+=*/\\|@#$%^&~`",
]


def tiny_tokenizer(vocab_size: int = 384):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with ``<s>`` prepended to every text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(_CORPUS, trainer)
    bos_id = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", model_max_length=128)


def tiny_model(architecture: str = "llama", *, num_layers: int = 2, hidden_size: int = 32, seed: int = 0):
    """Return ``(model, tokenizer)``: a random-init causal LM of the given architecture.

    architecture: ``"llama"`` (RoPE, RMSNorm, grouped-query attention) or ``"gpt2"``.
    """
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    tokenizer = tiny_tokenizer()
    common = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if architecture == "llama":
        config = LlamaConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, **common)
    elif architecture == "gpt2":
        config = GPT2Config(n_embd=hidden_size, n_layer=num_layers, n_head=4, n_positions=128, **common)
    else:
        raise ValueError(f"unknown tiny architecture {architecture!r}; use 'llama' or 'gpt2'")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    return model, tokenizer
