"""Shared test setup: real datasets beside the checkout, one thread, fresh seeds."""
import os
import sys
import zlib
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OUTDATED_IGNORE", "1")  # ogb must not ask PyPI for versions during tests
# Tests never download: a missing dataset is an error (the download tests serve files on 127.0.0.1).
os.environ["DGL_RBGT_OFFLINE"] = "1"

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Test scaffolding that is not part of the library (network namespaces, fault injection).
SUPPORT = Path(__file__).resolve().parent / "support"
sys.path.insert(0, str(SUPPORT))

# The real datasets live beside the checkout (never inside it); CI has them there too.
if "DGL_RBGT_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["DGL_RBGT_DATA"] = str(SHARED_DATA)


# One intra-op thread: the checks here use small tensors, where a second thread costs more than
# it gains (and contended cores make it far worse). Tests that are about threads set their own.
torch.set_num_threads(int(os.environ.get("DGL_RBGT_TEST_THREADS", "1")))


@pytest.fixture
def data_root() -> Path:
    """The folder with the real datasets; tests that need it fail (not skip) when it is missing."""
    root = Path(os.environ.get("DGL_RBGT_DATA", SHARED_DATA))
    if not root.is_dir():
        pytest.fail(f"real datasets not found at {root}; set DGL_RBGT_DATA")
    return root


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """Each test gets its own seed derived from its name: fresh inputs, yet reproducible."""
    seed = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(seed)
    yield


def pytest_configure(config):
    # `import dgl` imports ogb, whose version check cannot reach PyPI offline; that is expected.
    config.addinivalue_line("filterwarnings", "ignore:Failed to check for latest version")
