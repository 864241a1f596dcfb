"""The graph conventions every part of dgl-rbgt shares: the edge-type field and its codes, and
the types node features may be stored in.

Every transform of dgl-rbgt that adds edges marks them in ``graph.edata['etype']`` (int64) with one
of the codes of :class:`EdgeType`; layers such as :class:`~dgl_rbgt.nn.ExphormerConv` look the
codes up in an embedding table, and the samplers carry them into their tables, so the codes are
fixed and defined here once, below every other part of the package.
See :mod:`dgl_rbgt.transforms.edge_types` for the table of codes and the checks.
"""
from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

import torch
from dgl.base import DGLError

if TYPE_CHECKING:
    import dgl

__all__ = ["ETYPE", "ETYPE_DTYPE", "EdgeType", "edge_type_codes", "STORAGE_DTYPES"]

#: Types ``ndata['feat']`` may be stored in, by the name a recipe uses (models compute in float32:
#: see :mod:`dgl_rbgt.nn.stored_features`).
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

#: The edge-data field that holds the codes.
ETYPE = "etype"
#: How dgl-rbgt transforms store the codes: one byte per edge (1.2 GB less than int64 on a graph of
#: 170M edges); :func:`edge_type_codes` reads any integer dtype and returns int64.
ETYPE_DTYPE = torch.int8


class EdgeType(IntEnum):
    """Codes stored in ``graph.edata['etype']`` (as :data:`ETYPE_DTYPE`) by dgl-rbgt transforms."""

    GRAPH = 0
    EXPANDER = 1
    SELF_LOOP = 2
    VIRTUAL_IN = 3
    VIRTUAL_OUT = 4


def edge_type_codes(graph: "dgl.DGLGraph", name: str = "graph", widen: bool = True) -> torch.Tensor:
    """Return the edge-type codes of ``graph`` as an int64 tensor of shape ``(E,)`` (with
    ``widen=False``: the stored tensor itself, checked, in its own integer dtype).

    A graph without ``edata['etype']`` is a plain graph: all its edges get ``EdgeType.GRAPH``.
    An existing field must be a 1-D integer tensor whose values are all codes of
    :class:`EdgeType`; anything else raises :class:`~dgl.DGLError`.
    """
    num_edges = graph.num_edges()
    if ETYPE not in graph.edata:
        return torch.full((num_edges,), int(EdgeType.GRAPH), dtype=torch.int64, device=graph.device)
    codes = graph.edata[ETYPE]
    if codes.dim() != 1 or codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise DGLError(
            f"{name}.edata['{ETYPE}'] must be a 1-D integer tensor of edge-type codes, got dtype "
            f"{codes.dtype} and shape {tuple(codes.shape)}; rename the field if it means something "
            f"else (g.edata['my_type'] = g.edata.pop('{ETYPE}'))"
        )
    if num_edges:
        lo, hi = int(codes.min()), int(codes.max())
        if lo < min(EdgeType) or hi > max(EdgeType):
            raise DGLError(
                f"{name}.edata['{ETYPE}'] holds values in [{lo}, {hi}], outside the edge-type codes "
                f"of dgl_rbgt ({', '.join(f'{int(t)} {t.name}' for t in EdgeType)}); the field seems "
                f"to have another meaning: rename it before augmenting the graph "
                f"(g.edata['my_type'] = g.edata.pop('{ETYPE}'))"
            )
    return codes.to(torch.int64) if widen else codes
