"""The dataset registry: ``load_dataset(name, ...)`` and ``list_datasets()``.

Each family module (planetoid, heterophilous, shchur, ogb, synthetic, longrange) contributes its
``SPECS``; names are matched case-insensitively with ``_`` read as ``-``, plus a few aliases
(``film`` for ``actor``, ``amazon-photo`` for ``photo``, ``arxiv`` for ``ogbn-arxiv``, ...).
Datasets whose loader takes a ``download`` parameter fetch missing files on first use; the
registry turns that off for all of them when ``$DGL_RBGT_OFFLINE`` is set.
"""
from __future__ import annotations

import difflib
import logging
import os

from . import heterophilous, longrange, ogb, planetoid, shchur, synthetic
from .dataset import DatasetInfo, DatasetSpec, NodeDataset, check_download, data_root
from .download import OFFLINE_ENV, downloads_enabled

__all__ = ["load_dataset", "list_datasets", "get_spec", "dataset_names"]

logger = logging.getLogger(__name__)

_SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for module in (planetoid, heterophilous, shchur, ogb, synthetic, longrange)
    for spec in module.SPECS
}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


_LOOKUP: dict[str, str] = {}
for _spec in _SPECS.values():
    for _alias in (_spec.name, *_spec.aliases):
        _LOOKUP[_key(_alias)] = _spec.name
del _spec, _alias


def dataset_names() -> list[str]:
    """Canonical names of all registered datasets, in registry order.

    Examples
    --------
    >>> from dgl_rbgt.data.registry import dataset_names
    >>> dataset_names()[:3]
    ['cora', 'citeseer', 'pubmed']
    """
    return list(_SPECS)


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name`` (canonical name or alias, any case, ``_`` or ``-``).

    Raises ``ValueError`` listing the known names, with close matches first, for unknown names.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")
    canonical = _LOOKUP.get(_key(name))
    if canonical is None:
        close = difflib.get_close_matches(_key(name), list(_LOOKUP), n=3, cutoff=0.6)
        close = list(dict.fromkeys(_LOOKUP[c] for c in close))  # aliases -> canonical, deduped
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(_SPECS)}")
    return _SPECS[canonical]


def load_dataset(
    name: str, root: str | os.PathLike | None = None, split: int = 0, seed: int = 0, **params
) -> NodeDataset:
    """Load a node-classification dataset as a :class:`~dgl_rbgt.data.NodeDataset`.

    Parameters
    ----------
    name : str
        Dataset name (see :func:`list_datasets`): ``cora``, ``citeseer``, ``pubmed``,
        ``minesweeper``, ``tolokers``, ``roman-empire``, ``amazon-ratings``, ``questions``,
        ``actor``, ``texas``, ``cornell``, ``wisconsin``, ``chameleon``, ``squirrel``, ``photo``,
        ``computers``, ``cs``, ``physics``, ``ogbn-arxiv``, ``ogbn-products``, ``ogbn-proteins``,
        ``ogbn-papers100M``, ``csbm``, ``longrange``. Case-insensitive; ``_`` and ``-`` are interchangeable.
    root : str or os.PathLike, optional
        Data folder; default ``$DGL_RBGT_DATA``, else ``~/.cache/dgl_rbgt/data``
        (see :func:`~dgl_rbgt.data.data_root`).
    split : int, default 0
        Which fixed split to use for datasets that ship several (heterophilous: 0..9). Datasets
        with a single split (public, official or seeded random) accept only 0.
    seed : int, default 0
        Seed of the random split (Photo/Computers/CS/Physics: 60/20/20) or of the generator
        (``csbm``, ``longrange``); ignored by datasets with fixed splits.
    **params
        Dataset-specific options: ``csbm``: the arguments of
        :func:`~dgl_rbgt.data.csbm_graph` (``num_nodes`` defaults to 10,000); ``longrange``: the
        arguments of :func:`~dgl_rbgt.data.longrange.longrange_graph`; Shchur datasets:
        ``train_frac`` (0.6), ``val_frac`` (0.2); every dataset read from files (Planetoid,
        heterophilous, Shchur, OGB): ``download`` (True), see the Notes.

    Returns
    -------
    NodeDataset

    Notes
    -----
    A dataset read from files downloads them on first use when they are not under the data
    root, as PyG and DGL do (on a connected machine). Planetoid, heterophilous and Shchur files
    come from the original GitHub repositories at a pinned commit, are checked against the
    checksums pinned in :mod:`dgl_rbgt.data.download` (a mismatch is an error and the file is
    discarded) and are written atomically under the data root, with a progress bar on stderr.
    OGB datasets use the ``ogb`` package's own downloader. Files already there are never
    fetched again. Two switches turn downloads off; a missing dataset then raises
    :class:`DatasetNotFoundError` naming the paths looked at:

    - ``download=False`` for one call (``dataset.params.download: false`` in a recipe);
    - the environment variable ``DGL_RBGT_OFFLINE=1`` (or ``true``/``yes``/``on``) for the
      whole process. It wins over ``download=True``, so that an air-gapped cluster or a test
      suite can be sure that nothing touches the network.

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones and close matches), split out of range,
        or a corrupt file (the message names it).
    TypeError
        A parameter the dataset does not take (the message lists the allowed ones), or a
        ``split``/``seed`` that is not an int.
    DatasetNotFoundError
        The files are missing and downloads are off (the message lists the paths looked at and
        how to get them).
    DatasetDownloadError
        The files are missing and the download failed: no connection, HTTP error, timeout,
        dropped connection or checksum mismatch (one line naming the dataset, the URL, the
        reason, the paths looked at and how to place the file by hand).

    Examples
    --------
    >>> from dgl_rbgt.data import load_dataset
    >>> ds = load_dataset("csbm", num_nodes=2000, homophily=0.9, seed=0)
    >>> ds.graph.num_nodes(), ds.num_classes, ds.metric
    (2000, 5, 'accuracy')
    >>> cora = load_dataset("cora")  # doctest: +SKIP
    >>> cora.graph.num_edges(), int(cora.graph.ndata["test_mask"].sum())  # doctest: +SKIP
    (10556, 1000)
    """
    spec = get_spec(name)
    for value, arg in ((split, "split"), (seed, "seed")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{arg} must be an int, got {type(value).__name__} {value!r}")
    allowed = spec.params
    unknown = [p for p in params if p not in allowed]
    if unknown:
        allowed_txt = ", ".join(allowed) if allowed else "none"
        raise TypeError(
            f"load_dataset() got unexpected parameter(s) {', '.join(repr(p) for p in unknown)} for "
            f"dataset {spec.name!r}; allowed parameters: {allowed_txt}"
        )
    if "download" in allowed and not downloads_enabled():
        check_download(params.get("download", True))  # a wrong type is an error either way
        logger.debug("%s is set: loading %s with download=False", OFFLINE_ENV, spec.name)
        params = {**params, "download": False}
    resolved = data_root(root)
    logger.debug("loading %s from %s (split=%d, seed=%d, params=%s)", spec.name, resolved, split, seed, params)
    return spec.loader(spec, resolved, split, seed, **params)


def list_datasets(root: str | os.PathLike | None = None) -> list[DatasetInfo]:
    """All registered datasets with their family, metric, expected location and availability.

    ``location`` is the path the loader reads under the resolved data root (``root``, else
    ``$DGL_RBGT_DATA``, else ``~/.cache/dgl_rbgt/data``): the first of its candidate paths that
    exists, else the first it looks at. For a dataset that is not there and can be downloaded,
    it goes on with what :func:`load_dataset` will do about it: ``" (downloads on first use)"``,
    or ``" (downloads off: $DGL_RBGT_OFFLINE)"``.

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> from dgl_rbgt.data import list_datasets
    >>> with mock.patch.dict(os.environ, {"DGL_RBGT_OFFLINE": "0"}):
    ...     info = {d.name: d for d in list_datasets(root="/nonexistent")}
    >>> info["cora"].family, info["cora"].location, info["cora"].available
    ('planetoid', '/nonexistent/planetoid (downloads on first use)', False)
    >>> info["csbm"].location, info["csbm"].available
    ('generated', True)
    """
    resolved = data_root(root)
    if downloads_enabled():
        missing_note = " (downloads on first use)"
    else:
        missing_note = f" (downloads off: ${OFFLINE_ENV})"
    rows = []
    for spec in _SPECS.values():
        paths = spec.paths(resolved)
        available = bool(spec.available(resolved))
        # The candidate that is there (e.g. a bare Shchur npz, downloaded or not, beside no zip).
        location = str(next((p for p in paths if p.exists()), paths[0])) if paths else "generated"
        if not available and "download" in spec.params:
            location += missing_note
        rows.append(DatasetInfo(name=spec.name, family=spec.family, metric=spec.metric, location=location, available=available))
    return rows
