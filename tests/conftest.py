import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")  # also for subprocesses (DDP workers, CLI runs)

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))  # tests/models.py and tests/cases.py

# One intra-op thread per test process: CI runs two xdist workers on two cores, and tiny models gain
# nothing from more threads while oversubscription made the suite several times slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
