import os

import pytest

# Tests never reach a hub, and never hang trying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_llama():
    from ntps.tiny import tiny_model

    return tiny_model("llama")
