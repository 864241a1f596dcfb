"""Tests for dgl_rbgt/data/download.py and the loaders' download path, without the internet.

Every download goes to a ``http.server`` on 127.0.0.1 (ephemeral port, a thread started and
stopped by the ``origin`` fixture) that serves copies of the real files from the shared data
folder; ``download.ORIGINS`` is pointed at it, the pinned checksums stay the real ones.
"""
import hashlib
import http.server
import re
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from dgl_rbgt.data import DatasetDownloadError, DatasetNotFoundError, list_datasets, load_dataset
from dgl_rbgt.data import download
from dgl_rbgt.data.download import CHECKSUMS, fetch_files, file_digest

CORA_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the origin folder. Paths in ``server.truncate`` send half their bytes and hang up;
    paths in ``server.stall`` send the headers, then nothing until the server stops."""

    timeout = 10  # a stuck client cannot hold the handler thread forever

    def do_GET(self):
        self.server.requests.append(self.path)
        name = self.path.lstrip("/")
        if name in self.server.truncate or name in self.server.stall:
            body = (Path(self.directory) / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))  # promises everything...
            self.end_headers()
            if name in self.server.stall:
                self.wfile.flush()
                self.server.stopping.wait(timeout=10)
            else:
                self.wfile.write(body[: len(body) // 2])  # ...and sends half
                self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):  # keep the test output clean
        pass


class _Origin:
    def __init__(self, folder: Path):
        self.folder = folder
        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(folder))
        )
        self.server.requests = []
        self.server.truncate = set()
        self.server.stall = set()
        self.server.stopping = threading.Event()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list[str]:
        return self.server.requests

    def stop(self):
        self.server.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def origin(tmp_path, monkeypatch):
    """A local origin for every family, downloads on, short timeouts; stopped after the test."""
    served = tmp_path / "origin"
    served.mkdir()
    server = _Origin(served)
    for family in download.ORIGINS:
        monkeypatch.setitem(download.ORIGINS, family, server.url)
    monkeypatch.delenv("DGL_RBGT_OFFLINE", raising=False)  # tests/data/conftest.py turns them off
    monkeypatch.setattr(download, "TIMEOUT", (5.0, 5.0))
    yield server
    server.stop()
    assert not server.thread.is_alive()


def _no_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _assert_same_dataset(a, b):
    ga, gb = a.graph, b.graph
    assert (a.name, a.num_classes, a.metric, a.split) == (b.name, b.num_classes, b.metric, b.split)
    assert ga.num_nodes() == gb.num_nodes()
    assert all(torch.equal(x, y) for x, y in zip(ga.edges(), gb.edges()))
    for key in ("feat", "label", "train_mask", "val_mask", "test_mask"):
        assert torch.equal(ga.ndata[key], gb.ndata[key]), key


def test_texas_downloads_then_equals_the_shared_copy(origin, data_root, tmp_path):
    shutil.copy(data_root / "heterophilous" / "texas.npz", origin.folder)
    root = tmp_path / "root"
    row = next(r for r in list_datasets(root) if r.name == "texas")
    assert not row.available and row.location == f"{root}/heterophilous/texas.npz (downloads on first use)"

    got = load_dataset("texas", root=root, split=2)
    path = root / "heterophilous" / "texas.npz"
    assert got.source == str(path)
    assert file_digest(path, "sha256") == CHECKSUMS["heterophilous"]["texas.npz"].split(":")[1]
    assert _no_leftovers(path.parent) == ["texas.npz"]  # no temporary file left
    _assert_same_dataset(got, load_dataset("texas", root=data_root, split=2))
    assert origin.requests == ["/texas.npz"]

    # Present now: listed as here, loaded without asking the origin again.
    row = next(r for r in list_datasets(root) if r.name == "texas")
    assert row.available and row.location == str(path)
    load_dataset("texas", root=root)
    assert origin.requests == ["/texas.npz"]


def test_cora_fetches_only_the_missing_parts(origin, data_root, tmp_path):
    for part in CORA_PARTS:
        shutil.copy(data_root / "planetoid" / f"ind.cora.{part}", origin.folder)
    folder = tmp_path / "root" / "planetoid"
    folder.mkdir(parents=True)
    for part in ("x", "y", "graph"):  # a half-filled folder: these are not fetched again
        shutil.copy(data_root / "planetoid" / f"ind.cora.{part}", folder)

    got = load_dataset("cora", root=tmp_path / "root")
    assert sorted(origin.requests) == sorted(f"/ind.cora.{p}" for p in ("tx", "ty", "allx", "ally", "test.index"))
    assert _no_leftovers(folder) == sorted(f"ind.cora.{p}" for p in CORA_PARTS)
    _assert_same_dataset(got, load_dataset("cora", root=data_root))


def test_photo_downloads_the_bare_npz(origin, data_root, tmp_path):
    # Upstream serves the npz that the shared zip wraps; the loader reads either.
    with zipfile.ZipFile(data_root / "gnn_benchmark" / "amazon-photo.zip") as zf:
        zf.extract("amazon_electronics_photo.npz", origin.folder)
    got = load_dataset("photo", root=tmp_path / "root", seed=3)
    path = tmp_path / "root" / "gnn_benchmark" / "amazon_electronics_photo.npz"
    assert got.source == str(path)
    row = next(r for r in list_datasets(tmp_path / "root") if r.name == "photo")
    assert row.available and row.location == str(path)  # the file that is there, not the absent zip
    _assert_same_dataset(got, load_dataset("photo", root=data_root, seed=3))


def test_tunedgnn_split_downloads_verified(origin, data_root, tmp_path, monkeypatch):
    # The real split file is not in the shared data: serve one of our own under a pin of its bytes.
    import numpy as np

    perm = np.random.default_rng(0).permutation(7650)
    np.savez(origin.folder / "amazon-photo_split.npz", train=perm[:4590], valid=perm[4590:6120], test=perm[6120:])
    body = (origin.folder / "amazon-photo_split.npz").read_bytes()
    monkeypatch.setitem(CHECKSUMS["tunedgnn"], "amazon-photo_split.npz", f"sha256:{hashlib.sha256(body).hexdigest()}")
    root = tmp_path / "root"
    (root / "gnn_benchmark").mkdir(parents=True)
    shutil.copy(data_root / "gnn_benchmark" / "amazon-photo.zip", root / "gnn_benchmark")
    got = load_dataset("photo", root=root, splits="tunedgnn")
    assert origin.requests == ["/amazon-photo_split.npz"]
    assert (root / "tunedgnn" / "amazon-photo_split.npz").read_bytes() == body
    assert torch.equal(torch.nonzero(got.graph.ndata["test_mask"]).view(-1), torch.from_numpy(np.sort(perm[6120:])))
    monkeypatch.setitem(CHECKSUMS["tunedgnn"], "amazon-computer_split.npz", "sha256:" + "0" * 64)
    shutil.copy(origin.folder / "amazon-photo_split.npz", origin.folder / "amazon-computer_split.npz")
    with pytest.raises(DatasetDownloadError, match=r"amazon-computer_split\.npz \(checksum mismatch"):
        fetch_files("computers", "tunedgnn", ["amazon-computer_split.npz"], root / "tunedgnn", [])
    assert _no_leftovers(root / "tunedgnn") == ["amazon-photo_split.npz"]


def test_git_blob_pin_verifies(origin, data_root, tmp_path, monkeypatch):
    # texas.npz's blob id in yandex-research/heterophilous-graphs@a431395 (`git ls-tree`): the
    # kind of pin the files too large for our snapshot carry.
    monkeypatch.setitem(CHECKSUMS["heterophilous"], "texas.npz", "git-blob:6d6e861782bb4458ee95077b0ca62d265097cf08")
    shutil.copy(data_root / "heterophilous" / "texas.npz", origin.folder)
    folder = tmp_path / "root" / "heterophilous"
    assert fetch_files("texas", "heterophilous", ["texas.npz"], folder, []) == [folder / "texas.npz"]
    assert (folder / "texas.npz").read_bytes() == (data_root / "heterophilous" / "texas.npz").read_bytes()


def test_wrong_checksum_leaves_nothing(origin, data_root, tmp_path):
    body = bytearray((data_root / "heterophilous" / "texas.npz").read_bytes())
    body[100] ^= 0xFF  # one flipped byte
    (origin.folder / "texas.npz").write_bytes(body)
    root = tmp_path / "root"
    want = CHECKSUMS["heterophilous"]["texas.npz"].split(":")[1]
    with pytest.raises(DatasetDownloadError) as info:
        load_dataset("texas", root=root)
    msg = str(info.value)
    assert "\n" not in msg
    assert re.search(
        rf"dataset 'texas' is missing and could not be downloaded from {origin.url}/texas\.npz \(checksum mismatch: "
        rf"expected sha256 {want}, got {hashlib.sha256(body).hexdigest()}; the download was discarded\)\. "
        rf"Looked at: {root}/heterophilous/texas\.npz\. .*by hand to {root}/heterophilous/texas\.npz", msg)
    assert _no_leftovers(root / "heterophilous") == []


def test_dropped_connection_leaves_nothing(origin, data_root, tmp_path):
    shutil.copy(data_root / "heterophilous" / "texas.npz", origin.folder)
    origin.server.truncate.add("texas.npz")
    root = tmp_path / "root"
    # urllib3 2 enforces Content-Length (IncompleteRead); urllib3 1.26 returns the short body,
    # which then fails its checksum. Either way: a clear error and nothing on disk.
    with pytest.raises(DatasetDownloadError,
                       match=rf"from {origin.url}/texas\.npz \((ChunkedEncodingError: .*IncompleteRead|checksum mismatch)"):
        load_dataset("texas", root=root)
    assert _no_leftovers(root / "heterophilous") == []


def test_stalled_transfer_times_out(origin, data_root, tmp_path, monkeypatch):
    shutil.copy(data_root / "heterophilous" / "texas.npz", origin.folder)
    origin.server.stall.add("texas.npz")
    monkeypatch.setattr(download, "TIMEOUT", (0.5, 0.5))
    root = tmp_path / "root"
    with pytest.raises(DatasetDownloadError, match=rf"from {origin.url}/texas\.npz \(ConnectionError: .*Read timed out"):
        load_dataset("texas", root=root)
    assert _no_leftovers(root / "heterophilous") == []


def test_missing_upstream_file_is_an_http_error(origin, tmp_path):
    with pytest.raises(DatasetDownloadError, match=rf"from {origin.url}/ind\.cora\.x \(HTTPError: 404"):
        load_dataset("cora", root=tmp_path / "root")
    assert _no_leftovers(tmp_path / "root" / "planetoid") == []


def test_connection_refused_names_the_url(origin, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port that nothing listens on once the socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(download.ORIGINS, "heterophilous", f"http://127.0.0.1:{port}")
    root = tmp_path / "root"
    with pytest.raises(DatasetDownloadError) as info:
        load_dataset("minesweeper", root=root)
    msg = str(info.value)
    assert "\n" not in msg
    assert re.search(
        rf"^dataset 'minesweeper' is missing and could not be downloaded from http://127\.0\.0\.1:{port}/minesweeper\.npz "
        rf"\(ConnectionError: .*Connection refused.*\)\. Looked at: {root}/heterophilous/minesweeper\.npz\. Retry on a "
        rf"connected machine, or download that URL by hand to {root}/heterophilous/minesweeper\.npz .*"
        rf"DGL_RBGT_OFFLINE=1 or pass download=False to never download\.$", msg)
    assert isinstance(info.value, DatasetNotFoundError)  # callers that catch "missing" still do
    assert _no_leftovers(root / "heterophilous") == []


@pytest.mark.parametrize("how", ["argument", "environment", "environment beats argument"])
def test_downloads_off_give_the_not_found_error(origin, data_root, tmp_path, monkeypatch, how):
    shutil.copy(data_root / "heterophilous" / "texas.npz", origin.folder)
    kwargs = {"download": False} if how == "argument" else {}
    if how != "argument":
        monkeypatch.setenv("DGL_RBGT_OFFLINE", "yes")
    if how == "environment beats argument":
        kwargs = {"download": True}
    root = tmp_path / "root"
    with pytest.raises(DatasetNotFoundError, match=r"looked at:\n  .*texas\.npz\n(.|\n)*Downloads are off") as info:
        load_dataset("texas", root=root, **kwargs)
    assert not isinstance(info.value, DatasetDownloadError)
    assert origin.requests == [] and not root.exists()


def test_listing_says_when_downloads_are_off(tmp_path, monkeypatch):
    monkeypatch.setenv("DGL_RBGT_OFFLINE", "1")
    info = {r.name: r for r in list_datasets(tmp_path)}
    assert info["pubmed"].location == f"{tmp_path}/planetoid (downloads off: $DGL_RBGT_OFFLINE)"
    assert info["ogbn-arxiv"].location.endswith("(downloads off: $DGL_RBGT_OFFLINE)")
    assert info["csbm"].location == "generated"


def test_bad_switch_values(tmp_path, monkeypatch):
    monkeypatch.setenv("DGL_RBGT_OFFLINE", "maybe")
    with pytest.raises(ValueError, match=r"DGL_RBGT_OFFLINE must be one of 1, true, yes, on \(downloads off\) .* got 'maybe'"):
        load_dataset("texas", root=tmp_path)
    monkeypatch.delenv("DGL_RBGT_OFFLINE")
    for name in ("cora", "texas", "photo"):
        with pytest.raises(TypeError, match="download must be a bool, got str 'no'"):
            load_dataset(name, root=tmp_path, download="no")


def test_every_downloadable_file_is_pinned():
    # Every file a loader may ask for has a pin of a known kind (nothing is fetched unverified).
    from dgl_rbgt.data import heterophilous, shchur

    wanted = {
        "planetoid": {f"ind.{n}.{p}" for n in ("cora", "citeseer", "pubmed") for p in CORA_PARTS},
        "heterophilous": {files[0] for files in heterophilous.FILES.values()},
        "shchur": {npz for _, npz in shchur.FILES.values()},
        "tunedgnn": set(shchur.TUNEDGNN_SPLIT_FILES.values()),
    }
    assert {family: set(pins) for family, pins in CHECKSUMS.items()} == wanted
    for pins in CHECKSUMS.values():
        for pin in pins.values():
            assert re.fullmatch(r"sha256:[0-9a-f]{64}|git-blob:[0-9a-f]{40}", pin), pin
    assert all(url.startswith("https://raw.githubusercontent.com/") for url in download.ORIGINS.values())


def test_unpinned_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"no pinned checksum for texas_4_classes\.npz \(family 'heterophilous'\); refusing"):
        fetch_files("texas", "heterophilous", ["texas_4_classes.npz"], tmp_path, [])
    with pytest.raises(ValueError, match=r"family must be one of planetoid, heterophilous, shchur, tunedgnn, got 'ogb'"):
        fetch_files("ogbn-arxiv", "ogb", [], tmp_path, [])
    assert _no_leftovers(tmp_path) == []


def test_file_digest_matches_git(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"")
    assert file_digest(path, "git-blob") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob
    assert file_digest(path, "sha256") == hashlib.sha256(b"").hexdigest()
    with pytest.raises(ValueError, match="kind must be 'sha256' or 'git-blob', got 'md5'"):
        file_digest(path, "md5")
