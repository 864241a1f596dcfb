"""Shared checks for the dataset tests; downloads are off here."""
import os

import pytest
import torch

# Tests run offline (CI has no internet): a dataset missing under a test's root must fail with
# DatasetNotFoundError, never reach for the real origin. Set at import, before any test runs,
# and forced rather than defaulted, so that a developer's own setting cannot turn downloads on.
# test_download.py lifts it per test, with the origins pointed at a server on 127.0.0.1.
os.environ["DGL_RBGT_OFFLINE"] = "1"


def assert_canonical(g, covers_all: bool = False) -> None:
    """The loaders' graph convention: symmetric, no self-loops or duplicates, float32 features,
    int64 labels, disjoint bool masks (covering every node when ``covers_all``)."""
    src, dst = g.edges()
    n = g.num_nodes()
    assert not bool((src == dst).any()), "self-loops"
    keys = src * n + dst
    assert torch.unique(keys).numel() == keys.numel(), "duplicate edges"
    assert torch.equal(torch.sort(keys).values, torch.sort(dst * n + src).values), "not symmetric"
    assert g.ndata["feat"].dtype == torch.float32 and g.ndata["label"].dtype == torch.int64
    tr, va, te = (g.ndata[k] for k in ("train_mask", "val_mask", "test_mask"))
    assert tr.dtype == va.dtype == te.dtype == torch.bool
    assert not bool((tr & va).any() or (tr & te).any() or (va & te).any())
    if covers_all:
        assert bool((tr | va | te).all())


@pytest.fixture
def check_convention():
    return assert_canonical
