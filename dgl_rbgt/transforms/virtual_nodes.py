"""Virtual (global) nodes connected to every node of their graph, as in Exphormer's ``V`` part."""
from __future__ import annotations

import dgl
import torch
from dgl.transforms import BaseTransform

from dgl_rbgt._checks import check_homogeneous, check_positive_int
from dgl_rbgt.conventions import ETYPE_DTYPE
from dgl_rbgt.transforms.edge_types import ETYPE, EdgeType, edge_type_codes

__all__ = ["AddVirtualNodes", "IS_VIRTUAL"]

#: The node-data field that marks virtual nodes (bool).
IS_VIRTUAL = "is_virtual"


def _virtual_fill(value: torch.Tensor) -> int | float | bool:
    """Value given to virtual nodes in a node-data field of ``value``'s dtype."""
    if value.dtype == torch.bool:
        return False  # masks: virtual nodes are never in a split
    if value.is_floating_point() or value.is_complex():
        return 0  # features
    if value.dtype == torch.uint8:
        return 0
    return -1  # labels and ids: "none"


class AddVirtualNodes(BaseTransform):
    r"""Add ``num_virtual`` global nodes to every graph, joined both ways to each of its nodes.

    Returns a new graph (the input is not modified). For every graph (every member of a
    ``dgl.batch``) with ``n`` nodes, ``num_virtual`` nodes are appended after its own nodes, and
    ``2 * num_virtual * n`` edges after its own edges:

    * real node -> virtual node, ``edata['etype'] = 3`` (``EdgeType.VIRTUAL_IN``: messages flow
      *into* the virtual node), then
    * virtual node -> real node, ``edata['etype'] = 4`` (``EdgeType.VIRTUAL_OUT``: messages flow
      *out of* it).

    Virtual nodes are not joined to each other nor given loops. Existing edges keep their
    ``etype`` (``EdgeType.GRAPH`` = 0 if the field was absent; a field whose values are not
    :class:`~dgl_rbgt.transforms.edge_types.EdgeType` codes raises :class:`~dgl.DGLError`).

    Node data: ``ndata['is_virtual']`` (bool) is True exactly on virtual nodes, so a model can give
    them their own learned embedding. In every other node field virtual nodes get a neutral value:
    0 in floating-point fields (features), False in bool fields (``train_mask`` etc., so they
    never enter a loss or a metric), -1 in signed integer fields (``label``: "no class";
    ``dgl.NID``: "no original node"), 0 in uint8 fields. Edge data other than ``etype`` is zero
    on the new edges.

    For batched graphs the result is a valid batch: ``batch_num_nodes`` grows by
    ``num_virtual`` per member, ``batch_num_edges`` by ``2 * num_virtual * n``, and
    ``dgl.unbatch`` returns each member with its own virtual nodes last. Construction is
    vectorised (no Python loop over nodes or graphs).

    Parameters
    ----------
    num_virtual : int
        Virtual nodes per graph. Default: 1.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.transforms.virtual_nodes import AddVirtualNodes
    >>> g = dgl.batch([dgl.graph(([0], [1])), dgl.graph(([0, 1], [1, 2]))])
    >>> vg = AddVirtualNodes()(g)
    >>> vg.batch_num_nodes().tolist(), vg.batch_num_edges().tolist()
    ([3, 4], [5, 8])
    >>> vg.ndata["is_virtual"].tolist()
    [False, False, True, False, False, False, True]
    """

    #: Marks its edges in ``edata['etype']`` (models that need typed edges check for one).
    writes_edge_types = True

    def __init__(self, num_virtual: int = 1):
        self.num_virtual = check_positive_int(num_virtual, "num_virtual")

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_virtual={self.num_virtual})"

    def __call__(self, g: dgl.DGLGraph) -> dgl.DGLGraph:
        check_homogeneous(g, "g", allow_block=False)
        k = self.num_virtual
        device = g.device
        old_codes = edge_type_codes(g, "g").to(ETYPE_DTYPE)  # validates an existing etype field
        counts = g.batch_num_nodes().to(device=device, dtype=torch.int64)  # (B,) real nodes
        edge_counts = g.batch_num_edges().to(device=device, dtype=torch.int64)  # (B,)
        num_graphs = counts.numel()
        num_real = g.num_nodes()
        member = torch.repeat_interleave(torch.arange(num_graphs, device=device), counts)  # (N,)
        new_start = torch.cumsum(counts + k, 0) - (counts + k)  # (B,) first new id of each member
        # Real node v of member b moves up by k * b; member b's virtual nodes follow its n_b nodes.
        real_id = torch.arange(num_real, device=device) + k * member  # (N,) new id of old node
        virt_id = (new_start + counts).unsqueeze(1) + torch.arange(k, device=device)  # (B, k)

        # New edges of real node v: v -> each virtual node of its graph, and back.
        real_rep = real_id.repeat_interleave(k)  # (N k,) each real node k times
        virt_rep = virt_id[member].reshape(-1)  # (N k,) its graph's virtual nodes
        old_src, old_dst = g.edges(order="eid")
        old_src, old_dst = real_id[old_src.long()], real_id[old_dst.long()]
        edge_member = torch.repeat_interleave(torch.arange(num_graphs, device=device), edge_counts)
        new_member = member.repeat_interleave(k)  # (N k,)
        src = torch.cat([old_src, real_rep, virt_rep])
        dst = torch.cat([old_dst, virt_rep, real_rep])
        codes = torch.cat(
            [
                old_codes,
                torch.full_like(real_rep, int(EdgeType.VIRTUAL_IN), dtype=ETYPE_DTYPE),
                torch.full_like(real_rep, int(EdgeType.VIRTUAL_OUT), dtype=ETYPE_DTYPE),
            ]
        )
        # Group edges by member: old edges, then real->virtual, then virtual->real (stable sort
        # on member * 3 + block keeps the order inside each block).
        key = torch.cat([edge_member * 3, new_member * 3 + 1, new_member * 3 + 2])
        order = torch.sort(key, stable=True).indices
        num_new_nodes = num_real + k * num_graphs
        result = dgl.graph(
            (src[order], dst[order]), num_nodes=num_new_nodes, idtype=g.idtype, device=device
        )
        num_new_edges = 2 * k * num_real
        for key_name, value in g.edata.items():
            if key_name == ETYPE:
                continue
            pad = torch.zeros((num_new_edges,) + tuple(value.shape[1:]), dtype=value.dtype, device=device)
            result.edata[key_name] = torch.cat([value, pad])[order]
        result.edata[ETYPE] = codes[order]

        is_real = torch.ones(num_new_nodes, dtype=torch.bool, device=device)
        is_real[virt_id.reshape(-1)] = False
        for key_name, value in g.ndata.items():
            full = torch.full(
                (num_new_nodes,) + tuple(value.shape[1:]),
                _virtual_fill(value),
                dtype=value.dtype,
                device=value.device,
            )
            full[real_id] = value
            result.ndata[key_name] = full
        if IS_VIRTUAL in g.ndata:
            result.ndata[IS_VIRTUAL] = result.ndata[IS_VIRTUAL] | ~is_real  # earlier ones stay marked
        else:
            result.ndata[IS_VIRTUAL] = ~is_real
        result.set_batch_num_nodes(counts + k)
        result.set_batch_num_edges(edge_counts + 2 * k * counts)
        return result
