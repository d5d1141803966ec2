import sys
from pathlib import Path

import pytest

# tests import their shared helpers (helpers.py, nbgrader_harness.py) by module name
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def one_thread():
    """Run a test with torch on one thread: tiny models train several times faster that way than
    on two busy cores. The previous setting is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
