r"""Recurrent memory over segments of nodes, in two schedules: torch only, no DGL.

A stack of :math:`L` transformer layers runs over the nodes cut into segments of :math:`p`
(in a given order). Layer :math:`l` keeps :math:`m` memory tokens :math:`M_l`; cell
:math:`(l, s)` attends over :math:`[M_l^{s-1}; H_{l-1}^s]` and returns :math:`M_l^s` and
:math:`H_l^s`, so it depends on :math:`(l-1, s)` and :math:`(l, s-1)` only (layer-local memory,
arXiv 2506.05229). ``schedule="sequential"`` runs the cells in the order of the definition
(``for s: for l:``, :math:`S L` steps); ``schedule="diagonal"`` runs the wavefront: step
:math:`t` runs every cell with :math:`l + s = t` as one batched computation (:math:`S + L - 1`
steps). Both give the same numbers up to float reassociation.

The per-layer weights are stacked with a leading layer axis ``[L, ...]``, so the active layers of
a wavefront step are a contiguous slice (a view) and one ``baddbmm`` serves all of them.

Without autograd (``torch.no_grad()`` / inference) the wavefront lives in a preallocated
``(L, B, m + p, d)`` buffer and segments are read and written one at a time: working memory is
:math:`O(L (p + m) d)` beyond the input and the output. With autograd every cell's activations
are kept for the backward pass anyway.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "SCHEDULES",
    "PASSES",
    "MemoryWeights",
    "MemoryResult",
    "memory_recurrence",
    "shuffle_within_graphs",
    "num_steps",
    "chain_sizes",
]

#: Cell orders: ``"diagonal"`` (wavefront, :math:`S + L - 1` steps) and ``"sequential"``
#: (the definition, :math:`S L` steps).
SCHEDULES = ("diagonal", "sequential")

#: ``1``: one recurrent pass (segment :math:`s` sees segments :math:`\le s` only); ``2``: a
#: read-out pass follows in which every segment reads each layer's final memory.
PASSES = (1, 2)


class MemoryWeights(NamedTuple):
    """The stacked per-layer weights of the recurrence (leading axis: layer, ``L``).

    ``d`` is the model width, ``m`` the number of memory tokens, ``f`` the feed-forward width.
    Linear maps act on rows from the right (``y = x @ w + b``).
    """

    memory: torch.Tensor  #: (L, m, d) initial memory M_l^(-1) of every layer
    w_qkv: torch.Tensor  #: (L, d, 3d) query, key and value projections side by side
    b_qkv: torch.Tensor  #: (L, 3d)
    w_out: torch.Tensor  #: (L, d, d) attention output projection (no bias: see memory_recurrence)
    norm1_weight: torch.Tensor  #: (L, d) LayerNorm after attention
    norm1_bias: torch.Tensor  #: (L, d)
    w_ff1: torch.Tensor  #: (L, d, f)
    b_ff1: torch.Tensor  #: (L, f)
    w_ff2: torch.Tensor  #: (L, f, d)
    b_ff2: torch.Tensor  #: (L, d)
    norm2_weight: torch.Tensor  #: (L, d) LayerNorm after the feed-forward block
    norm2_bias: torch.Tensor  #: (L, d)


class MemoryResult(NamedTuple):
    """What :func:`memory_recurrence` returns."""

    out: torch.Tensor  #: (N, d) last layer's output, rows in node order
    memory: torch.Tensor  #: (L, B, chains * m, d) every layer's memory after each graph's last segment
    num_steps: int  #: steps of the recurrent pass: S + L - 1 (diagonal) or S * L (sequential)


def num_steps(num_segments: int, num_layers: int, schedule: str) -> int:
    """Number of steps a schedule takes for ``num_segments`` segments and ``num_layers`` layers.

    Examples
    --------
    >>> from dgl_rbgt.nn.functional.memory import num_steps
    >>> num_steps(100, 4, "diagonal"), num_steps(100, 4, "sequential")
    (103, 400)
    """
    _check_choice(schedule, "schedule", SCHEDULES)
    if schedule == "diagonal":
        return num_segments + num_layers - 1
    return num_segments * num_layers


def shuffle_within_graphs(
    graph_sizes: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A uniformly random node order that keeps every graph's nodes in its own range.

    Parameters
    ----------
    graph_sizes : sequence of int
        Nodes per graph of a batch, graphs stored one after another (``graph.batch_num_nodes()``).
    generator : torch.Generator, optional
        Source of randomness; default torch's global generator (seeded runs repeat).
    device : torch.device or str, optional
        Device of the result. Default: the generator's device, else CPU.

    Returns
    -------
    torch.Tensor
        ``(N,)`` int64: ``order[i]`` is the node at position ``i``; positions of graph ``b``'s
        range hold graph ``b``'s nodes.

    Examples
    --------
    >>> import torch
    >>> from dgl_rbgt.nn.functional.memory import shuffle_within_graphs
    >>> order = shuffle_within_graphs([3, 2], torch.Generator().manual_seed(0))
    >>> sorted(order[:3].tolist()), sorted(order[3:].tolist())
    ([0, 1, 2], [3, 4])
    """
    sizes = _check_sizes(graph_sizes, None)
    num_nodes = sum(sizes)
    draw_device = generator.device if generator is not None else (device or "cpu")
    keys = torch.randperm(num_nodes, generator=generator, device=draw_device)
    if len(sizes) > 1:
        # One argsort on (graph id, random rank): shuffles inside each graph, never across.
        gid = torch.repeat_interleave(torch.arange(len(sizes), device=draw_device),
                                      torch.tensor(sizes, device=draw_device))
        keys = torch.argsort(gid * num_nodes + keys)
    return keys.to(device or draw_device)


def memory_recurrence(
    x: torch.Tensor,
    weights: MemoryWeights,
    num_heads: int,
    segment_size: int,
    *,
    order: torch.Tensor | None = None,
    graph_sizes: Sequence[int] | None = None,
    schedule: str = "diagonal",
    passes: int = 1,
    chains: int = 1,
    dropout_p: float = 0.0,
    training: bool = False,
) -> MemoryResult:
    r"""Run the layer-local recurrent memory transformer over segments of nodes.

    Each graph's nodes, in ``order``, are cut into segments of ``segment_size``; the last one
    may be shorter (its missing positions are masked keys that nothing attends to). Cell
    :math:`(l, s)` is one post-norm transformer layer on the tokens
    :math:`X = [M_l^{s-1}; H_{l-1}^s]` (all :math:`m + p` tokens are queries):

    .. math::
        A = X + \mathrm{MHA}(X) W_O, \quad Y = \mathrm{LN}_2\big(\mathrm{LN}_1(A)
        + \mathrm{GELU}(\mathrm{LN}_1(A) W_1 + b_1) W_2 + b_2\big),
        \quad [M_l^s; H_l^s] = Y

    with :math:`H_{-1}^s` the segment's rows of ``x`` and :math:`M_l^{-1}` = ``weights.memory``.
    The output projection has no bias: softmax rows sum to one, so the value bias already adds
    :math:`b_V W_O` to every output. Graphs of a batch are independent sequences (one batch
    row each): segments never mix graphs and each graph starts from the learned memory; a graph
    with fewer segments than the largest keeps its memory unchanged through the empty ones.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, d)`` node tokens (already embedded), rows in node order.
    weights : MemoryWeights
        Stacked weights, same dtype and device as ``x``.
    num_heads : int
        Attention heads :math:`H`; must divide ``d``.
    segment_size : int
        Nodes per segment :math:`p \geq 1`.
    order : torch.Tensor, optional
        ``(N,)`` int64 permutation: ``order[i]`` is the node at position ``i``. With
        ``graph_sizes``, positions of graph ``b``'s range must hold graph ``b``'s nodes (see
        :func:`shuffle_within_graphs`). Default: node order.
    graph_sizes : sequence of int, optional
        Nodes per graph of a batch (sum ``N``). Default: one graph.
    schedule : str, optional
        ``"diagonal"`` or ``"sequential"`` (:data:`SCHEDULES`). Default: ``"diagonal"``.
    passes : int, optional
        ``1``, or ``2`` for a read-out pass after the recurrence: cell :math:`(l, s)` then
        attends over :math:`[M_l^{S-1}; H_{l-1}^s]` with every layer's *final* memory (read
        only), so early segments see what later ones wrote. The pass has no recurrence and
        runs all segments at once. Default: ``1``.
    chains : int, optional
        Independent recurrences per graph, :math:`C \geq 1`. Each graph's positions are cut into
        ``chains`` consecutive runs of :math:`\lceil S / C \rceil` segments (the last ones may be
        shorter or empty); each run is a recurrence of its own from the learned memory, and the
        runs of all graphs step together, so the diagonal schedule takes
        :math:`\lceil S / C \rceil + L - 1` steps of up to :math:`C B L` cells. The read-out pass
        (``passes=2``) reads the final memories of all of a graph's chains side by side
        (:math:`C m` tokens per layer), so every segment still reads what every other wrote.
        Default: ``1`` (one recurrence over all of a graph's segments).
    dropout_p : float, optional
        Dropout on attention weights and on both residual branches, only when ``training``.
    training : bool, optional
        Whether dropout is active.

    Returns
    -------
    MemoryResult
        ``out (N, d)``, ``memory (L, B, C m, d)`` (final memory of the recurrent pass; chain
        ``c``'s tokens are ``c m .. c m + m - 1``) and ``num_steps`` (steps of the recurrent pass).

    Examples
    --------
    >>> import torch
    >>> from dgl_rbgt.nn.functional.memory import MemoryWeights, memory_recurrence
    >>> L, m, d, f = 2, 3, 8, 16
    >>> shapes = [(L, m, d), (L, d, 3 * d), (L, 3 * d), (L, d, d), (L, d), (L, d),
    ...           (L, d, f), (L, f), (L, f, d), (L, d), (L, d), (L, d)]
    >>> w = MemoryWeights(*(0.3 * torch.randn(s) for s in shapes))
    >>> x = torch.randn(10, d)
    >>> res = memory_recurrence(x, w, num_heads=2, segment_size=4)
    >>> res.out.shape, res.memory.shape, res.num_steps  # 3 segments + 2 layers - 1
    (torch.Size([10, 8]), torch.Size([2, 1, 3, 8]), 4)
    >>> seq = memory_recurrence(x, w, num_heads=2, segment_size=4, schedule="sequential")
    >>> torch.allclose(res.out, seq.out, atol=1e-5), seq.num_steps
    (True, 6)
    """
    _check_inputs(x, weights, num_heads, segment_size)
    _check_choice(schedule, "schedule", SCHEDULES)
    _check_choice(passes, "passes", PASSES)
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0 <= dropout_p < 1:
        raise ValueError(f"dropout_p must be a float in [0, 1), got {dropout_p!r}")
    _check_count(chains, "chains")
    sizes = _check_sizes([x.shape[0]] if graph_sizes is None else graph_sizes, x.shape[0])
    order = _check_order(order, sizes, x.device)
    # Chains are independent sequences: batch rows, as graphs are (rows b*C .. b*C + C-1 of graph b).
    layout = _Layout(order, chain_sizes(sizes, segment_size, chains), segment_size, weights.memory.shape[1],
                     x.device)
    run = _Run(num_heads, dropout_p if training else 0.0)
    io = _NodeIO(x, layout, track=torch.is_grad_enabled())
    w = _with_bias_rows(weights)
    if schedule == "sequential":
        memory = _sequential(io, w, layout, run)
    elif io.track:
        memory = _diagonal_tracked(io, w, layout, run)
    else:
        memory = _diagonal_buffered(io, w, layout, run)
    layers, _, m, d = memory.shape
    memory = memory.reshape(layers, len(sizes), chains * m, d)  # a graph's chains side by side
    if passes == 2:
        io.discard()  # the read-out pass replaces the recurrent pass's output
        _readout(io, w, memory, layout, run)
    return MemoryResult(io.result(), memory, num_steps(layout.segments, layers, schedule))


def chain_sizes(graph_sizes: Sequence[int], segment_size: int, chains: int) -> list[int]:
    r"""Nodes per chain, graph by graph: each graph's :math:`S` segments cut into ``chains`` runs
    of :math:`\lceil S / C \rceil` segments (the last runs shorter or empty).

    Raises ``ValueError`` for ``segment_size`` or ``chains`` below 1 and negative graph sizes.

    Examples
    --------
    >>> from dgl_rbgt.nn.functional.memory import chain_sizes
    >>> chain_sizes([10, 3], segment_size=2, chains=2)  # 5 segments -> 3 + 2; 2 segments -> 1 + 1
    [6, 4, 2, 1]
    >>> chain_sizes([3], segment_size=4, chains=3)  # one segment: one chain holds it
    [3, 0, 0]
    """
    _check_count(segment_size, "segment_size")
    _check_count(chains, "chains")
    out = []
    for n in _check_sizes(graph_sizes, None):
        segments = -(-n // segment_size)  # ceil(n / p)
        per_chain = -(-segments // chains) * segment_size  # ceil(S / C) segments, in nodes
        for c in range(chains):
            out.append(min(max(n - c * per_chain, 0), per_chain))
    return out


# ---------------------------------------------------------------------------------------------
# Argument checks (torch only: this module must not import DGL, so not dgl_rbgt._checks)
# ---------------------------------------------------------------------------------------------


def _check_choice(value, name: str, choices) -> None:
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_count(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_inputs(x, weights, num_heads, segment_size) -> None:
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x) or x.dim() != 2:
        got = f"shape {tuple(x.shape)} dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x must be a 2-D floating-point tensor (N, d), got {got}")
    if x.shape[0] == 0:
        raise ValueError("x has no rows; the recurrence needs at least one node")
    if not isinstance(weights, MemoryWeights):
        raise TypeError(f"weights must be a MemoryWeights, got {type(weights).__name__}")
    _check_count(num_heads, "num_heads")
    _check_count(segment_size, "segment_size")
    num_layers, _, d = weights.memory.shape
    if x.shape[1] != d or d % num_heads:
        raise ValueError(f"x must have width d = {d} (the weights') divisible by num_heads = "
                         f"{num_heads}, got shape {tuple(x.shape)}")
    for name, t in zip(MemoryWeights._fields, weights):
        if t.dtype != x.dtype or t.device != x.device or t.shape[0] != num_layers:
            raise ValueError(f"weights.{name} must have {num_layers} layers on the leading axis and x's "
                             f"dtype {x.dtype} and device {x.device}, got shape {tuple(t.shape)}, "
                             f"{t.dtype} on {t.device}")


def _check_sizes(graph_sizes, num_nodes: int | None) -> list[int]:
    sizes = graph_sizes.tolist() if isinstance(graph_sizes, torch.Tensor) else list(graph_sizes)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in sizes):
        raise ValueError(f"graph_sizes must be a non-empty sequence of ints >= 0, got {sizes[:10]}")
    if num_nodes is not None and sum(sizes) != num_nodes:
        raise ValueError(f"graph_sizes must sum to the number of nodes {num_nodes}, got {sum(sizes)}")
    return sizes


_CHECK_CHUNK = 1 << 16  # positions per chunk of the order check


def _check_order(order, sizes: list[int], device: torch.device) -> torch.Tensor | None:
    """The order on ``device``, or None for node order. The check holds one byte per node (no
    int64 temporaries of N entries), so evaluation's working memory stays flat in N."""
    num_nodes = sum(sizes)
    if order is None:
        return None
    if not isinstance(order, torch.Tensor) or order.dtype != torch.int64 or order.shape != (num_nodes,):
        got = f"{order.dtype} {tuple(order.shape)}" if isinstance(order, torch.Tensor) else type(order).__name__
        raise ValueError(f"order must be an int64 tensor of shape ({num_nodes},), got {got}")
    order = order.to(device)
    ok = 0 <= int(order.min()) and int(order.max()) < num_nodes
    if ok:
        seen = torch.zeros(num_nodes, dtype=torch.bool, device=device)
        seen[order] = True
        ok = bool(seen.all())  # N values in range, all hit: a permutation
    if ok and len(sizes) > 1:
        # The graph of every position must be the graph of the node there; in chunks, so the
        # graph ids never take N int64 entries at once.
        ends = torch.cumsum(torch.tensor(sizes, device=device), 0)
        for start in range(0, num_nodes, _CHECK_CHUNK):
            stop = min(start + _CHECK_CHUNK, num_nodes)
            here = torch.searchsorted(ends, torch.arange(start, stop, device=device), right=True)
            ok = ok and torch.equal(here, torch.searchsorted(ends, order[start:stop], right=True))
    if not ok:
        raise ValueError("order must be a permutation of the nodes that keeps each graph's nodes in "
                         "its own range of positions (see shuffle_within_graphs)")
    return order


# ---------------------------------------------------------------------------------------------
# Layout: graphs as independent sequences (batch rows), each padded to S segments of p slots
# ---------------------------------------------------------------------------------------------


class _Layout:
    """Where every segment's nodes are: graph b's positions start at ``starts[b]``, segment s
    holds its positions ``s*p .. s*p + p - 1`` (fewer at the end). Nothing here has N entries:
    the node indices of a few segments are computed when asked for, so the no-grad path holds
    no O(N) index array."""

    def __init__(self, order: torch.Tensor | None, sizes: list[int], p: int, m: int, device: torch.device):
        self.order, self.num_nodes, self.segment_size, self.memory_tokens = order, sum(sizes), p, m
        self.batch, self.segments = len(sizes), max(-(-n // p) for n in sizes)
        sizes_t = torch.tensor(sizes, device=device)
        self.starts = (torch.cumsum(sizes_t, 0) - sizes_t).view(-1, 1, 1)  # (B, 1, 1)
        self.sizes = sizes_t.view(-1, 1, 1)  # (B, 1, 1)
        # (S, B) nodes of graph b in segment s, as Python ints for per-step decisions.
        counts = (sizes_t[None, :] - p * torch.arange(self.segments, device=device)[:, None]).clamp(0, p)
        self.live = counts > 0  # (S, B)
        self.padded_upto = _prefix((counts < p).any(-1).tolist())
        self.empty_upto = _prefix((counts == 0).any(-1).tolist())

    def any_in(self, prefix: list[int], first: int, last: int) -> bool:
        """Whether a segment in ``first..last`` is counted by ``prefix``."""
        return prefix[last + 1] > prefix[first]

    def slots(self, first: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions (B, C, p) of segments ``first..stop-1`` and whether each holds a node."""
        p = self.segment_size
        offset = torch.arange(first * p, stop * p, device=self.starts.device).view(1, stop - first, p)
        return self.starts + offset, offset < self.sizes  # (B, C, p) each

    def nodes(self, first: int, stop: int, padding: int) -> torch.Tensor:
        """Node at every slot of segments ``first..stop-1`` (B, C, p); ``padding`` where none."""
        pos, valid = self.slots(first, stop)
        pos = pos.clamp(max=self.num_nodes - 1)
        return torch.where(valid, pos if self.order is None else self.order[pos], padding)

    def key_valid(self, first: int, stop: int) -> torch.Tensor:
        """Tokens of cells (s, b), s in ``first..stop-1``, that may be attended to: (C, B, m + p)."""
        valid = self.slots(first, stop)[1].transpose(0, 1)  # (C, B, p)
        if self.memory_tokens == 0:
            # A cell without nodes and without memory would attend to nothing (softmax of no keys
            # is NaN, and 0 * NaN poisons the gradients): let its padding attend to itself.
            valid = valid | ~self.live[first:stop, :, None]
        return torch.cat([valid.new_ones(*valid.shape[:2], self.memory_tokens), valid], -1)


def _prefix(flags: list[bool]) -> list[int]:
    """Prefix counts: ``out[s]`` flagged entries before ``s``."""
    out = [0]
    for f in flags:
        out.append(out[-1] + int(f))
    return out


class _NodeIO:
    """Reads each segment's node tokens and collects each segment's output.

    With autograd (``track``) the input is gathered once and the output scattered once: a
    per-segment gather would backpropagate through an (N, d) zero buffer per segment. Without
    it, segments are gathered and written one at a time, so nothing of size (N, d) besides the
    input and the output is ever held.
    """

    def __init__(self, x: torch.Tensor, layout: _Layout, track: bool):
        self.track, self.layout, self.x = track, layout, x
        n, d = x.shape
        if track:
            index = layout.nodes(0, layout.segments, padding=n - 1)  # (B, S, p); padding reads a real row
            gathered = x.index_select(0, index.view(-1)).view(*index.shape, d)  # (B, S, p, d)
            # Views made by one op: slicing per segment would make autograd scatter every
            # segment's gradient into its own zero-filled (B, S, p, d) buffer.
            self.whole, self.segments = gathered, gathered.split(1, dim=1)  # S x (B, 1, p, d)
            self.outs: list[torch.Tensor] = []
        else:
            # One spare row receives the padding slots' outputs, so writes need no mask.
            self.out = x.new_empty(n + 1, d)

    def read(self, first: int, stop: int) -> torch.Tensor:
        """Node tokens of segments ``first..stop-1``: (B, stop - first, p, d)."""
        if self.track:
            # Tracked callers read one segment (the recurrence) or all (the read-out pass).
            return self.segments[first] if stop == first + 1 else self.whole
        index = self.layout.nodes(first, stop, padding=self.x.shape[0] - 1)  # (B, C, p)
        return self.x.index_select(0, index.view(-1)).view(*index.shape, -1)  # (B, C, p, d)

    def write(self, first: int, y: torch.Tensor) -> None:
        """Store the outputs (B, C, p, d) of segments ``first..first+C-1`` (in order)."""
        if self.track:
            self.outs.append(y)
        else:
            index = self.layout.nodes(first, first + y.shape[1], padding=self.x.shape[0])  # (B, C, p)
            self.out.index_copy_(0, index.view(-1), y.reshape(-1, y.shape[-1]))

    def discard(self) -> None:
        """Forget the outputs written so far (without autograd they are simply overwritten)."""
        if self.track:
            self.outs = []

    def result(self) -> torch.Tensor:
        """The output (N, d) in node order."""
        n, d = self.x.shape
        if not self.track:
            return self.out[:n]
        outs = self.outs[0] if len(self.outs) == 1 else torch.cat(self.outs, 1)  # (B, S, p, d)
        index = self.layout.nodes(0, self.layout.segments, padding=n)  # (B, S, p)
        # Out of place, so autograd sees it; padding slots all land in the spare row n.
        out = torch.index_copy(outs.new_zeros(n + 1, d), 0, index.view(-1), outs.reshape(-1, d))
        return out[:n]


# ---------------------------------------------------------------------------------------------
# One batch of cells
# ---------------------------------------------------------------------------------------------


class _Run(NamedTuple):
    heads: int
    dropout_p: float  # already 0 outside training


def _with_bias_rows(w: MemoryWeights) -> MemoryWeights:
    """Biases and norm parameters as (L, 1, k): ``baddbmm``/``addcmul`` broadcast them over rows."""
    return w._replace(**{name: getattr(w, name).unsqueeze(1) for name in (
        "b_qkv", "norm1_weight", "norm1_bias", "b_ff1", "b_ff2", "norm2_weight", "norm2_bias")})


def _take(w: MemoryWeights, lo: int, hi: int) -> MemoryWeights:
    """Weights of layers ``lo..hi``: views, and the tensors themselves when all layers are active
    (a slice would make autograd scatter its gradient into a zero buffer of the full size)."""
    if lo == 0 and hi == w.w_qkv.shape[0] - 1:
        return w
    return MemoryWeights(*(t[lo:hi + 1] for t in w))


def _norm(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LayerNorm with a different affine map per layer (rows (A, R, d), weight (A, 1, d))."""
    return torch.addcmul(bias, F.layer_norm(h, h.shape[-1:]), weight)


#: Tokens one batched call of :func:`_cells` takes at most (when a step has more, its cells run in
#: chunks). Batching many long cells makes the working set outgrow the caches and loses to running
#: them one by one (measured: 0.75x at p = 1024, L = 4); short cells gain from batching.
CELL_TOKENS = 1536


def _cells(x: torch.Tensor, w: MemoryWeights, run: _Run, key_mask: torch.Tensor | None,
           first_query: int = 0) -> torch.Tensor:
    """:func:`_cell_batch` on chunks of at most :data:`CELL_TOKENS` tokens (whole cells)."""
    cells, batch, tokens, _ = x.shape
    per_chunk = max(1, CELL_TOKENS // (batch * tokens))
    if cells <= per_chunk:
        return _cell_batch(x, w, run, key_mask, first_query)
    outs = []
    for a in range(0, cells, per_chunk):
        b = min(a + per_chunk, cells)
        mask = None if key_mask is None else key_mask[a * batch:b * batch]
        outs.append(_cell_batch(x[a:b], MemoryWeights(*(t[a:b] for t in w)), run, mask, first_query))
    return torch.cat(outs)


def _cell_batch(x: torch.Tensor, w: MemoryWeights, run: _Run, key_mask: torch.Tensor | None,
                first_query: int = 0) -> torch.Tensor:
    """One transformer layer on A cells of B graphs at once: x (A, B, T, d) -> (A, B, T', d).

    Cell ``a`` uses layer ``a`` of ``w`` (weights (A, ...)); ``key_mask`` (A*B, 1, 1, T) says which
    tokens may be attended to. Only tokens ``first_query..T-1`` are queries and outputs.
    """
    cells, batch, tokens, d = x.shape
    heads = run.heads
    queries = tokens - first_query
    qkv = torch.baddbmm(w.b_qkv, x.reshape(cells, batch * tokens, d), w.w_qkv)  # (A, B*T, 3d)
    qkv = qkv.view(cells * batch, tokens, 3 * heads, d // heads).transpose(1, 2)  # (A*B, 3H, T, D)
    q, k, v = qkv.split(heads, dim=1)  # (A*B, H, T, D) each
    if first_query:
        q = q[:, :, first_query:]  # (A*B, H, T', D)
    att = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=run.dropout_p)
    att = att.transpose(1, 2).reshape(cells, batch * queries, d)  # (A, B*T', d): heads side by side
    # (A, B*T', d); no slice when every token is a query: its backward would zero-fill a buffer
    res = (x[:, :, first_query:] if first_query else x).reshape(cells, batch * queries, d)
    if run.dropout_p:
        h = res + F.dropout(torch.bmm(att, w.w_out), run.dropout_p)
    else:
        h = torch.baddbmm(res, att, w.w_out)  # residual folded into the matmul
    h = _norm(h, w.norm1_weight, w.norm1_bias)
    f = F.gelu(torch.baddbmm(w.b_ff1, h, w.w_ff1))  # (A, B*T', f)
    if run.dropout_p:
        y = h + F.dropout(torch.baddbmm(w.b_ff2, f, w.w_ff2), run.dropout_p)
    else:
        y = torch.baddbmm(h, f, w.w_ff2).add_(w.b_ff2)
    return _norm(y, w.norm2_weight, w.norm2_bias).view(cells, batch, queries, d)  # (A, B, T', d)


def _step_mask(layout: _Layout, first: int, last: int, reverse: bool) -> torch.Tensor | None:
    """Key mask (cells*B, 1, 1, T) for the cells of segments ``first..last`` (descending when
    ``reverse``: the wavefront lists layers upwards, so segments downwards); None without padding."""
    if not layout.any_in(layout.padded_upto, first, last):
        return None
    valid = layout.key_valid(first, last + 1)  # (C, B, T)
    if reverse:
        valid = valid.flip(0)
    return valid.reshape(-1, 1, 1, valid.shape[-1])  # (C*B, 1, 1, T)


def _freeze(layout: _Layout, new: torch.Tensor, old: torch.Tensor, first: int, last: int,
            reverse: bool) -> torch.Tensor:
    """Keep ``old`` memory (C, B, m, d) where a graph has no nodes in the cell's segment."""
    if not layout.any_in(layout.empty_upto, first, last):
        return new
    live = layout.live[first:last + 1]  # (C, B)
    if reverse:
        live = live.flip(0)
    return torch.where(live[..., None, None], new, old)


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------


def _active(t: int, segments: int, layers: int) -> tuple[int, int]:
    """Layers ``lo..hi`` active at wavefront step ``t`` (cell (l, t - l) for each)."""
    return max(0, t - segments + 1), min(t, layers - 1)


def _per_layer(w: MemoryWeights) -> list[MemoryWeights]:
    """Every layer's weights (leading axis 1), split by one op per tensor: autograd then joins
    their gradients with one ``cat`` instead of a zero-filled full-size buffer per slice."""
    return [MemoryWeights(*parts) for parts in zip(*(t.split(1) for t in w))]


def _initial_memory(w: MemoryWeights, batch: int) -> list[torch.Tensor]:
    """Every layer's learned initial memory for B graphs: L x (1, B, m, d) views."""
    return list(w.memory.unsqueeze(1).expand(-1, batch, -1, -1).split(1))


def _sequential(io: _NodeIO, w: MemoryWeights, layout: _Layout, run: _Run) -> torch.Tensor:
    """The definition: ``for s: for l:``, one cell (of every graph) per step."""
    m = layout.memory_tokens
    per_layer = _per_layer(w)
    memory = _initial_memory(w, layout.batch)  # L x (1, B, m, d)
    for s in range(layout.segments):
        h = io.read(s, s + 1).transpose(0, 1)  # (1, B, p, d)
        mask = _step_mask(layout, s, s, reverse=False)
        for l, weights in enumerate(per_layer):
            y = _cells(torch.cat([memory[l], h], 2), weights, run, mask)  # (1, B, m + p, d)
            new, h = y.split([m, y.shape[2] - m], 2)
            memory[l] = _freeze(layout, new, memory[l], s, s, reverse=False)
        io.write(s, h.transpose(0, 1))
    return torch.cat(memory)  # (L, B, m, d)


def _diagonal_tracked(io: _NodeIO, w: MemoryWeights, layout: _Layout, run: _Run) -> torch.Tensor:
    """Wavefront with autograd: each step's cells are built from the previous step's outputs.

    Autograd forbids overwriting tensors it saved, so the rolling buffer of the no-grad path is
    not available here. Every layer's state is kept as its own tensor (views of the step output
    that made it): a step joins the active cells' memory and node rows with one ``cat`` per chunk
    of cells (:data:`CELL_TOKENS`) and cuts its output with ``split`` (never slicing: autograd
    joins split gradients with one ``cat``, where a slice's gradient is scattered into a
    zero-filled buffer of the whole). Chunk outputs are never concatenated, so long cells that run
    one per call cost what the sequential schedule's calls cost.
    """
    layers, segments, m = w.w_qkv.shape[0], layout.segments, layout.memory_tokens
    memory = _initial_memory(w, layout.batch)  # per layer: its current memory (1, B, m, d)
    hidden: list[torch.Tensor | None] = [None] * layers  # per layer: its next node input (1, B, p, d)
    per_layer = _per_layer(w)
    finals: list[torch.Tensor | None] = [None] * layers
    for t in range(segments + layers - 1):
        lo, hi = _active(t, segments, layers)
        if lo == 0:
            hidden[0] = io.read(t, t + 1).transpose(0, 1)  # (1, B, p, d)
        # Top chunk first: a chunk's outputs feed the layer above, whose input is already read.
        for a, b in reversed(_chunks(lo, hi, layout.batch * (m + layout.segment_size))):
            x = _join(memory[a:b + 1], hidden[a:b + 1])  # (A, B, m + p, d)
            weights = per_layer[a] if a == b else _take(w, a, b)
            y = _cell_batch(x, weights, run, _step_mask(layout, t - b, t - a, reverse=True))
            new, out = y.split([m, y.shape[2] - m], 2)  # (A, B, m, d), (A, B, p, d)
            new = _freeze(layout, new, x[:, :, :m], t - b, t - a, reverse=True)
            memory[a:b + 1] = new.split(1) if a < b else [new]
            outs = out.split(1) if a < b else [out]
            for l, h in zip(range(a, b + 1), outs):
                if l == layers - 1:  # the top layer's output is final
                    io.write(t - l, h.transpose(0, 1))  # (B, 1, p, d)
                else:
                    hidden[l + 1] = h
                if t - l == segments - 1:  # layer l has seen its last segment
                    finals[l] = memory[l]
    return torch.cat(finals)  # (L, B, m, d)


def _chunks(lo: int, hi: int, cell_tokens: int) -> list[tuple[int, int]]:
    """Layers ``lo..hi`` in runs ``(a, b)`` of at most :data:`CELL_TOKENS` tokens (whole cells)."""
    per_chunk = max(1, CELL_TOKENS // cell_tokens)
    return [(a, min(a + per_chunk, hi + 1) - 1) for a in range(lo, hi + 1, per_chunk)]


def _join(memory: list[torch.Tensor], hidden: list[torch.Tensor]) -> torch.Tensor:
    """Cells ``[M_l; H_l]`` (each (1, B, m or p, d)) stacked: (A, B, m + p, d), in one ``cat``."""
    if len(memory) == 1:
        return torch.cat([memory[0], hidden[0]], 2)
    _, batch, m, d = memory[0].shape
    p = hidden[0].shape[2]
    parts = [t for pair in zip(memory, hidden) for t in pair]
    # One cat along the token axis: (1, B, A (m + p), d), i.e. graph-major; cell-major for
    # B = 1 already, so the final copy happens only for batched graphs.
    joined = torch.cat(parts, 2).view(batch, len(memory), m + p, d)
    return joined.transpose(0, 1).contiguous()


def _diagonal_buffered(io: _NodeIO, w: MemoryWeights, layout: _Layout, run: _Run) -> torch.Tensor:
    """Wavefront without autograd in one preallocated (L, B, m + p, d) buffer.

    ``buf[l]`` holds the next input of layer ``l``: its memory rows are layer ``l``'s memory,
    its node rows the output of layer ``l - 1``. A step reads ``buf[lo:hi+1]`` (a view) and,
    after computing, writes the new memory in place and the node outputs one layer up.
    """
    layers, segments, m = w.w_qkv.shape[0], layout.segments, layout.memory_tokens
    batch, p = layout.batch, layout.segment_size
    d = w.w_qkv.shape[1]
    buf = w.w_qkv.new_empty(layers, batch, m + p, d)
    buf[:, :, :m] = w.memory.unsqueeze(1)  # every layer starts from its learned memory
    finals = w.w_qkv.new_empty(layers, batch, m, d)
    for t in range(segments + layers - 1):
        lo, hi = _active(t, segments, layers)
        if lo == 0:
            buf[0, :, m:] = io.read(t, t + 1)[:, 0]  # (B, p, d)
        x = buf[lo:hi + 1]  # (A, B, T, d)
        y = _cells(x, _take(w, lo, hi), run, _step_mask(layout, t - hi, t - lo, reverse=True))
        x[:, :, :m] = _freeze(layout, y[:, :, :m], x[:, :, :m], t - hi, t - lo, reverse=True)
        up = min(hi, layers - 2) - lo + 1  # active layers that feed a layer above
        buf[lo + 1:lo + 1 + up, :, m:] = y[:up, :, m:]
        if hi == layers - 1:
            io.write(t - hi, y[-1:, :, m:].transpose(0, 1))  # (B, 1, p, d)
        if t - lo == segments - 1:
            finals[lo] = x[0, :, :m]  # layer lo has seen its last segment
    return finals


def _readout(io: _NodeIO, w: MemoryWeights, memory: torch.Tensor, layout: _Layout, run: _Run) -> None:
    """Second pass: every segment reads each layer's final memory (read only, no recurrence):
    ``memory`` is (L, graphs, chains * m, d), so a segment reads all chains of its graph.

    With autograd all segments run at once; without, in chunks of L segments (the wavefront's
    working memory).
    """
    layers, segments = w.w_qkv.shape[0], layout.segments
    graphs, m = memory.shape[1], memory.shape[2]
    chains = layout.batch // graphs
    if chains > 1:
        memory = memory.repeat_interleave(chains, dim=1)  # (L, B, C m, d): row b*C + c reads graph b's
    extra = m - layout.memory_tokens  # memory keys beyond the layout's own m (always valid)
    chunk = segments if io.track else layers
    per_layer = _per_layer(w)
    for first in range(0, segments, chunk):
        stop = min(first + chunk, segments)
        h = io.read(first, stop)  # (B, C, p, d)
        batch, count, p, d = h.shape
        mask = _step_mask(layout, first, stop - 1, reverse=False)  # (C*B, 1, 1, T) segment-major
        if mask is not None:
            mask = mask.view(count, batch, -1).transpose(0, 1).reshape(batch * count, 1, 1, -1)  # (B*C, 1, 1, T)
            if extra:
                mask = torch.cat([mask.new_ones(batch * count, 1, 1, extra), mask], -1)
        h = h.reshape(1, batch * count, p, d)  # (1, B*C, p, d): segments are independent here
        for final, weights in zip(memory.split(1), per_layer):
            mem = final.unsqueeze(2).expand(1, batch, count, m, d).reshape(1, batch * count, m, d)
            h = _cells(torch.cat([mem, h], 2), weights, run, mask, first_query=m)  # (1, B*C, p, d)
        io.write(first, h.view(batch, count, p, d))
