import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ATTNCNN_SHARED_DATA", ROOT.parent / "shared" / "data"))

# One thread: the tests' tensors are small, and some tests start 2-process runs of their own;
# on a 2-core machine more threads only oversubscribe it (several times slower).
torch.set_num_threads(int(os.environ.get("ATTNCNN_TEST_THREADS", "1")))


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip: a user's machine has no shared data."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
