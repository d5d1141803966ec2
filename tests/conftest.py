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


# nbval waits only 5 s for a cell's next output message once the kernel has replied; on a busy
# machine (several notebooks and the browser test side by side) a kernel that sends a training
# loop's last progress-bar updates can be descheduled that long, and the cell fails with
# "Timeout of 5 seconds exceeded waiting for output" although nothing is wrong with it
NBVAL_OUTPUT_TIMEOUT = 60


def pytest_collection_modifyitems(items):
    for item in items:
        if type(item).__name__ == "IPyNbCell":
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT
