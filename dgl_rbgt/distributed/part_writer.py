"""Random partitions for DistDGL, written one part at a time.

:func:`dgl.distributed.partition_graph` builds every part in memory before it writes any: a
homogeneous copy of the graph, a reshuffled copy and every part with its halo, about 250 bytes per
edge on top of the graph (measured: 8.9 GB peak for a 3M-node, 30M-edge graph in 4 random parts,
so about 29 GB at 10M nodes). A random partition needs none of that: :func:`write_random_partitions`
assigns nodes to parts, computes the reshuffled ids once, and then builds, writes and frees one part
at a time, in DGL's own format (the files :func:`dgl.distributed.load_partition` reads; ids,
halo and edge ownership as DGL makes them), so DistDGL servers and trainers load them unchanged.

What a part holds (DGL's layout for one halo hop): its inner nodes first, then its halo nodes; the
in-edges of its inner nodes (``inner_edge = 1``: an edge belongs to its destination's part) and the
out-edges of its inner nodes that lead to other parts (``inner_edge = 0``); node features of its
inner nodes and edge features of its inner edges. Nodes and edges are renumbered ("reshuffled")
so that every part owns one contiguous range of node ids and one of edge ids (``node_map``,
``edge_map``), in original-id order inside each part.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

__all__ = ["random_assignment", "write_random_partitions"]

_NTYPE = "_N"
_ETYPE = "_N:_E:_N"


def random_assignment(num_nodes: int, num_parts: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random node-to-part assignment with part sizes differing by at most one.

    Examples
    --------
    >>> import torch
    >>> parts = random_assignment(10, 3, torch.Generator().manual_seed(0))
    >>> torch.bincount(parts).tolist()
    [4, 3, 3]
    """
    if num_parts < 1 or num_nodes < num_parts:
        raise ValueError(f"cannot cut {num_nodes} nodes into {num_parts} non-empty parts")
    parts = torch.empty(num_nodes, dtype=torch.int64)
    parts[torch.randperm(num_nodes, generator=generator)] = torch.arange(num_nodes) * num_parts // num_nodes
    return parts


def write_random_partitions(graph, node_parts: torch.Tensor, num_parts: int, out_dir: str | os.PathLike,
                            graph_name: str, graph_formats: list[str] | None = None) -> torch.Tensor:
    """Write ``graph`` as DistDGL partitions (one halo hop), one part at a time.

    Parameters
    ----------
    graph : dgl.DGLGraph
        Homogeneous graph; every ``ndata``/``edata`` entry is stored with the part that owns it.
    node_parts : torch.Tensor
        ``(N,)`` int64 part of every node (see :func:`random_assignment`); every part non-empty.
    num_parts : int
        Number of parts.
    out_dir : path
        Folder of ``<graph_name>.json`` and ``part<i>/``.
    graph_name : str
        The name DistDGL's ``DistGraph`` is opened with.
    graph_formats : list of str, optional
        Sparse formats saved with each part (default ``["csc"]``).

    Returns
    -------
    torch.Tensor
        ``(N,)`` int64: the original id of every new (reshuffled) node id, as
        ``partition_graph(..., return_mapping=True)`` returns.
    """
    import dgl
    from dgl.data.utils import save_tensors

    if not graph.is_homogeneous:
        raise ValueError("write_random_partitions takes a homogeneous graph")
    n, num_edges = graph.num_nodes(), graph.num_edges()
    if node_parts.shape != (n,) or node_parts.dtype != torch.int64:
        raise ValueError(f"node_parts must be an int64 tensor of shape ({n},), got {node_parts.dtype} "
                         f"{tuple(node_parts.shape)}")
    out = Path(out_dir).resolve()
    node_counts = torch.bincount(node_parts, minlength=num_parts)
    if len(node_counts) != num_parts or bool((node_counts == 0).any()):
        raise ValueError(f"node_parts must name every part 0..{num_parts - 1} at least once")
    # Reshuffled node ids: the nodes of part 0 first, then part 1, ..., original order inside.
    orig_nids = torch.sort(node_parts, stable=True).indices
    new_nid = torch.empty_like(orig_nids)
    new_nid[orig_nids] = torch.arange(n)
    node_ends = torch.cumsum(node_counts, 0)
    # Reshuffled edge ids: an edge belongs to its destination's part; original order inside.
    src, dst = graph.edges()
    part_dtype = torch.int16 if num_parts < 2**15 else torch.int64  # E entries: keep them small
    src_part, dst_part = node_parts[src].to(part_dtype), node_parts[dst].to(part_dtype)
    orig_eids = torch.sort(dst_part, stable=True).indices
    edge_counts = torch.bincount(dst_part.to(torch.int64), minlength=num_parts)
    edge_ends = torch.cumsum(edge_counts, 0)
    node_map, edge_map = [], []
    meta = {"graph_name": graph_name, "num_nodes": n, "num_edges": num_edges, "part_method": "random",
            "num_parts": num_parts, "halo_hops": 1, "node_map": {_NTYPE: node_map}, "edge_map": {_ETYPE: edge_map},
            "ntypes": {_NTYPE: 0}, "etypes": {_ETYPE: 0}}
    for p in range(num_parts):
        n0, n1 = int(node_ends[p] - node_counts[p]), int(node_ends[p])
        e0, e1 = int(edge_ends[p] - edge_counts[p]), int(edge_ends[p])
        node_map.append([n0, n1])
        edge_map.append([e0, e1])
        inner_orig = orig_eids[e0:e1]  # in-edges of the part's nodes, original ids, in new-id order
        outer_orig = torch.nonzero((src_part == p) & (dst_part != p)).squeeze(1)  # out-edges leaving it
        if len(outer_orig):
            # the new id of an outer edge: its rank among its destination part's edges
            outer_new = _new_edge_ids(outer_orig, dst_part, edge_ends, edge_counts)
        else:
            outer_new = outer_orig
        eids_orig = torch.cat([inner_orig, outer_orig])
        u, v = new_nid[src[eids_orig]], new_nid[dst[eids_orig]]
        del eids_orig, outer_orig
        # sorted new ids outside the part (only the ends outside it are gathered: at 2 parts of a
        # 170M-edge graph a copy of every end would be 2 GB)
        halo = torch.unique(torch.cat([u[(u < n0) | (u >= n1)], v[(v < n0) | (v >= n1)]]))
        local_ids = torch.cat([torch.arange(n0, n1), halo])

        def local(ids: torch.Tensor) -> torch.Tensor:
            """Local ids, in place of ``ids`` (a part's own nodes first, then the halo)."""
            outside = (ids < n0) | (ids >= n1)
            far = (n1 - n0) + torch.searchsorted(halo, ids[outside])
            ids -= n0
            ids[outside] = far
            return ids

        # Built as CSC with the edges numbered in CSC order: DGL then stores no edge-id array
        # beside the CSC (8 bytes per edge less on disk, in the server's shared memory and in
        # every trainer that maps it); local edge ids are free, the global ones are in edata.
        lu, lv = local(u), local(v)  # u and v are rewritten: no second copy of the part's edges
        del u, v
        order = torch.sort(lv, stable=True).indices
        indptr = torch.zeros(len(local_ids) + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(torch.bincount(lv, minlength=len(local_ids)), 0)
        part = dgl.graph(("csc", (indptr, lu[order], torch.empty(0, dtype=torch.int64))), num_nodes=len(local_ids))
        del lu, lv
        part.ndata[dgl.NID] = local_ids
        part.ndata["inner_node"] = (torch.arange(len(local_ids)) < n1 - n0).to(torch.uint8)
        part.ndata["part_id"] = torch.searchsorted(node_ends, local_ids, right=True)
        inner_edge = order < e1 - e0
        part.edata["inner_edge"] = inner_edge.to(torch.uint8)
        # global ids in CSC order: an inner edge's is e0 + its position, an outer one's is outer_new
        global_eids = order + e0
        global_eids[~inner_edge] = outer_new[order[~inner_edge] - (e1 - e0)]
        part.edata[dgl.EID] = global_eids
        del order, inner_edge, global_eids
        part_dir = out / f"part{p}"
        part_dir.mkdir(parents=True, exist_ok=True)
        inner_nodes = orig_nids[n0:n1]
        save_tensors(str(part_dir / "node_feat.dgl"),
                     {f"{_NTYPE}/{k}": _storable(v[inner_nodes]) for k, v in graph.ndata.items()})
        save_tensors(str(part_dir / "edge_feat.dgl"),
                     {f"{_ETYPE}/{k}": _storable(v[inner_orig]) for k, v in graph.edata.items()})
        dgl.save_graphs(str(part_dir / "graph.dgl"), [part], formats=graph_formats or ["csc"])
        meta[f"part-{p}"] = {"node_feats": f"part{p}/node_feat.dgl", "edge_feats": f"part{p}/edge_feat.dgl",
                             "part_graph": f"part{p}/graph.dgl"}
        del part, inner_orig, outer_new, local_ids
    (out / f"{graph_name}.json").write_text(json.dumps(meta, indent=4))
    return orig_nids


def _new_edge_ids(eids: torch.Tensor, dst_part: torch.Tensor, edge_ends: torch.Tensor,
                  edge_counts: torch.Tensor) -> torch.Tensor:
    """New ids of the original edges ``eids`` (sorted): the first edge of part q gets
    ``edge_ends[q] - edge_counts[q]``, and inside a part edges keep their original order, so an
    edge's new id is its part's start plus the number of that part's edges before it."""
    parts = dst_part[eids].to(torch.int64)
    new = torch.empty_like(eids)
    for q in torch.unique(parts).tolist():
        sel = parts == q
        mine = torch.nonzero(dst_part == q).squeeze(1)  # original ids of part q's edges, sorted
        new[sel] = (edge_ends[q] - edge_counts[q]) + torch.searchsorted(mine, eids[sel])
    return new


def _storable(t: torch.Tensor) -> torch.Tensor:
    """DGL's tensor files hold no bool: masks are stored as uint8, as partition_graph does."""
    return t.to(torch.uint8) if t.dtype == torch.bool else t
