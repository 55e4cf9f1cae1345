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
        result = moments(model, tokenizer, TEXTS, LABELS, batch_size=2, progress=False, precision="float64")
        np.save(f"{out}/rank{rank}.npy", np.concatenate([result.sum_ss.ravel(), [result.n_texts, result.n_pairs]]))
    finally:
        torch.distributed.destroy_process_group()


def test_two_ranks_all_reduce_to_one_pass(tmp_path):
    from ntps.tiny import tiny_model

    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    model, tokenizer = tiny_model("llama", seed=5)
    # float64 products on both sides: a shard forms other batches than the whole pass, and float32
    # products of other batches differ by round-off; the merge itself must add nothing to that
    whole = moments(model, tokenizer, TEXTS, LABELS, batch_size=2, progress=False, precision="float64")
    expected = np.concatenate([whole.sum_ss.ravel(), [whole.n_texts, whole.n_pairs]])
    for rank in range(2):  # every rank holds the merged moments
        np.testing.assert_allclose(np.load(tmp_path / f"rank{rank}.npy"), expected, rtol=1e-10)
