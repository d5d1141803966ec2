import sys
from pathlib import Path

import pytest

# tests import their shared helpers (helpers.py, nbgrader_harness.py) by module name
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def one_thread():
    """Run a test with torch on one thread (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    tiny models gain nothing from several threads, and on a busy machine the threads wait for each
    other (a 16-step LSTM training took 7 s on two threads, 0.15 s on one). Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
