import os

import pytest

# Tests never reach a hub, and never hang trying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Nor a package registry, unless a test says so: a missing offline task is an error, not a download.
os.environ.setdefault("NTPS_NO_FETCH", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_llama():
    from ntps.tiny import tiny_model

    return tiny_model("llama")


def pytest_configure(config):
    # The tests run on toy datasets of a few texts, fewer than the hidden size: the warnings a user
    # gets for such data (ntps.moments.NTPSWarning) are expected here. Tests of the warnings see
    # them all the same (pytest.warns, and the command line shows them on stderr itself).
    config.addinivalue_line("filterwarnings", "ignore::ntps.moments.NTPSWarning")
