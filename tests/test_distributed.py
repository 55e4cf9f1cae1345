"""torch.distributed: each rank takes its shard and the sums are all-reduced (gloo, two CPU processes)."""

import os
import socket

import numpy as np
import torch
import torch.multiprocessing as mp

from ntps.extract import extract_moments as moments

TEXTS = ["The film was a delight.", "Dull.", "A", "Next token prediction shapes perception.", "I am, you are.",
         "Lovely, enjoyable, amazing.", "0123", "Horrible and lonely."]
LABELS = np.array([0, 1, 0, 1, 0, 1, 0, 1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank, world, port, out):
    from ntps.tiny import tiny_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, tokenizer = tiny_model("llama", seed=5)
        result = moments(model, tokenizer, TEXTS, LABELS, batch_size=2, progress=False)
        np.save(f"{out}/rank{rank}.npy", np.concatenate([result.sum_ss.ravel(), [result.n_texts, result.n_pairs]]))
    finally:
        torch.distributed.destroy_process_group()


def test_two_ranks_all_reduce_to_one_pass(tmp_path):
    from ntps.tiny import tiny_model

    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    model, tokenizer = tiny_model("llama", seed=5)
    whole = moments(model, tokenizer, TEXTS, LABELS, batch_size=2, progress=False)
    for rank in range(2):  # every rank holds the merged moments
        merged = np.load(tmp_path / f"rank{rank}.npy")
        assert merged[-2:].tolist() == [whole.n_texts, whole.n_pairs]  # every text and pair counted once
        # A shard pads its texts in other batches than the whole pass, and the float32 forward of a
        # differently padded batch differs by round-off (seen: 8e-6 relative, depending on threads);
        # a lost or doubled shard would be off by a share of the whole.
        np.testing.assert_allclose(merged[:-2], whole.sum_ss.ravel(), rtol=1e-4,
                                   atol=1e-6 * np.abs(whole.sum_ss).max())
