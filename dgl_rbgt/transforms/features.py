"""Feature preprocessing transforms (thin, typed wrappers over DGL's own), and a degree column."""
from __future__ import annotations

import os
import tempfile

import dgl
import numpy as np
import torch
from dgl.transforms import BaseTransform, RowFeatNormalizer

from .._checks import check_choice, check_homogeneous
from ..conventions import STORAGE_DTYPES

__all__ = ["NormalizeFeatures", "AddDegreeFeature", "CastFeatures", "MemoryMapFeatures"]


def _features_of(g: dgl.DGLGraph, who: str):
    """``g.ndata['feat']`` of a homogeneous graph, or an error naming the transform ``who``."""
    check_homogeneous(g, allow_block=False)
    if "feat" not in g.ndata:
        raise KeyError(f"{who} needs graph.ndata['feat']")
    return g.ndata["feat"]


class NormalizeFeatures(BaseTransform):
    r"""Scale each node's ``ndata['feat']`` row to sum to one (DGL's ``RowFeatNormalizer``),
    as GCN does for bag-of-words features. Returns a new graph; the input is not modified.

    Parameters
    ----------
    subtract_min : bool
        Shift each row by its minimum first (for features that can be negative).

    Example
    -------
    >>> import dgl, torch
    >>> from dgl_rbgt.transforms import NormalizeFeatures
    >>> g = dgl.graph(([0], [1]))
    >>> g.ndata["feat"] = torch.tensor([[1., 3.], [2., 2.]])
    >>> NormalizeFeatures()(g).ndata["feat"]
    tensor([[0.2500, 0.7500],
            [0.5000, 0.5000]])
    >>> g.ndata["feat"][0, 0].item()  # unchanged
    1.0
    """

    def __init__(self, subtract_min: bool = False):
        self.subtract_min = subtract_min
        self._dgl = RowFeatNormalizer(subtract_min=subtract_min, node_feat_names=["feat"])

    def __call__(self, g: dgl.DGLGraph) -> dgl.DGLGraph:
        _features_of(g, "NormalizeFeatures")
        # DGL's normaliser writes into the feature tensor in place: hand it a copy.
        out = g.local_var()
        out.ndata["feat"] = g.ndata["feat"].clone()
        return self._dgl(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(subtract_min={self.subtract_min})"


class AddDegreeFeature(BaseTransform):
    r"""Append :math:`\log(1 + d_i)`, node ``i``'s in-degree, to ``ndata['feat']`` as a last column.

    A mean-aggregating layer (SAGE, a random group's attention) cannot see how many neighbours it
    averaged, and a batch norm removes the scale a GCN's sum would keep. Graphormer gives each node
    its degree as an input embedding (its centrality encoding, Ying et al., NeurIPS 2021); here it
    is one column, logarithmic because degrees are heavy-tailed. The value depends on the node's own
    edges only, so graphs seen in training and graphs seen later get the same encoding. Edges added
    by earlier transforms (self-loops, expander edges) are counted: put this one first to count the
    dataset's own. Returns a new graph; the input is not modified.

    Example
    -------
    >>> import dgl, torch
    >>> from dgl_rbgt.transforms import AddDegreeFeature
    >>> g = dgl.graph(([0, 1, 2], [1, 2, 1]))
    >>> g.ndata["feat"] = torch.zeros(3, 2)
    >>> AddDegreeFeature()(g).ndata["feat"]
    tensor([[0.0000, 0.0000, 0.0000],
            [0.0000, 0.0000, 1.0986],
            [0.0000, 0.0000, 0.6931]])
    """

    def __call__(self, g: dgl.DGLGraph) -> dgl.DGLGraph:
        feat = _features_of(g, "AddDegreeFeature")
        if feat.dim() != 2 or not torch.is_floating_point(feat) or feat.layout != torch.strided:
            raise TypeError(f"AddDegreeFeature appends a column to dense floating-point features of shape "
                            f"(N, D); ndata['feat'] is a {feat.layout} {feat.dtype} tensor of shape {tuple(feat.shape)}")
        degree = torch.log1p(g.in_degrees().to(torch.float64)).to(device=feat.device, dtype=feat.dtype)
        out = g.local_var()
        out.ndata["feat"] = torch.cat([feat, degree.unsqueeze(1)], dim=1)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CastFeatures(BaseTransform):
    r"""Store ``ndata['feat']`` as ``dtype``: ``"float16"`` or ``"bfloat16"`` halves the features'
    memory (1.3 GB of 2.6 GB on 10M nodes with 64 features), ``"float32"`` is the default storage.
    Returns a new graph; the input is not modified.

    Models still compute in float32: batches cast the rows they gather, and Spexphormer's
    full-graph passes cast chunks of rows (:mod:`dgl_rbgt.nn.stored_features`). Half precision
    keeps 11 significant bits (float16, about 3 decimal digits, magnitudes up to 65,504) or 8
    (bfloat16, float32's range); a feature that does not fit float16's range is an error, not an
    Inf.

    Parameters
    ----------
    dtype : str
        ``"float16"``, ``"bfloat16"`` or ``"float32"``.

    Example
    -------
    >>> import dgl, torch
    >>> from dgl_rbgt.transforms import CastFeatures
    >>> g = dgl.graph(([0], [1]))
    >>> g.ndata["feat"] = torch.tensor([[0.1, 3.0], [2.0, -1.0]])
    >>> CastFeatures("float16")(g).ndata["feat"].dtype
    torch.float16
    >>> g.ndata["feat"].dtype  # unchanged
    torch.float32
    """

    def __init__(self, dtype: str = "float16"):
        self.dtype = check_choice(dtype, "dtype", tuple(STORAGE_DTYPES))

    def __call__(self, g: dgl.DGLGraph) -> dgl.DGLGraph:
        feat = _features_of(g, "CastFeatures")
        if not torch.is_floating_point(feat):
            raise TypeError(f"CastFeatures casts floating-point features; ndata['feat'] has dtype {feat.dtype}")
        cast = feat.to(STORAGE_DTYPES[self.dtype])
        if self.dtype == "float16" and not bool(torch.isfinite(cast).all()) and bool(torch.isfinite(feat).all()):
            big = float(feat.abs().max())
            raise ValueError(f"ndata['feat'] holds values up to {big:.4g}, beyond float16's 65,504: "
                             f"use dtype='bfloat16' or scale the features")
        out = g.local_var()
        out.ndata["feat"] = cast
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dtype={self.dtype!r})"


class MemoryMapFeatures(BaseTransform):
    r"""Move ``ndata['feat']`` out of the process's own memory into a memory-mapped file.

    The features are written to a new file in ``dir`` (the system's temporary folder by default),
    mapped copy-on-write, and the file's name is removed at once: the mapping keeps the data, and
    nothing is left behind when the process ends. The pages are then file-backed: the kernel
    reads them on first use and may drop them again under memory pressure, where anonymous memory
    could only be swapped or the process killed. They still count in the resident memory while
    they are in the page cache. Writes into the features stay private to the process.

    Parameters
    ----------
    dir : str, optional
        Folder for the file; it needs room for the features.

    Example
    -------
    >>> import dgl, torch
    >>> from dgl_rbgt.transforms import MemoryMapFeatures
    >>> g = dgl.graph(([0], [1]))
    >>> g.ndata["feat"] = torch.tensor([[0.5, 3.0], [2.0, -1.0]])
    >>> out = MemoryMapFeatures()(g)
    >>> torch.equal(out.ndata["feat"], g.ndata["feat"])
    True
    """

    def __init__(self, dir: str | None = None):
        if dir is not None and not isinstance(dir, str):
            raise TypeError(f"dir must be a folder path (str) or None, got {type(dir).__name__}")
        if dir is not None and not os.path.isdir(dir):
            raise ValueError(f"dir must be an existing folder, got {dir!r}")
        self.dir = dir

    def __call__(self, g: dgl.DGLGraph) -> dgl.DGLGraph:
        feat = _features_of(g, "MemoryMapFeatures")
        if feat.device.type != "cpu" or feat.layout != torch.strided:
            raise ValueError(f"MemoryMapFeatures maps dense CPU features, got a {feat.layout} tensor on {feat.device}")
        if feat.numel() == 0:
            raise ValueError(f"ndata['feat'] has shape {tuple(feat.shape)}: nothing to map")
        # numpy has no bfloat16: its bits travel as int16
        raw = feat.contiguous()
        raw = raw.view(torch.int16) if raw.dtype == torch.bfloat16 else raw
        fd, path = tempfile.mkstemp(prefix="dgl-rbgt-feat-", suffix=".bin", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as f:
                for start in range(0, raw.shape[0], 1 << 18):  # no second full copy while writing
                    f.write(raw[start:start + (1 << 18)].numpy().tobytes())
            mapped = np.memmap(path, dtype=raw.numpy().dtype, mode="c", shape=tuple(raw.shape))
        finally:
            os.unlink(path)  # the mapping keeps the data; no file outlives the process
        out = g.local_var()
        out.ndata["feat"] = torch.from_numpy(mapped).view(feat.dtype)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dir={self.dir!r})"
