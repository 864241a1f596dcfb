"""Attention-score-driven neighbourhood sampling (Spexphormer's sparsification step).

Spexphormer (https://arxiv.org/abs/2411.16278) trains a narrow attention network on the graph plus
expander and self-loop edges, reads its per-layer attention scores, and keeps for every node and
every layer a fixed number ``k`` of incoming edges drawn with probabilities proportional to those
scores. The wide network then attends over these ``N x k`` neighbour tables with dense gathers.

:func:`sparsify` draws the tables without a Python loop over nodes: the in-edges are grouped by
destination once, then each layer is drawn over ranges of destinations holding about two million
in-edges each, with one integer sort per range (so the working memory does not grow with the
graph).

Sampling law (``method="reservoir"``)
-------------------------------------
For a destination node ``v`` whose candidate in-edges ``e`` have weights ``w_e > 0``, the ``k``
kept edges are a weighted sample *without replacement* in the sense of successive sampling: the
first edge is ``e`` with probability ``w_e / sum(w)``, the next one is drawn the same way from the
rest, and so on. We draw it with Efraimidis-Spirakis keys ``-log(U_e) / w_e`` (``U_e`` uniform)
and keep the ``k`` smallest, which has exactly that law. DGL's ``sample_neighbors(prob=...,
replace=False)`` draws successively too, but it cannot give every node exactly ``k`` entries, and
it is not vectorised across the layer-wise resampling we need.

Conventions
-----------
- **Candidates** of a node are its in-edges with a positive score (``method="uniform"``: all its
  in-edges). An edge with score 0 is never drawn.
- **Deficient nodes** (fewer than ``k`` candidates) keep every candidate, in key order, and fill
  the remaining slots with draws *with* replacement among their candidates, weighted by score
  (equally for ``"uniform"``). Every node with at least one candidate gets exactly ``k`` entries.
- **All-zero scores**: a node with in-edges whose scores are all 0 has no candidate;
  ``zero_fallback="uniform"`` gives all its in-edges equal weight instead, ``"error"`` raises.
- **Nodes without candidates** (zero in-degree) get ``k`` *masked* entries: the table points to the
  node itself (``tables[v] = v``, a valid gather index), ``edge_ids = -1``, ``etypes = 0`` and
  ``valid = False``. Table-based layers exclude masked entries from their softmax; a row with no
  valid entry attends to nothing (output 0, as DGL's edge softmax gives a node without in-edges),
  so the layer needs no special case. :meth:`NeighbourTables.to_graphs` leaves them out.
  Graphs with self-loops (Spexphormer always adds them) have no such node.
"""
from __future__ import annotations

from typing import Sequence

import dgl
import torch
from dgl.base import DGLError

from .._checks import check_choice, check_feat, check_homogeneous, check_nonempty, check_positive_int
from ..conventions import ETYPE
from .tables import NeighbourTables

__all__ = ["Sparsifier", "sparsify", "DEFAULT_K", "METHODS", "ZERO_FALLBACKS"]

#: Entries kept per node and layer when ``k`` is not given: the Spexphormer paper's final networks
#: keep 5 neighbours per layer on Amazon Photo and Coauthor CS (its published configurations; 2 on Actor, 5-12 on
#: the heterophilous graphs).
DEFAULT_K = 5

METHODS = ("reservoir", "topk", "uniform")
ZERO_FALLBACKS = ("uniform", "error")

# Clears the sign bit: used to turn IEEE-754 float64 bit patterns into order-preserving int64.
_LOW63 = 0x7FFF_FFFF_FFFF_FFFF
# The sign bit of an int64, as a (negative) Python int that torch accepts as an int64 scalar.
_SIGN64 = -(1 << 63)
# Fewest key bits for the packed (destination, key) sort; below it, two sorts (see _segment_order).
_PACKED_MIN_KEY_BITS = 40
# In-edges per chunk of destination nodes drawn together: sparsify's temporaries take about 100
# bytes per edge of a chunk, so about 200 MB at most, whatever the graph's size.
_CHUNK_EDGES = 1 << 21


def _ordered_int64(x: torch.Tensor) -> torch.Tensor:
    """Map float64 values to int64 with the same order (integer sorts are several times faster).

    Non-negative floats already compare like their bit patterns; for negative ones all bits but
    the sign are flipped so that a larger magnitude gives a smaller integer.
    """
    bits = x.to(torch.float64).view(torch.int64)
    return bits ^ ((bits >> 63) & _LOW63)


def _check_scores(scores, num_edges: int) -> torch.Tensor:
    check_feat(scores, "scores", ndim=(1, 2), last_dim=num_edges, finite=False)
    if scores.numel() and not bool(torch.isfinite(scores).all()):
        raise ValueError("scores contains NaN or Inf values; attention scores must be finite")
    if scores.numel() and bool((scores < 0).any()):
        raise ValueError(f"scores must be nonnegative, got a minimum of {float(scores.min()):.6g}")
    return scores


def _check_ks(k, scores: torch.Tensor) -> list[int]:
    """Per-layer k values; the number of layers comes from ``scores`` (L, E) or from a k list."""
    if isinstance(k, Sequence) and not isinstance(k, (str, bytes)):
        ks = [check_positive_int(v, f"k[{i}]") for i, v in enumerate(k)]
        if not ks:
            raise ValueError("k must be an int or a non-empty list of ints (one per layer), got []")
        if scores.dim() == 2 and len(ks) != scores.shape[0]:
            raise ValueError(f"k has {len(ks)} entries but scores has {scores.shape[0]} layers "
                             f"(shape {tuple(scores.shape)}); give one k per layer or a single int")
        return ks
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int or a list of ints, got {type(k).__name__} {k!r}")
    check_positive_int(k, "k")
    return [k] * (scores.shape[0] if scores.dim() == 2 else 1)


def sparsify(
    g: dgl.DGLGraph,
    scores: torch.Tensor,
    k: int | Sequence[int] = DEFAULT_K,
    *,
    method: str = "reservoir",
    generator: torch.Generator | None = None,
    return_graphs: bool = False,
    zero_fallback: str = "uniform",
) -> NeighbourTables:
    r"""Keep ``k`` incoming edges per node and layer, drawn with probabilities given by ``scores``.

    For every layer :math:`l` and destination node :math:`v` with candidate in-edges
    :math:`\mathcal{N}(v)` (positive score), ``method="reservoir"`` keeps the :math:`k_l` edges with
    the smallest Efraimidis-Spirakis keys

    .. math::
        \kappa_e = -\log(U_e) / s^{(l)}_e, \qquad U_e \sim \mathcal{U}(0, 1) \text{ i.i.d.},

    a weighted sample without replacement (successive sampling). Nodes with fewer than
    :math:`k_l` candidates keep them all and fill up with draws with replacement
    (probability :math:`s_e / \sum_{\mathcal{N}(v)} s`). See the module notes for nodes without
    candidates and all-zero scores.

    Parameters
    ----------
    g : DGLGraph
        Homogeneous graph (not a block) whose edges the scores belong to, usually the graph plus
        expander and self-loop edges on which the score estimator was trained.
    scores : Tensor
        ``(E,)`` or ``(L, E)`` nonnegative finite floats, one row per layer (for example
        :meth:`~dgl_rbgt.models.spexphormer.ScoreEstimator.attention_scores`). Only the relative
        sizes among a node's in-edges matter. A ``(E,)`` tensor is used for every layer.
    k : int or list of int
        Entries per node: one value for all layers, or one per layer (``len(k) == L``; with
        ``(E,)`` scores the list sets the number of layers). Default :data:`DEFAULT_K` (5, as the
        Spexphormer paper on Photo and CS).
    method : str
        ``"reservoir"`` (weighted without replacement, above), ``"topk"`` (the :math:`k_l`
        highest scores, ties broken by the lower edge id; deficient nodes still fill up at random as
        for ``"reservoir"``) or ``"uniform"`` (scores ignored: uniform without replacement among all
        in-edges).
    generator : torch.Generator, optional
        Source of randomness (on the graph's device); torch's global generator when None.
    return_graphs : bool
        Also build the per-layer DGLGraphs (:meth:`NeighbourTables.to_graphs`) and store them
        in the result's ``graphs``.
    zero_fallback : str
        For nodes with in-edges whose scores are all 0: ``"uniform"`` weighs those edges equally,
        ``"error"`` raises ``ValueError``.

    Returns
    -------
    NeighbourTables
        Per layer ``(N, k_l)`` tables of source ids, edge ids, edge types and validity.

    Raises
    ------
    TypeError
        ``g`` is not a DGLGraph, ``scores`` is not a float tensor, ``k`` is not an int / list of
        ints, ``generator`` is not a ``torch.Generator``.
    ValueError
        ``scores`` has the wrong number of dimensions or edges, negative, NaN or Inf values; ``k``
        below 1 or a list whose length differs from the number of score rows; unknown ``method``
        or ``zero_fallback``; all-zero scores with ``zero_fallback="error"``.
    DGLError
        ``g`` is a heterograph or a block, or has no nodes or no edges.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.transforms import sparsify
    >>> g = dgl.add_self_loop(dgl.rand_graph(6, 20))
    >>> scores = torch.rand(2, g.num_edges())  # two layers
    >>> nb = sparsify(g, scores, [3, 2], generator=torch.Generator().manual_seed(0))
    >>> [tuple(t.shape) for t in nb.tables]
    [(6, 3), (6, 2)]
    >>> [int(h.in_degrees().min()) for h in nb.to_graphs()]
    [3, 2]
    >>> sparsify(g, scores).ks  # k defaults to DEFAULT_K (5) for every layer
    [5, 5]
    """
    return Sparsifier(g, scores).draw(k, method=method, generator=generator, return_graphs=return_graphs,
                                      zero_fallback=zero_fallback)


class Sparsifier:
    """:func:`sparsify` for repeated draws from the same graph and scores.

    The construction does the per-graph work once: it groups the in-edges by destination and
    stores the scores, source ids, edge types and edge ids in that order (32-bit ids where they
    fit), so each :meth:`draw` reads contiguous slices and only sorts. A training loop that
    resamples every epoch keeps one (:class:`~dgl_rbgt.batching.TableBatching`
    does); the graph itself is not kept.

    Parameters
    ----------
    g : DGLGraph
        Homogeneous graph (not a block), as for :func:`sparsify`.
    scores : Tensor
        ``(E,)`` or ``(L, E)`` nonnegative finite floats, as for :func:`sparsify`.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.sampling import Sparsifier
    >>> g = dgl.add_self_loop(dgl.rand_graph(6, 20))
    >>> sampler = Sparsifier(g, torch.rand(2, g.num_edges()))
    >>> nb = sampler.draw([3, 2], generator=torch.Generator().manual_seed(0))
    >>> [tuple(t.shape) for t in nb.tables], sampler.num_layers
    ([(6, 3), (6, 2)], 2)
    """

    def __init__(self, g: dgl.DGLGraph, scores: torch.Tensor):
        check_homogeneous(g, "g", allow_block=False)
        check_nonempty(g, "g")
        num_nodes, num_edges = g.num_nodes(), g.num_edges()
        if num_edges == 0:
            raise DGLError("g has no edges, so there is nothing to sample; add self-loops or expander "
                           "edges first (dgl_rbgt.transforms.edge_types.add_self_loops)")
        scores = _check_scores(scores, num_edges)
        device = g.device
        self.num_nodes, self.num_edges = num_nodes, num_edges
        self._per_layer = scores.dim() == 2  # (L, E); else one row shared by every layer
        ids = torch.int32 if max(num_nodes, num_edges) < 2**31 else torch.int64
        src, dst = g.edges(order="eid")
        self.in_deg = torch.bincount(dst, minlength=num_nodes)  # (N,)
        self.indptr = torch.zeros(num_nodes + 1, dtype=torch.int64, device=device)
        self.indptr[1:] = torch.cumsum(self.in_deg, 0)  # each node's in-edges: [indptr[v], indptr[v+1])
        # Edge ids grouped by destination, in edge-id order within a node (a 32-bit sort when it fits).
        by_dst = torch.sort(dst.to(torch.int32) if num_nodes < 2**31 else dst, stable=True).indices
        del dst
        self._eids = by_dst.to(ids)  # (E,) position -> edge id
        self._src = src.index_select(0, by_dst).to(ids)  # (E,) position -> source node
        etype = g.edata[ETYPE] if ETYPE in g.edata else None
        if etype is not None:
            etype = etype.index_select(0, by_dst.to(etype.device))
            if num_edges and -128 <= int(etype.min()) and int(etype.max()) < 128:
                etype = etype.to(torch.int8)  # a handful of type codes: one byte per edge
        self._etype = etype
        rows = scores.to(device) if self._per_layer else scores.to(device).unsqueeze(0)
        self._scores = rows.index_select(1, by_dst)  # (L or 1, E) in position order
        self._chunks = _destination_chunks(self.indptr, _CHUNK_EDGES)

    @property
    def num_layers(self) -> int | None:
        """Score rows (layers); None for ``(E,)`` scores, shared by any number of layers."""
        return self._scores.shape[0] if self._per_layer else None

    def draw(self, k: int | Sequence[int] = DEFAULT_K, *, method: str = "reservoir",
             generator: torch.Generator | None = None, return_graphs: bool = False,
             zero_fallback: str = "uniform", compact: bool = False) -> "NeighbourTables":
        """One draw of the neighbour tables; the arguments are :func:`sparsify`'s.

        ``compact=True`` returns the tables in their storage form: source ids in int32 (when the
        graph's ids fit), edge types in int8 (when the codes fit) and no edge ids (``edge_ids``
        None), 6 bytes per entry instead of 25. The draw is the same.
        """
        if compact and return_graphs:
            raise ValueError("return_graphs needs the edge ids, which compact=True leaves out")
        ks = _check_ks(k, self._scores if self._per_layer else self._scores[0])
        check_choice(method, "method", METHODS)
        check_choice(zero_fallback, "zero_fallback", ZERO_FALLBACKS)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        num_nodes, device = self.num_nodes, self.indptr.device
        wide = self._src.dtype if compact else torch.int64
        self_ref = torch.arange(num_nodes, dtype=wide, device=device).unsqueeze(1)  # (N, 1) masked entries
        tables, edge_ids, etypes, valids = [], [], [], []
        for layer, k_l in enumerate(ks):
            score = self._scores[layer if self._per_layer else 0]
            pos = torch.empty(num_nodes, k_l, dtype=torch.int64, device=device)  # kept positions
            for v0, v1 in self._chunks:
                pos[v0:v1] = _draw_chunk(score, self.indptr, self.in_deg, v0, v1, k_l, method,
                                         zero_fallback, layer, generator)
            valid = pos >= 0  # (N, k): False only for nodes without candidates
            safe = pos.clamp(min=0)
            tables.append(torch.where(valid, self._src[safe].to(wide), self_ref))
            if not compact:
                edge_ids.append(torch.where(valid, self._eids[safe].to(torch.int64), -1))
            if self._etype is None:
                etypes.append(torch.zeros(safe.shape, dtype=torch.int8 if compact else torch.int64,
                                          device=device))
            else:
                types = self._etype[safe]
                etypes.append(torch.where(valid, types if compact else types.to(torch.int64), 0))
            valids.append(valid)
            del pos, safe
        result = NeighbourTables(tables, None if compact else edge_ids, etypes, valids, num_nodes)
        if return_graphs:
            result.graphs = result.to_graphs()
        return result


def _destination_chunks(indptr: torch.Tensor, max_edges: int) -> list[tuple[int, int]]:
    """Consecutive node ranges ``[v0, v1)`` with at most ``max_edges`` in-edges each (a node with
    more gets a range of its own)."""
    num_nodes = indptr.numel() - 1
    bounds = [0]
    while bounds[-1] < num_nodes:
        start = bounds[-1]
        limit = torch.tensor(int(indptr[start]) + max_edges, device=indptr.device)
        end = int(torch.searchsorted(indptr, limit, right=True)) - 1  # last v with indptr[v] <= limit
        bounds.append(min(max(end, start + 1), num_nodes))
    return list(zip(bounds[:-1], bounds[1:]))


def _draw_chunk(score: torch.Tensor, indptr: torch.Tensor, in_deg: torch.Tensor, v0: int, v1: int,
                k: int, method: str, zero_fallback: str, layer: int,
                generator: torch.Generator | None) -> torch.Tensor:
    """Kept edge positions ``(v1 - v0, k)`` of destinations ``v0 .. v1-1`` (-1 where masked).

    ``score`` is in position order (edges grouped by destination), so the range's edges are one
    contiguous slice, and every per-edge temporary covers only them: the working memory is
    bounded by the chunk size rather than by the graph.
    """
    n = v1 - v0
    e0, e1 = int(indptr[v0]), int(indptr[v1])
    m = e1 - e0
    if m == 0:  # no node of the range has an in-edge: all masked
        return torch.full((n, k), -1, dtype=torch.int64, device=indptr.device)
    deg = in_deg[v0:v1]
    local_indptr = indptr[v0:v1 + 1] - e0
    local_dst = torch.repeat_interleave(torch.arange(n, device=deg.device), deg)  # (m,)
    weight, all_positive = _layer_weights(score[e0:e1], local_dst, deg, n, method, zero_fallback, layer, v0)
    num_cand = deg if all_positive else torch.bincount(local_dst[weight > 0], minlength=n)  # (n,)
    local_dst = local_dst.to(torch.int32) if n < 2**31 else local_dst
    order = _segment_order(weight, local_dst, method, generator, all_positive)  # (m,) local positions
    del local_dst
    # Slot j of node v holds the j-th edge of v's sorted segment, for j < min(k, candidates).
    slots = torch.arange(k, device=order.device)
    filled = slots.unsqueeze(0) < num_cand.unsqueeze(1)  # (n, k)
    at = (local_indptr[:-1].unsqueeze(1) + slots).clamp(max=m - 1)  # (n, k) into order
    table = torch.where(filled, order[at], torch.full_like(at, -1))  # (n, k) local positions
    _fill_deficient(table, order, local_indptr, num_cand, weight, k, generator)
    return torch.where(table >= 0, table + e0, table)


def _layer_weights(score: torch.Tensor, dst: torch.Tensor, in_deg: torch.Tensor, num_nodes: int,
                   method: str, zero_fallback: str, layer: int, first_node: int = 0) -> tuple[torch.Tensor, bool]:
    """Float64 sampling weights of one layer's edges into ``num_nodes`` destinations (``dst``
    local ids; ``first_node`` is the first one's graph id), with the all-zero fallback applied,
    and whether they are all positive (then every in-edge is a candidate)."""
    if method == "uniform":
        return torch.ones_like(score, dtype=torch.float64), True
    weight = score.to(torch.float64)
    if bool((weight > 0).all()):
        return weight, True
    node_sum = torch.zeros(num_nodes, dtype=torch.float64, device=weight.device).index_add_(0, dst, weight)
    all_zero = (node_sum == 0) & (in_deg > 0)  # (N,) nodes with in-edges but no candidate
    if bool(all_zero.any()):
        nodes = all_zero.nonzero().flatten() + first_node
        if zero_fallback == "error":
            raise ValueError(
                f"scores of layer {layer} are all zero on the in-edges of {len(nodes)} node(s) "
                f"(first: {nodes[:5].tolist()}); pass zero_fallback='uniform' to weigh their "
                f"in-edges equally")
        weight = torch.where(all_zero[dst], torch.ones_like(weight), weight)
    return weight, bool((weight > 0).all())


def _segment_order(weight: torch.Tensor, dst: torch.Tensor, method: str,
                   generator: torch.Generator | None, all_positive: bool) -> torch.Tensor:
    """Edge ids sorted by (destination, key): each node's segment starts with its kept edges.

    Random keys (``reservoir``, ``uniform``) are packed with the destination into one int64,
    ``dst`` in the high bits and the key's leading bits below, and sorted once; CPU torch sorts
    integers with a radix sort, and one sort with no gathers in between is about twice as fast
    as two. The key keeps at least 40 bits (sign, exponent and 28 mantissa bits of a float64
    key), so ties among a node's random keys are vanishingly rare and only ever fall back to edge
    id order. ``topk`` (exact score order, ties by edge id) and ranges of more than 2^23
    destinations use one global sort by key, then a stable sort by destination.
    """
    num_edges = weight.numel()
    num_nodes_bits = max(int(dst.max()).bit_length(), 1) if num_edges else 1
    key_bits = 63 - num_nodes_bits
    packed = method != "topk" and key_bits >= _PACKED_MIN_KEY_BITS
    if method == "uniform":
        # Any i.i.d. continuous key gives a uniform order; random integers need no float work.
        bits = key_bits if packed else 62
        key = torch.randint(0, 2**bits, (num_edges,), generator=generator, device=weight.device)
    elif method == "topk":
        key = _ordered_int64(-weight)  # largest score first; zero weights (-0.0) last
    else:
        # log(-log U) - log w: Efraimidis-Spirakis keys in log space, so tiny weights cannot
        # overflow; zero weights get +inf and end each segment.
        expo = torch.empty(num_edges, dtype=torch.float64, device=weight.device).exponential_(
            generator=generator)
        log_key = expo.log_().sub_(weight.log())
        if not all_positive:
            log_key.masked_fill_(weight == 0, float("inf"))
        key = _ordered_int64(log_key)
        if packed:
            # Signed order -> unsigned order (flip the sign bit), then keep the top key_bits bits
            # (a logical shift: torch's >> on int64 is arithmetic, so mask the sign extension).
            key = ((key ^ _SIGN64) >> (64 - key_bits)) & ((1 << key_bits) - 1)
    if packed:
        return torch.sort((dst.to(torch.int64) << key_bits) | key, stable=True).indices
    # Stable: topk ties stay in edge-id order.
    by_key = torch.sort(key, stable=True).indices
    by_dst = torch.sort(dst[by_key], stable=True).indices
    return by_key[by_dst]


def _fill_deficient(eid_table: torch.Tensor, order: torch.Tensor, indptr: torch.Tensor,
                    num_cand: torch.Tensor, weight: torch.Tensor, k: int,
                    generator: torch.Generator | None) -> None:
    """Fill slots ``num_cand[v] .. k-1`` of nodes with ``0 < num_cand < k`` by weighted draws with
    replacement among their candidates (in place)."""
    deficient = ((num_cand > 0) & (num_cand < k)).nonzero().flatten()  # (D,)
    if deficient.numel() == 0:
        return
    width = int(num_cand[deficient].max())  # < k
    cols = torch.arange(width, device=order.device)
    is_cand = cols.unsqueeze(0) < num_cand[deficient].unsqueeze(1)  # (D, width)
    # A node's candidates are the first num_cand entries of its sorted segment.
    pos = (indptr[deficient].unsqueeze(1) + cols).clamp(max=order.numel() - 1)  # (D, width)
    cand_eids = order[pos]  # (D, width)
    cand_w = torch.where(is_cand, weight[cand_eids], torch.zeros((), dtype=weight.dtype, device=weight.device))
    draws = torch.multinomial(cand_w, k, replacement=True, generator=generator)  # (D, k) columns
    drawn_eids = cand_eids.gather(1, draws)  # (D, k)
    slots = torch.arange(k, device=order.device).unsqueeze(0)
    fill = slots >= num_cand[deficient].unsqueeze(1)  # (D, k) slots still empty
    rows = eid_table[deficient]
    eid_table[deficient] = torch.where(fill, drawn_eids, rows)
