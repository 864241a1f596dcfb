"""Tests for dgl_rbgt/data/unpickler.py: the Planetoid files load, anything else is refused."""
import collections
import io
import os
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from dgl_rbgt.data.unpickler import ALLOWED_GLOBALS, ForbiddenGlobalError, RestrictedUnpickler, restricted_load


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("dataset", ["cora", "citeseer"])
def test_real_planetoid_files_load(data_root, dataset):
    folder = data_root / "planetoid"
    x = restricted_load(folder / f"ind.{dataset}.x")
    allx = restricted_load(folder / f"ind.{dataset}.allx")
    y = restricted_load(folder / f"ind.{dataset}.ally")
    graph = restricted_load(folder / f"ind.{dataset}.graph")
    assert isinstance(x, sp.csr_matrix) and isinstance(allx, sp.csr_matrix)
    assert isinstance(y, np.ndarray) and y.ndim == 2 and (y.sum(1) <= 1).all()
    assert isinstance(graph, collections.defaultdict) and graph.default_factory is list
    assert len(graph) == {"cora": 2708, "citeseer": 3327}[dataset]


@pytest.mark.filterwarnings("ignore:Please import `csr_matrix`:DeprecationWarning")
def test_plain_pickle_agrees_on_real_file(data_root):
    # Same objects as plain pickle (safe here: the file is our checked copy), so the table is complete.
    path = data_root / "planetoid" / "ind.cora.tx"
    with open(path, "rb") as fh:
        reference = pickle.load(fh, encoding="latin1")
    ours = restricted_load(path)
    assert (ours != reference).nnz == 0 and ours.shape == reference.shape


def test_os_system_refused_protocol0(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    with pytest.raises(pickle.UnpicklingError, match=r"forbidden global 'os\.system'"):
        RestrictedUnpickler(io.BytesIO(payload)).load()
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_os_system_refused_via_reduce(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(marker), protocol=protocol)
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    # os.system pickles as posix.system (nt.system on Windows)
    with pytest.raises(ForbiddenGlobalError, match=rf"forbidden global '{os.name}\.system' in pickle .*evil\.pkl"):
        restricted_load(path)
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("subprocess", "Popen"), ("numpy", "load"), ("builtins", "getattr")])
def test_other_globals_refused(module, name):
    payload = f"c{module}\n{name}\n.".encode()
    with pytest.raises(ForbiddenGlobalError, match=rf"'{module}\.{name}'.*only these are allowed: .*collections\.defaultdict"):
        RestrictedUnpickler(io.BytesIO(payload)).load()


def test_allowed_table_is_exact():
    names = {f"{m}.{n}" for m, n in ALLOWED_GLOBALS}
    assert "numpy.core.multiarray._reconstruct" in names and "scipy.sparse.csr.csr_matrix" in names
    assert "__builtin__.list" in names and "collections.defaultdict" in names
    assert not any(n.split(".")[-1] in {"system", "eval", "exec", "getattr", "__import__"} for n in names)
    assert issubclass(ForbiddenGlobalError, pickle.UnpicklingError)
