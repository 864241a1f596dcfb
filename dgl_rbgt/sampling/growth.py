"""Layer-wise mini-batches grown backwards through neighbour tables.

A mini-batch of target nodes is grown *backwards*: the last layer needs the targets and their
table entries, the layer before needs those nodes and their entries, and so on. Each node list
starts with the next layer's list (the prefix property), so a layer's destination features are the
first rows of its source features and the wide layer needs no index maps. A list grows by at most a
factor ``1 + k_l`` per layer, so a batch of ``B`` targets touches at most ``B * prod(1 + k_l)``
nodes, whatever the graph's degrees.
"""
from __future__ import annotations

import torch

from ..nn.spexphormer import TableBlock
from .tables import NeighbourTables

__all__ = ["grow_batch", "table_blocks"]


def _expand(nodes: torch.Tensor, entries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Node list ``nodes`` followed by the new nodes of ``entries`` in first-seen order.

    Returns the new list and ``entries`` remapped to positions in it. ``nodes`` must be distinct;
    they keep their positions (the prefix property).
    """
    cand = torch.cat([nodes, entries.reshape(-1)])  # (n + n*k,)
    uniq, inverse = torch.unique(cand, return_inverse=True)
    # First position of every distinct id; ``nodes`` come first, so their ranks are 0..n-1.
    first = torch.full((len(uniq),), len(cand), dtype=torch.int64, device=cand.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(cand), device=cand.device), reduce="amin")
    order = torch.argsort(first)  # distinct ids by first appearance
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    local = rank[inverse]  # (n + n*k,) positions in the new list
    return uniq[order], local[len(nodes):].view_as(entries)


def grow_batch(neighbourhoods: NeighbourTables, targets: torch.Tensor) -> tuple[list[torch.Tensor], list[TableBlock]]:
    """Layer-wise mini-batch of ``targets`` (distinct global ids) through the tables.

    Returns ``(node_lists, blocks)``: ``node_lists[l]`` are the global ids of node list ``l``
    (``node_lists[L]`` = ``targets``; each list is a prefix of the one before) and ``blocks[l]``
    the :class:`~dgl_rbgt.nn.spexphormer.TableBlock` of layer ``l`` with entries remapped into
    node list ``l``, as :class:`~dgl_rbgt.models.spexphormer.Spexphormer` expects.
    """
    if len(torch.unique(targets)) != len(targets):
        raise ValueError("targets must be distinct node ids (a node list holds each node once)")
    nodes = targets
    node_lists, blocks = [targets], []
    for layer in reversed(range(neighbourhoods.num_layers)):
        entries = neighbourhoods.tables[layer][nodes].to(torch.int64)  # (n_dst, k) global ids
        src_nodes, local = _expand(nodes, entries)
        blocks.append(TableBlock(local, neighbourhoods.etypes[layer][nodes].to(torch.int64),
                                 neighbourhoods.valid[layer][nodes], num_src=len(src_nodes)))
        node_lists.append(src_nodes)
        nodes = src_nodes
    return node_lists[::-1], blocks[::-1]


def table_blocks(neighbourhoods: NeighbourTables) -> list[TableBlock]:
    """Full-graph input of :class:`Spexphormer`: every layer's node list is all ``N`` nodes
    (compact tables are widened to int64)."""
    n = neighbourhoods.num_nodes
    return [TableBlock(t.to(torch.int64), e.to(torch.int64), v, num_src=n) for t, e, v in
            zip(neighbourhoods.tables, neighbourhoods.etypes, neighbourhoods.valid)]
