"""Download missing dataset files from their public origins, verified against pinned checksums.

The Planetoid, heterophilous and Shchur loaders call :func:`fetch_files` when a file is missing
and downloads are on (see :func:`~dgl_rbgt.data.load_dataset`). Each file comes from one fixed
URL, ``ORIGINS[family] + "/" + file name``: the raw-file URL of the original GitHub repository at
a pinned commit (the files PyG's ``Planetoid``, ``HeterophilousGraphDataset``, ``Amazon`` and
``Coauthor`` download), so the content behind a URL cannot change under a pinned checksum.

Checksums live in :data:`CHECKSUMS` (family -> file name -> pin). Every file has a pin and a
file that does not match it is discarded; a file is never used unverified:

- ``sha256:<hex>`` for every file whose bytes we could read: the copies in the project's shared
  data folder (byte-identical to upstream) and the upstream git snapshots.
- ``git-blob:<hex>`` for the six files too large for the snapshot store we had (PubMed's
  ``ind.pubmed.allx``, ``roman_empire.npz``, ``amazon_ratings.npz``, ``questions.npz``,
  Computers' and Physics' npz): their SHA-256 could not be computed here, but the upstream
  commit's tree records their git blob id, the SHA-1 of ``b"blob <size>\\0" + content``. Checking
  it pins the exact bytes git holds at that commit (forging a match needs a SHA-1 second
  preimage, which is out of reach, unlike the collisions of SHAttered). After such a file passes,
  its SHA-256 is logged at INFO level so that it can be moved into :data:`CHECKSUMS`.

A download goes to a temporary file in the destination folder, is verified, flushed to disk
(fsync) and only then renamed to its final name, so a partial or corrupt download never appears
under that name, and the temporary file is removed on any failure (including Ctrl-C). The HTTP
transfer, its timeout and the tqdm progress bar are ``pooch.HTTPDownloader``'s; pooch's own
``retrieve`` is not used because it neither fsyncs nor knows git blob ids.

For tests, :data:`ORIGINS` can point a family at another server (e.g. one on 127.0.0.1): the
checksums still apply.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from .dataset import DatasetNotFoundError

__all__ = [
    "DatasetDownloadError",
    "ORIGINS",
    "CHECKSUMS",
    "OFFLINE_ENV",
    "TIMEOUT",
    "downloads_enabled",
    "fetch_files",
    "file_digest",
]

logger = logging.getLogger(__name__)

#: Environment variable that turns every download off (``1``, ``true``, ``yes``, ``on``).
OFFLINE_ENV = "DGL_RBGT_OFFLINE"

#: Seconds to wait for the connection and between two received chunks, for every request.
TIMEOUT = (15.0, 60.0)

#: family -> base URL; a file's URL is ``ORIGINS[family] + "/" + name``. Pinned commits: the ones
#: the checksums were taken from (see ``shared/data/SOURCES.md``).
ORIGINS: dict[str, str] = {
    "planetoid": "https://raw.githubusercontent.com/kimiyoung/planetoid/af6abf468a772cc055bec88c52e4d6f51b7c37e3/data",
    "heterophilous": "https://raw.githubusercontent.com/yandex-research/heterophilous-graphs/a431395582e929d88271309716bea4fe24ce6318/data",
    "shchur": "https://raw.githubusercontent.com/shchur/gnn-benchmark/1e72912a0810cdf27ae54fd589a3b43358a2b161/data/npz",
    # Luo et al.'s fixed 60/20/20 splits of the Shchur datasets (their published numbers' split).
    "tunedgnn": "https://raw.githubusercontent.com/LUOyk1999/tunedGNN/23f9604e8b13a9a6d3faa2f691cd844006979153/medium_graph/data",
}

#: family -> file name -> ``"sha256:<hex>"`` or ``"git-blob:<hex>"`` (see the module docstring).
CHECKSUMS: dict[str, dict[str, str]] = {
    "planetoid": {
        "ind.cora.x": "sha256:23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
        "ind.cora.y": "sha256:94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
        "ind.cora.tx": "sha256:b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
        "ind.cora.ty": "sha256:41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
        "ind.cora.allx": "sha256:9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
        "ind.cora.ally": "sha256:2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
        "ind.cora.graph": "sha256:58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
        "ind.cora.test.index": "sha256:297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
        "ind.citeseer.x": "sha256:d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
        "ind.citeseer.y": "sha256:8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
        "ind.citeseer.tx": "sha256:539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
        "ind.citeseer.ty": "sha256:55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
        "ind.citeseer.allx": "sha256:2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
        "ind.citeseer.ally": "sha256:f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
        "ind.citeseer.graph": "sha256:d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
        "ind.citeseer.test.index": "sha256:2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
        "ind.pubmed.x": "sha256:fbe9cb5c47200d1b7769a26e579be3b7130b556831f9d850e77c4c74f2599b33",
        "ind.pubmed.y": "sha256:e6c807633307a07ed659249006536a147c7999c797f11a2560752990181b41b3",
        "ind.pubmed.tx": "sha256:4eb5f5d0f30f26497eb0ac6ac9719d09c67e284f1ed0385c93f3ef27a671da3d",
        "ind.pubmed.ty": "sha256:ee2e0d4819d9fbcc403689c3bf2e49face401b605932f093bc58ab6461130fdd",
        "ind.pubmed.allx": "git-blob:3b86bccf08111c37c632a9dd8ab63db25ea76361",
        "ind.pubmed.ally": "sha256:0c37bbe3b5014ec365e9d393cf4791925e5ed94fb194305d74f064a8d7b50f0e",
        "ind.pubmed.graph": "sha256:5b89f0036ca22909471f1e6558eb42fa06e0c730a577bde5b058b40638f81dc9",
        "ind.pubmed.test.index": "sha256:b101d421688bbaecbd82e8a18f1e282378d6830f3a37666f28ebc47f844341b5",
    },
    "heterophilous": {
        "minesweeper.npz": "sha256:e664c8dacf1e8ac466c2c09ed4b237bd2c5541f47a6eae9c6092cb87f16412b3",
        "tolokers.npz": "sha256:dacf3ac94cec53d03cd2adb5255c08b33dee1656c33ca8164a464bd9450a1667",
        "roman_empire.npz": "git-blob:1f9bae5e95b28e529015269e98acb237b65d8d3b",
        "amazon_ratings.npz": "git-blob:29647a8b0ff0ef856d73d683a8c3595bd5efbd38",
        "questions.npz": "git-blob:4c7cb65057dbc9771af00fdfdee64a41b3875079",
        "actor.npz": "sha256:c350eef06b2c2a9bf8218be2b57cac6d4003d0922eb597a039e9123f75817816",
        "texas.npz": "sha256:b164b99e6c3d43e4ab07488ec59bd8c815f90cbc1bd4cf425ce587d2b534d844",
        "cornell.npz": "sha256:684c54ba3daa13b0ba1f04a3d6dd1b1175c1ae9bdeb982851fd4ff96d3aac298",
        "wisconsin.npz": "sha256:2543c89838cfc75f737f7c4664cc1d097f8268602c20b2d1bd4f21407df9c074",
        "chameleon_filtered.npz": "sha256:bf46f07e1fb5249280447e5fe3100f3e82fc4b93ad1e13ffcfdec924b6ac0bb5",
        "squirrel_filtered.npz": "sha256:f06370ffb3116c5de8b7a600005400b2293c025e0ce2f6916d8201a825505ac7",
    },
    "shchur": {
        "amazon_electronics_photo.npz": "sha256:bdb1feb8e6ff42ee44024b04479145029c563fd42fc31bff80af20887ba0439a",
        "amazon_electronics_computers.npz": "git-blob:8120e4148a330b3fafe37c4476823302d9d834b9",
        "ms_academic_cs.npz": "sha256:933c745734e78908c7eb77172a673fee0503f30e26e5a99b36814d88534c42e3",
        "ms_academic_phy.npz": "git-blob:8d8bc12e29aa67f6753a712080eae81079bd7d01",
    },
    "tunedgnn": {
        "amazon-photo_split.npz": "sha256:0609f6ab15ddabfe33a34f10d960d09499e634472f72104abb1f3be858127432",
        "amazon-computer_split.npz": "sha256:dff698aba1dd30b8bd7d1dca65c60b1f8d9027d950e07a23e86dcbf16c539f24",
        "coauthor-cs_split.npz": "sha256:b8c46a38d93b1f9d6b8b8ab944d870e8d44ccdde0639188681e0d38212480ec5",
        "coauthor-physics_split.npz": "sha256:2034eb90f5ff80eee0e371cc05b20690a16786fb085924b9166c83361fbbcb39",
    },
}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
_CHUNK = 1 << 16  # bytes per read when hashing and per chunk when downloading


class DatasetDownloadError(DatasetNotFoundError):
    """A missing dataset file could not be downloaded, or the download failed its checksum.

    The one-line message names the dataset, the URL tried, the reason, the paths looked at and
    how to put the file there by hand. Nothing is left under the file's final name.

    Examples
    --------
    >>> from dgl_rbgt.data import DatasetDownloadError, DatasetNotFoundError
    >>> issubclass(DatasetDownloadError, DatasetNotFoundError)  # caught like a missing dataset
    True
    """


def downloads_enabled() -> bool:
    """Whether downloads are on, according to ``$DGL_RBGT_OFFLINE`` (unset: on).

    Raises ``ValueError`` for a value that is neither on nor off, rather than guessing.

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> from dgl_rbgt.data.download import downloads_enabled
    >>> with mock.patch.dict(os.environ, {"DGL_RBGT_OFFLINE": "1"}):
    ...     downloads_enabled()
    False
    >>> with mock.patch.dict(os.environ, {"DGL_RBGT_OFFLINE": "0"}):
    ...     downloads_enabled()
    True
    """
    value = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if value in _FALSE:
        return True
    if value in _TRUE:
        return False
    raise ValueError(
        f"{OFFLINE_ENV} must be one of {', '.join(_TRUE)} (downloads off) or "
        f"{', '.join(repr(v) for v in _FALSE)} (downloads on), got {value!r}"
    )


def file_digest(path: str | os.PathLike, kind: str) -> str:
    """The hex digest of a file: ``kind`` ``"sha256"``, or ``"git-blob"`` (git's blob id).

    Examples
    --------
    >>> import tempfile
    >>> from dgl_rbgt.data.download import file_digest
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     _ = f.write(b"hello\\n"); f.flush()
    ...     file_digest(f.name, "git-blob")  # what `git hash-object` prints
    'ce013625030ba8dba906f756967f9e9ca394464a'
    """
    if kind == "sha256":
        digest = hashlib.sha256()
    elif kind == "git-blob":
        digest = hashlib.sha1()
        digest.update(b"blob %d\0" % os.path.getsize(path))
    else:
        raise ValueError(f"kind must be 'sha256' or 'git-blob', got {kind!r}")
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_files(dataset: str, family: str, names: Sequence[str], folder: Path, looked_at: Sequence[Path]) -> list[Path]:
    """Download the files ``names`` of ``dataset`` into ``folder``, each verified against its pin.

    Files already in ``folder`` are kept as they are (not re-checked, not re-downloaded). Each
    other file is fetched from ``ORIGINS[family]/<name>`` with a progress bar on stderr and a
    timeout of :data:`TIMEOUT`, checked against ``CHECKSUMS[family][name]``, and written
    atomically (temporary file in ``folder``, fsync, rename). Files fetched before a failure
    stay: each is complete and verified. This function downloads whatever
    ``$DGL_RBGT_OFFLINE`` says; :func:`~dgl_rbgt.data.load_dataset` is what honours it.

    Parameters
    ----------
    dataset : str
        Dataset name, for messages.
    family : str
        Key of :data:`ORIGINS` and :data:`CHECKSUMS`: ``"planetoid"``, ``"heterophilous"``,
        ``"shchur"`` or ``"tunedgnn"``.
    names : sequence of str
        File names, each a key of ``CHECKSUMS[family]``.
    folder : pathlib.Path
        Destination folder, created if needed.
    looked_at : sequence of pathlib.Path
        The paths the loader looked at, named in the error message.

    Returns
    -------
    list of pathlib.Path
        ``folder / name`` for each name, in order.

    Raises
    ------
    ValueError
        ``family`` or a name has no pin (nothing is downloaded unverified).
    DatasetDownloadError
        A download failed (no connection, HTTP error, timeout, dropped connection, checksum
        mismatch, disk error).

    Examples
    --------
    >>> from pathlib import Path
    >>> from dgl_rbgt.data.download import fetch_files
    >>> folder = Path("/data/heterophilous")
    >>> fetch_files("texas", "heterophilous", ["texas.npz"], folder, [folder / "texas.npz"])  # doctest: +SKIP
    [PosixPath('/data/heterophilous/texas.npz')]
    """
    if family not in CHECKSUMS or family not in ORIGINS:
        raise ValueError(f"family must be one of {', '.join(CHECKSUMS)}, got {family!r}")
    unpinned = [n for n in names if n not in CHECKSUMS[family]]
    if unpinned:
        raise ValueError(f"no pinned checksum for {', '.join(unpinned)} (family {family!r}); refusing to download unverified files")
    folder = Path(folder)
    paths = [folder / n for n in names]
    for name, path in zip(names, paths):
        if not path.is_file():
            _download(dataset, f"{ORIGINS[family].rstrip('/')}/{name}", path, CHECKSUMS[family][name], looked_at)
    return paths


def _download(dataset: str, url: str, dest: Path, pin: str, looked_at: Sequence[Path]) -> None:
    """Fetch ``url`` to ``dest`` atomically if it matches ``pin``, else raise and leave nothing."""
    import pooch  # imported here: it pulls in requests, which `import dgl_rbgt` need not pay for
    import requests

    kind, expected = pin.split(":", 1)
    tmp = None
    logger.info("downloading %s (dataset %s) from %s", dest.name, dataset, url)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # A fresh name in the destination folder (so the final rename stays on one file system),
        # created with os.open rather than mkstemp so that the file gets the usual umask-based
        # permissions (mkstemp's 0600 would hide the dataset from other users of a shared root).
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        # Our own bar, named after the file, in a `with`: pooch closes the bar it makes itself
        # only on success, so a failed download would leave a half-drawn one behind.
        with os.fdopen(fd, "w+b") as out, _ProgressBar(desc=dest.name, unit="B", unit_scale=True, ncols=79) as bar:
            downloader = pooch.HTTPDownloader(progressbar=bar, chunk_size=_CHUNK, timeout=TIMEOUT)
            downloader(url, out, None)
            out.flush()
            os.fsync(out.fileno())
        got = file_digest(tmp, kind)
        if got == expected:
            os.replace(tmp, dest)
            tmp = None
            _fsync_dir(dest.parent)  # make the rename itself durable
    except (requests.RequestException, OSError) as err:
        raise _error(dataset, url, dest, looked_at, _reason(err)) from err
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    if got != expected:
        raise _error(dataset, url, dest, looked_at, f"checksum mismatch: expected {kind} {expected}, got {got}; the download was discarded")
    if kind != "sha256":
        logger.info("verified %s by its %s id; its sha256 (to pin in CHECKSUMS) is %s", dest.name, kind, file_digest(dest, "sha256"))


class _ProgressBar(tqdm):
    # pooch drives a progress bar only if it is truthy, and a tqdm's truth is its total, which
    # is unknown (None: bool() raises) until pooch reads Content-Length and sets it.
    def __bool__(self) -> bool:
        return True


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(err: BaseException) -> str:
    # requests nests urllib3's messages, sometimes over several lines; the error is one line.
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _error(dataset: str, url: str, dest: Path, looked_at: Sequence[Path], reason: str) -> DatasetDownloadError:
    return DatasetDownloadError(
        f"dataset {dataset!r} is missing and could not be downloaded from {url} ({reason}). "
        f"Looked at: {', '.join(str(p) for p in looked_at)}. Retry on a connected machine, or download "
        f"that URL by hand to {dest} (or set $DGL_RBGT_DATA to a folder that has it); set "
        f"{OFFLINE_ENV}=1 or pass download=False to never download."
    )
