"""Edge-type codes shared by the transforms and the sparse-attention layers.

Every transform of dgl-rbgt that adds edges marks them in ``graph.edata['etype']`` (int64) with one
of the codes of :class:`EdgeType`; layers such as :class:`~dgl_rbgt.nn.exphormer.ExphormerConv`
look the codes up in an embedding table, so the codes are fixed and shared:

=====  ===============  ==========================================================
code   name             edges
=====  ===============  ==========================================================
0      ``GRAPH``        edges of the input graph
1      ``EXPANDER``     random expander edges (:class:`~dgl_rbgt.transforms.expander.AddExpanderEdges`)
2      ``SELF_LOOP``    one loop per node (:func:`add_self_loops`)
3      ``VIRTUAL_IN``   real node -> virtual node (messages flow *into* the virtual node)
4      ``VIRTUAL_OUT``  virtual node -> real node (messages flow *out of* the virtual node)
=====  ===============  ==========================================================

A graph whose ``edata['etype']`` holds only these codes is taken to be one our transforms
produced (or one that follows the same convention); any other value means the field has another
meaning, and the transforms refuse it rather than silently mixing two vocabularies.
"""
from __future__ import annotations

import dgl
import torch
from dgl.base import DGLError

from .._checks import check_homogeneous
from ..conventions import ETYPE, ETYPE_DTYPE, EdgeType, edge_type_codes

__all__ = ["EdgeType", "ETYPE", "edge_type_codes", "add_self_loops"]

def _zeros_like_rows(value: torch.Tensor, rows: int) -> torch.Tensor:
    """Zeros with ``rows`` rows and the trailing shape, dtype and device of ``value``."""
    return torch.zeros((rows,) + tuple(value.shape[1:]), dtype=value.dtype, device=value.device)


def append_typed_edges(
    graph: dgl.DGLGraph, src: torch.Tensor, dst: torch.Tensor, codes: torch.Tensor | int
) -> dgl.DGLGraph:
    """Return a new graph: ``graph`` plus the edges ``src -> dst`` typed with ``codes``.

    The input graph is not modified. Node data is carried over (the same tensors, as DGL's own
    transforms do). Edge data is carried over on the existing edges and filled with zeros of the
    same dtype and trailing shape on the new ones; ``edata['etype']`` gets the existing codes
    (``GRAPH`` when the field was absent) followed by ``codes``, stored as
    :data:`~dgl_rbgt.conventions.ETYPE_DTYPE`.

    For a batched graph every new edge must join two nodes of the same member graph; the edges are
    reordered so that each member's edges stay contiguous (its old edges first, then its new ones)
    and ``batch_num_nodes`` / ``batch_num_edges`` are updated, so ``dgl.unbatch`` still works.
    """
    old_codes = edge_type_codes(graph).to(ETYPE_DTYPE)  # validated; stored in one byte per edge
    num_new = int(src.numel())
    new_codes = torch.as_tensor(codes, dtype=ETYPE_DTYPE, device=graph.device).expand(num_new)
    old_src, old_dst = graph.edges(order="eid")
    src = src.to(device=graph.device, dtype=graph.idtype)
    dst = dst.to(device=graph.device, dtype=graph.idtype)
    all_src = torch.cat([old_src, src])
    all_dst = torch.cat([old_dst, dst])
    order = None
    batch_size = graph.batch_size
    if batch_size > 1:
        node_counts = graph.batch_num_nodes()
        bounds = torch.cumsum(node_counts, 0)  # (B,) exclusive end of each member's node range
        member_src = torch.searchsorted(bounds, src.to(torch.int64), right=True)  # (E_new,)
        member_dst = torch.searchsorted(bounds, dst.to(torch.int64), right=True)
        if not bool(torch.equal(member_src, member_dst)):
            raise DGLError("new edges must join nodes of the same graph of the batch")
        old_member = torch.repeat_interleave(
            torch.arange(batch_size, device=graph.device), graph.batch_num_edges()
        )  # (E_old,)
        # A stable sort by member keeps old edges before new ones inside each member.
        order = torch.sort(torch.cat([old_member, member_src]), stable=True).indices
        all_src, all_dst = all_src[order], all_dst[order]
    result = dgl.graph(
        (all_src, all_dst), num_nodes=graph.num_nodes(), idtype=graph.idtype, device=graph.device
    )
    for key, value in graph.ndata.items():
        result.ndata[key] = value
    for key, value in graph.edata.items():
        if key == ETYPE:
            continue
        merged = torch.cat([value, _zeros_like_rows(value, num_new)])
        result.edata[key] = merged if order is None else merged[order]
    all_codes = torch.cat([old_codes, new_codes])
    result.edata[ETYPE] = all_codes if order is None else all_codes[order]
    if batch_size > 1:
        new_per_member = torch.bincount(member_src, minlength=batch_size)
        result.set_batch_num_nodes(graph.batch_num_nodes())
        result.set_batch_num_edges(graph.batch_num_edges() + new_per_member)
    return result


def add_self_loops(graph: dgl.DGLGraph) -> dgl.DGLGraph:
    """Return a new graph with one self-loop per node, typed ``EdgeType.SELF_LOOP`` (code 2).

    Loops already present are kept with their own code (a loop of the input graph stays
    ``GRAPH``), so a node may end up with two loops; attention layers then see the graph's own loop
    and the added one as different edge types. Other edge data is zero on the new loops.
    Works on batched graphs (each member gets its own loops; batch information stays valid).

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.transforms.edge_types import add_self_loops
    >>> g = add_self_loops(dgl.graph(([0, 1], [1, 2])))
    >>> g.edata["etype"].tolist()
    [0, 0, 2, 2, 2]
    """
    check_homogeneous(graph, allow_block=False)
    nodes = torch.arange(graph.num_nodes(), device=graph.device)
    return append_typed_edges(graph, nodes, nodes, int(EdgeType.SELF_LOOP))
