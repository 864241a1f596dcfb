"""Random Batch Attention (RBA): softmax attention inside random groups of nodes.

Torch-only core (:func:`random_batch_attention`) plus the DGL layer :class:`RBAConv`.
The exact full-attention variant lives in :mod:`dgl_rbgt.nn.full_attention`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from dgl.base import DGLError
from torch import nn

from dgl_rbgt._checks import (
    check_choice,
    check_feat,
    check_homogeneous,
    check_nonempty,
    check_positive_int,
    check_probability,
)

__all__ = [
    "RBAConv",
    "RBAAttention",
    "random_batch_attention",
    "EVAL_MODES",
    "FULL_ATTENTION_MAX_NODES",
]

#: Evaluation modes of :class:`RBAConv` (training always draws a fresh grouping).
EVAL_MODES = ("fixed", "mean", "full")

#: Default node limit of exact full attention (``eval_mode="full"``), counted per graph of a
#: batch. Full attention costs O(n^2) time per graph (and O(n^2) memory where SDPA cannot use its
#: fused kernel, e.g. for batches of graphs of different sizes), so larger graphs raise.
FULL_ATTENTION_MAX_NODES = 16384


class RBAAttention(NamedTuple):
    """Attention weights of one grouping, returned by ``get_attention=True``.

    ``members[i]`` lists the node ids in node ``i``'s group (``-1`` pads groups smaller than the
    largest one) and ``weights[i, h, j]`` is the softmax weight of head ``h`` from node ``i`` to
    ``members[i, j]`` (``0`` on padding), so ``weights.sum(-1) == 1``. Shapes ``(N, m)`` and
    ``(N, H, m)`` with ``m`` the largest group size (``group_size`` unless every group is
    smaller). With ``eval_mode="mean"`` both carry a leading axis of size ``eval_repeats``, one
    entry per grouping. The weights are taken before attention dropout.
    """

    members: torch.Tensor
    weights: torch.Tensor


# ---------------------------------------------------------------------------------------------
# Grouping plans
# ---------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """How N nodes are cut into groups.

    ``order[t]`` is the node at permuted position ``t``. Positions ``[0, num_full * group_size)``
    hold the full groups back to back; the remaining positions hold the remainder groups (one per
    graph whose size is not a multiple of ``group_size``), back to back, of sizes ``rem_sizes``.
    """

    order: torch.Tensor  # (N,) int64
    group_size: int
    num_full: int
    rem_sizes: list[int] = field(default_factory=list)
    _inverse: torch.Tensor | None = None

    @property
    def inverse(self) -> torch.Tensor:
        """``inverse[order[t]] == t``: the permuted position of every node."""
        if self._inverse is None:
            n = self.order.numel()
            arange = torch.arange(n, device=self.order.device)
            self._inverse = torch.empty_like(self.order).index_copy_(0, self.order, arange)
        return self._inverse

    @property
    def max_group(self) -> int:
        return self.group_size if self.num_full else max(self.rem_sizes)


def _as_counts(segments: Any, num_nodes: int) -> torch.Tensor | None:
    """Validate ``segments`` (nodes per graph) and return them as a CPU int64 tensor.

    Returns None for a single graph (the fast path without graph ids).
    """
    if segments is None:
        return None
    if isinstance(segments, torch.Tensor):
        if segments.dtype.is_floating_point or segments.dtype.is_complex or segments.dtype == torch.bool:
            raise TypeError(f"segments must hold integers (nodes per graph), got dtype {segments.dtype}")
        counts = segments.detach().to("cpu", torch.int64)
    elif isinstance(segments, Sequence) and all(
        isinstance(c, int) and not isinstance(c, bool) for c in segments
    ):
        counts = torch.tensor(list(segments), dtype=torch.int64)
    else:
        raise TypeError(
            f"segments must be a 1-D integer tensor or a sequence of ints (nodes per graph, "
            f"e.g. graph.batch_num_nodes()), got {type(segments).__name__}"
        )
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"segments must be 1-D and non-empty, got shape {tuple(counts.shape)}")
    if bool((counts < 0).any()):
        raise ValueError(f"segments must be >= 0 (nodes per graph), got {counts.tolist()[:10]}")
    if int(counts.sum()) != num_nodes:
        raise ValueError(
            f"segments must sum to the number of nodes {num_nodes}, got sum {int(counts.sum())}"
        )
    return None if counts.numel() == 1 else counts


def _graph_ids(counts: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N,) graph id of every node; nodes of a batched graph are contiguous per graph."""
    counts = counts.to(device)
    return torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts)


def _random_perm(
    num_nodes: int,
    counts: torch.Tensor | None,
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """A uniformly random permutation that keeps every graph's nodes in its own segment."""
    draw_device = generator.device if generator is not None else device
    keys = torch.randperm(num_nodes, generator=generator, device=draw_device)
    if counts is not None:
        # One argsort on (graph id, random rank): shuffles inside each graph, never across.
        gid = _graph_ids(counts, draw_device)
        keys = torch.argsort(gid * num_nodes + keys)
    return keys.to(device)


def _check_perm(perm: Any, num_nodes: int, counts: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    if not isinstance(perm, torch.Tensor) or perm.dtype not in (torch.int64, torch.int32):
        got = perm.dtype if isinstance(perm, torch.Tensor) else type(perm).__name__
        raise TypeError(f"perm must be an int64 tensor (a permutation of the nodes), got {got}")
    if perm.shape != (num_nodes,):
        raise ValueError(f"perm must have shape ({num_nodes},), got {tuple(perm.shape)}")
    perm = perm.to(device, torch.int64)
    if bool((perm < 0).any()) or bool((perm >= num_nodes).any()) or bool(
        (torch.bincount(perm, minlength=num_nodes) != 1).any()
    ):
        raise ValueError(f"perm must be a permutation of 0..{num_nodes - 1} (each node exactly once)")
    if counts is not None:
        gid = _graph_ids(counts, device)
        if bool((gid[perm] != gid).any()):
            raise ValueError(
                "perm mixes graphs: positions of graph b (per segments) must hold nodes of graph b, "
                "so that groups never mix nodes of different graphs"
            )
    return perm


def _plan_from_perm(perm: torch.Tensor, group_size: int, counts: torch.Tensor | None) -> _Plan:
    """Cut a segment-respecting permutation into full groups of ``group_size`` and remainders."""
    num_nodes = perm.numel()
    if counts is None:
        num_full = num_nodes // group_size
        rem = num_nodes - num_full * group_size
        return _Plan(perm, group_size, num_full, [rem] if rem else [])
    full = counts // group_size * group_size  # (B,) nodes of each graph in full groups
    rem = counts - full  # (B,) size of each graph's remainder group
    num_full = int(full.sum()) // group_size
    if not bool((rem > 0).any()):
        return _Plan(perm, group_size, num_full, [])
    # A position is in a full group when its offset inside its graph's segment is < full[b];
    # stable boolean selection moves all full groups to the front, in graph order.
    device = perm.device
    starts = torch.cumsum(counts, 0) - counts
    limit = torch.repeat_interleave((starts + full).to(device), counts.to(device))  # (N,)
    is_full = torch.arange(num_nodes, device=device) < limit
    order = torch.cat([perm[is_full], perm[~is_full]])
    return _Plan(order, group_size, num_full, rem[rem > 0].tolist())


def _random_plan(num_nodes, group_size, counts, generator, device) -> _Plan:
    return _plan_from_perm(_random_perm(num_nodes, counts, generator, device), group_size, counts)


def _exact_plan(num_nodes: int, counts: torch.Tensor | None, device: torch.device) -> _Plan:
    """One group per graph: exact full attention inside every graph of the batch."""
    largest = num_nodes if counts is None else int(counts.max())
    perm = torch.arange(num_nodes, device=device)
    return _plan_from_perm(perm, max(largest, 1), counts)


# ---------------------------------------------------------------------------------------------
# Row permutations with cheap backward: a permutation hits every row once, so its gradient is a
# plain scatter (index_copy_) or gather, never autograd's zero-fill + scatter-add of index_select.
# ---------------------------------------------------------------------------------------------


class _PermuteRows(torch.autograd.Function):
    """``x[order]`` for a permutation ``order``, returned as row blocks of sizes ``splits``.

    Backward writes every block's gradient straight to its rows (one ``index_copy_`` each, no
    zero-filled buffer, no scatter-add), because a permutation hits every row exactly once.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, splits: tuple[int, ...]):
        ctx.save_for_backward(order)
        ctx.splits = splits
        n = x.shape[0]
        flat = x.reshape(n, -1)  # index_select on a 2-D view is much faster on CPU than (N, H, D)
        parts, start = [], 0
        for size in splits:
            rows = flat.index_select(0, order[start:start + size])
            parts.append(rows.view(size, *x.shape[1:]))
            start += size
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads):
        (order,) = ctx.saved_tensors
        n = order.numel()
        like = next(g for g in grads if g is not None)
        trailing = like.shape[1:]
        missing = any(g is None for g in grads)
        out = like.new_zeros((n, *trailing)) if missing else like.new_empty((n, *trailing))
        flat = out.view(n, -1)
        start = 0
        for size, g in zip(ctx.splits, grads):
            if g is not None:
                flat.index_copy_(0, order[start:start + size], g.reshape(size, -1))
            start += size
        return out, None, None


def _permute(x: torch.Tensor, plan: "_Plan") -> tuple[torch.Tensor, ...]:
    """Rows of ``x`` in the plan's order, as (full-group block, remainder block) where present."""
    n_full = plan.num_full * plan.group_size
    splits = tuple(s for s in (n_full, x.shape[0] - n_full) if s)
    return _PermuteRows.apply(x, plan.order, splits)


class _UnpermuteRows(torch.autograd.Function):
    """Concatenate ``parts`` (rows in permuted order) and put every row back at its node."""

    @staticmethod
    def forward(ctx, order: torch.Tensor, *parts: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(order)
        ctx.sizes = [p.shape[0] for p in parts]
        trailing = parts[0].shape[1:]
        out = parts[0].new_empty((order.numel(), *trailing))
        flat = out.view(order.numel(), -1)
        start = 0
        for part in parts:
            n = part.shape[0]
            flat.index_copy_(0, order[start:start + n], part.reshape(n, -1))
            start += n
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (order,) = ctx.saved_tensors
        flat = grad.reshape(grad.shape[0], -1)
        grads, start = [], 0
        for n in ctx.sizes:
            grads.append(flat.index_select(0, order[start:start + n]).view(n, *grad.shape[1:]))
            start += n
        return (None, *grads)


# ---------------------------------------------------------------------------------------------
# Attention on a plan
# ---------------------------------------------------------------------------------------------


def _sdpa_equal_groups(q, k, v, num_groups: int, size: int, dropout_p: float) -> torch.Tensor:
    """Attention inside consecutive equal-size groups: ONE fused SDPA call, no mask."""
    n, heads, dim = q.shape
    qg = q.reshape(num_groups, size, heads, dim).transpose(1, 2)  # (G, H, p, D)
    kg = k.reshape(num_groups, size, heads, dim).transpose(1, 2)  # (G, H, p, D)
    vg = v.reshape(num_groups, size, heads, v.shape[-1]).transpose(1, 2)  # (G, H, p, Dv)
    out = F.scaled_dot_product_attention(qg, kg, vg, dropout_p=dropout_p)  # (G, H, p, Dv)
    return out.transpose(1, 2).reshape(n, heads, v.shape[-1])  # (G*p, H, Dv)


def _remainder_layout(sizes: list[int], device: torch.device):
    """Padded (R, r_max) row index into the remainder block, and its validity mask."""
    sizes_t = torch.tensor(sizes, device=device)
    starts = torch.cumsum(sizes_t, 0) - sizes_t
    slot = torch.arange(max(sizes), device=device)
    valid = slot[None, :] < sizes_t[:, None]  # (R, r_max)
    # Padded slots read row 0; they are masked as keys and their query rows are dropped.
    index = torch.where(valid, starts[:, None] + slot[None, :], torch.zeros_like(slot)[None, :])
    return index, valid


def _attend_remainders(q, k, v, sizes: list[int], dropout_p: float) -> torch.Tensor:
    """Attention inside the remainder groups (sizes differ between graphs of a batch)."""
    if len(set(sizes)) == 1:
        return _sdpa_equal_groups(q, k, v, len(sizes), sizes[0], dropout_p)
    index, valid = _remainder_layout(sizes, q.device)
    qg = q[index].transpose(1, 2)  # (R, H, r_max, D)
    kg = k[index].transpose(1, 2)  # (R, H, r_max, D)
    vg = v[index].transpose(1, 2)  # (R, H, r_max, Dv)
    # Boolean key mask (True = may be attended to): padded keys never receive weight.
    mask = valid[:, None, None, :]  # (R, 1, 1, r_max)
    out = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask, dropout_p=dropout_p)
    return out.transpose(1, 2)[valid]  # (sum(sizes), H, Dv), rows in remainder order


def _attend_permuted(qs, ks, vs, plan: _Plan, dropout_p: float) -> torch.Tensor:
    """RBA on blocks already in the plan's order (see :func:`_permute`); (N, H, Dv) node order."""
    parts = []
    blocks = zip(qs, ks, vs)
    if plan.num_full:
        q, k, v = next(blocks)  # (G*p, H, D) each
        parts.append(_sdpa_equal_groups(q, k, v, plan.num_full, plan.group_size, dropout_p))
    if plan.rem_sizes:
        q, k, v = next(blocks)  # (sum of remainders, H, D) each
        parts.append(_attend_remainders(q, k, v, plan.rem_sizes, dropout_p))
    return _UnpermuteRows.apply(plan.order, *parts)  # (N, H, Dv)


def _attend(q, k, v, plan: _Plan, dropout_p: float) -> torch.Tensor:
    """RBA on (N, H, D) tensors in node order; returns (N, H, Dv) in node order."""
    return _attend_permuted(_permute(q, plan), _permute(k, plan), _permute(v, plan), plan, dropout_p)


def _group_weights(q, k, plan: _Plan) -> RBAAttention:
    """Explicit per-group softmax weights for ``get_attention`` ((N, H, m), never N x N)."""
    scale = q.shape[-1] ** -0.5
    qp = torch.cat(_permute(q, plan))  # (N, H, D) in the plan's order
    kp = torch.cat(_permute(k, plan))
    m = plan.max_group
    n_full = plan.num_full * plan.group_size
    weights, members = [], []
    if plan.num_full:
        g, p = plan.num_full, plan.group_size
        qg = qp[:n_full].reshape(g, p, *qp.shape[1:]).transpose(1, 2)  # (G, H, p, D)
        kg = kp[:n_full].reshape(g, p, *kp.shape[1:]).transpose(1, 2)  # (G, H, p, D)
        att = torch.softmax(qg @ kg.transpose(-1, -2) * scale, dim=-1)  # (G, H, p, p)
        weights.append(att.transpose(1, 2).reshape(n_full, q.shape[1], p))  # (G*p, H, p)
        ids = plan.order[:n_full].view(g, 1, p).expand(g, p, p)  # (G, p, p)
        members.append(ids.reshape(n_full, p))
    if plan.rem_sizes:
        index, valid = _remainder_layout(plan.rem_sizes, q.device)
        r_max = index.shape[1]
        qg = qp[n_full:][index].transpose(1, 2)  # (R, H, r_max, D)
        kg = kp[n_full:][index].transpose(1, 2)  # (R, H, r_max, D)
        logits = (qg @ kg.transpose(-1, -2) * scale).masked_fill(~valid[:, None, None, :], float("-inf"))
        att = torch.softmax(logits, dim=-1).transpose(1, 2)[valid]  # (Nr, H, r_max)
        weights.append(F.pad(att, (0, m - r_max)))  # (Nr, H, m)
        ids = torch.where(valid, plan.order[n_full:][index], torch.full_like(index, -1))  # (R, r_max)
        rows = ids[:, None, :].expand(-1, r_max, -1)[valid]  # (Nr, r_max)
        members.append(F.pad(rows, (0, m - r_max), value=-1))  # (Nr, m)
    w = _UnpermuteRows.apply(plan.order, *weights)  # (N, H, m)
    ids = torch.cat(members)
    out_ids = torch.empty_like(ids).index_copy_(0, plan.order, ids)  # (N, m)
    return RBAAttention(out_ids, w)


def _check_qkv(q, k, v) -> None:
    # check_feat's finiteness test is one cheap sum unless a NaN/Inf is present.
    check_feat(q, "q", ndim=3)
    check_feat(k, "k", ndim=3)
    check_feat(v, "v", ndim=3)
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.shape[:2] != q.shape[:2]:
        raise ValueError(
            f"v must have the same nodes and heads as q {tuple(q.shape[:2])}, got {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.shape[0] == 0:
        raise ValueError("q has no rows; attention needs at least one node")


def _check_param_dtype(feat: torch.Tensor, weight: torch.Tensor, name: str = "feat") -> None:
    """Reject features whose dtype differs from the parameters' (unless autocast is on)."""
    if feat.dtype == weight.dtype or torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled():
        return
    raise TypeError(
        f"{name} has dtype {feat.dtype} but the layer's parameters are {weight.dtype}; "
        f"convert one of them (layer.to({feat.dtype}) or {name}.to({weight.dtype}))"
    )


def random_batch_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    group_size: int,
    *,
    segments: torch.Tensor | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    perm: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    training: bool = True,
) -> torch.Tensor:
    r"""Random batch attention on ``(N, H, D)`` tensors, without a graph.

    The rows are shuffled, cut into groups of ``group_size`` and every row attends (softmax,
    scale :math:`1/\sqrt{D}`) only to the rows of its group, per head; the result is returned in
    the original row order. The rows left over when ``N`` is not a multiple of ``group_size``
    form one smaller group of their own (no padding token anyone can attend to). With
    ``segments`` (nodes per graph of a batched graph, rows contiguous per graph, as DGL lays
    them out) each graph is shuffled and cut on its own, so a group never mixes graphs. When
    ``group_size >= N`` (per graph) this is exact multi-head attention.

    Parameters
    ----------
    q, k : torch.Tensor
        Queries and keys, shape ``(N, H, D)``.
    v : torch.Tensor
        Values, shape ``(N, H, Dv)``.
    group_size : int
        Group size :math:`p \geq 1`.
    segments : torch.Tensor or sequence of int, optional
        Rows per graph (``graph.batch_num_nodes()``); must sum to ``N``.
    generator : torch.Generator, optional
        Source of the random permutation; default torch's global generator (on ``q``'s
        device), so ``torch.manual_seed`` makes runs repeat.
    perm : torch.Tensor, optional
        An explicit permutation (int64, ``(N,)``) to use instead of a random one: positions
        ``perm[0:p]`` form the first group, and so on. With ``segments``, the positions of graph
        ``b``'s segment must hold graph ``b``'s nodes; each graph's trailing ``n_b mod p``
        positions form its remainder group.
    dropout_p : float
        Dropout on the attention weights, applied only when ``training``. (On CPU, dropout makes
        SDPA fall back to its unfused kernel, which keeps the ``(G, H, p, p)`` weights.)
    training : bool
        Whether dropout is active (as in ``torch.nn.functional.dropout``).

    Returns
    -------
    torch.Tensor
        ``(N, H, Dv)``.

    Examples
    --------
    >>> import torch
    >>> from dgl_rbgt.nn.rba import random_batch_attention
    >>> q, k, v = torch.randn(3, 10, 2, 8).unbind(0)
    >>> random_batch_attention(q, k, v, group_size=4).shape
    torch.Size([10, 2, 8])
    >>> out = random_batch_attention(q, k, v, group_size=4, segments=[6, 4])  # never mixes
    """
    _check_qkv(q, k, v)
    group_size = check_positive_int(group_size, "group_size")
    dropout_p = check_probability(dropout_p, "dropout_p")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    num_nodes = q.shape[0]
    counts = _as_counts(segments, num_nodes)
    if perm is None:
        plan = _random_plan(num_nodes, group_size, counts, generator, q.device)
    else:
        plan = _plan_from_perm(_check_perm(perm, num_nodes, counts, q.device), group_size, counts)
    return _attend(q, k, v, plan, dropout_p if training else 0.0)


# ---------------------------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------------------------


class RBAConv(nn.Module):
    r"""Random batch attention layer from `How Particle-System Random Batch Methods Enhance
    Graph Transformer: Memory Efficiency and Parallel Computing Strategy
    <https://arxiv.org/abs/2511.06044>`__ (Liu, Ma, Jin, Wang, 2025).

    Global attention in O(N p d): the nodes are shuffled, cut into groups of size :math:`p`,
    and every node attends to the nodes of its own group with ordinary softmax multi-head
    attention:

    .. math::
        q_i^{h} = W_Q^{h} x_i + b_Q^{h}, \quad k_j^{h} = W_K^{h} x_j + b_K^{h},
        \quad v_j^{h} = W_V^{h} x_j + b_V^{h}

        h_i^{h} = \sum_{j \in \mathcal{B}(i)} \mathrm{softmax}_{j \in \mathcal{B}(i)}
        \left(\frac{q_i^{h\top} k_j^{h}}{\sqrt{D}}\right) v_j^{h}

    where :math:`\mathcal{B}(i)` is node :math:`i`'s group in a uniformly random partition of
    the nodes into groups of :math:`p` (the paper defines RBA as the expectation over such
    partitions). Our choices where the paper leaves details open:

    * **Training** draws a fresh permutation per forward from torch's global generator (on the
      features' device): ``torch.manual_seed`` makes runs repeat.
    * **Remainder**: when a graph's node count :math:`n` is not a multiple of :math:`p`, its last
      :math:`n \bmod p` shuffled nodes form their own smaller group. No padding token exists that
      a real node could attend to.
    * **Batched graphs** (``dgl.batch``): each graph is shuffled and cut on its own, so groups
      never mix graphs.
    * **Evaluation** (``model.eval()``), by ``eval_mode``:
      ``"fixed"`` one grouping from a private CPU ``torch.Generator`` seeded with ``eval_seed``
      at every call (repeatable, the same on every device, the global generator untouched);
      ``"mean"`` the mean of the outputs of ``eval_repeats`` such groupings (a Monte-Carlo
      estimate of the expectation over partitions); ``"full"`` exact full attention inside
      every graph, allowed up to ``full_max_nodes`` nodes per graph: larger graphs raise a
      ``DGLError`` (we raise rather than silently changing the method).
    * When :math:`p \geq n` every graph is one group: exact full multi-head attention.

    Like :class:`~dgl.nn.GATConv` the layer has no output projection: heads are returned
    separately, ``(N, H, out_feats)``; flatten or average them, or add a ``Linear`` after.

    Parameters
    ----------
    in_feats : int
        Input feature size :math:`d_{in}`.
    out_feats : int
        Feature size per head :math:`D`.
    num_heads : int
        Number of heads :math:`H`.
    group_size : int
        Group size :math:`p`. Cost per layer is :math:`O(N p H D)` time and :math:`O(N H D)`
        memory (the fused SDPA kernel keeps no :math:`p \times p` weights on CPU or CUDA).
    feat_drop : float, optional
        Dropout on the input features. Default: ``0``.
    attn_drop : float, optional
        Dropout on the attention weights (training only). Default: ``0``.
    bias : bool, optional
        Whether the query, key and value projections have biases. Default: ``True``.
    residual : bool, optional
        Add a residual connection (identity when ``in_feats == num_heads * out_feats``, else a
        bias-free linear map). Default: ``False``.
    activation : callable, optional
        Applied to the output. Default: ``None``.
    eval_mode : str, optional
        ``"fixed"``, ``"mean"`` or ``"full"`` (see above). Default: ``"fixed"``.
    eval_repeats : int, optional
        Number of groupings averaged by ``eval_mode="mean"``. Default: ``8``.
    eval_seed : int, optional
        Seed of the evaluation groupings. Default: ``0``.
    full_max_nodes : int, optional
        Largest graph (nodes) that ``eval_mode="full"`` accepts.
        Default: :data:`FULL_ATTENTION_MAX_NODES` (16384).

    Note
    ----
    RBA is global attention: zero in-degree nodes are no problem and edges are ignored; use it
    beside a message-passing layer (as :class:`~dgl_rbgt.models.rbtransformer.RBTransformer`
    does). Blocks (message-flow graphs from neighbour sampling) are rejected with a
    ``DGLError``: attention over a sampled frontier is not global attention. For mini-batch
    training pass the induced subgraph of a random node batch (SGFormer's recipe).

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.nn.rba import RBAConv
    >>> g = dgl.rand_graph(10, 30)
    >>> feat = torch.randn(10, 5)
    >>> conv = RBAConv(5, 4, num_heads=2, group_size=4)
    >>> conv(g, feat).shape
    torch.Size([10, 2, 4])
    >>> out, att = conv(g, feat, get_attention=True)
    >>> att.members.shape, att.weights.shape  # groups of 4, 4, 2
    (torch.Size([10, 4]), torch.Size([10, 2, 4]))
    >>> bg = dgl.batch([dgl.rand_graph(6, 12), dgl.rand_graph(4, 8)])
    >>> _ = conv.eval()
    >>> conv(bg, feat).shape  # groups stay inside each graph
    torch.Size([10, 2, 4])
    >>> torch.equal(conv(bg, feat), conv(bg, feat))  # eval_mode="fixed" repeats
    True
    """

    def __init__(
        self,
        in_feats: int,
        out_feats: int,
        num_heads: int,
        group_size: int,
        feat_drop: float = 0.0,
        attn_drop: float = 0.0,
        bias: bool = True,
        residual: bool = False,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        eval_mode: str = "fixed",
        eval_repeats: int = 8,
        eval_seed: int = 0,
        full_max_nodes: int = FULL_ATTENTION_MAX_NODES,
    ):
        super().__init__()
        self._in_feats = check_positive_int(in_feats, "in_feats")
        self._out_feats = check_positive_int(out_feats, "out_feats")
        self._num_heads = check_positive_int(num_heads, "num_heads")
        self.group_size = check_positive_int(group_size, "group_size")
        self.eval_mode = check_choice(eval_mode, "eval_mode", EVAL_MODES)
        self.eval_repeats = check_positive_int(eval_repeats, "eval_repeats")
        self.eval_seed = check_positive_int(eval_seed, "eval_seed", minimum=0)
        self.full_max_nodes = check_positive_int(full_max_nodes, "full_max_nodes")
        self.attn_drop = check_probability(attn_drop, "attn_drop")
        self.feat_drop = nn.Dropout(check_probability(feat_drop, "feat_drop"))
        if activation is not None and not callable(activation):
            raise TypeError(f"activation must be callable or None, got {type(activation).__name__}")
        self.activation = activation
        width = num_heads * out_feats
        self.fc_q = nn.Linear(in_feats, width, bias=bias)
        self.fc_k = nn.Linear(in_feats, width, bias=bias)
        self.fc_v = nn.Linear(in_feats, width, bias=bias)
        if residual:
            self.res_fc = nn.Identity() if in_feats == width else nn.Linear(in_feats, width, bias=False)
        else:
            self.register_buffer("res_fc", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reinitialise: Glorot-uniform projection weights (as ``nn.MultiheadAttention``), zero
        biases."""
        for fc in (self.fc_q, self.fc_k, self.fc_v):
            nn.init.xavier_uniform_(fc.weight)
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)
        if isinstance(self.res_fc, nn.Linear):
            nn.init.xavier_uniform_(self.res_fc.weight)

    def extra_repr(self) -> str:
        return (
            f"in_feats={self._in_feats}, out_feats={self._out_feats}, num_heads={self._num_heads}, "
            f"group_size={self.group_size}, eval_mode={self.eval_mode!r}, "
            f"eval_repeats={self.eval_repeats}, eval_seed={self.eval_seed}, attn_drop={self.attn_drop}"
        )

    def _mode(self) -> str:
        """``"random"`` in training, else the evaluation mode."""
        return "random" if self.training else self.eval_mode

    def _plans(self, num_nodes: int, counts: torch.Tensor | None, device: torch.device) -> list[_Plan]:
        mode = self._mode()
        if mode == "random":
            return [_random_plan(num_nodes, self.group_size, counts, None, device)]
        if mode == "full":
            largest = num_nodes if counts is None else int(counts.max())
            if largest > self.full_max_nodes:
                raise DGLError(
                    f"exact full attention (eval_mode='full', FullAttentionConv) costs O(n^2) per "
                    f"graph and allows at most full_max_nodes={self.full_max_nodes} nodes per "
                    f"graph; got a graph with "
                    f"{largest} nodes. Use eval_mode='fixed' or 'mean', or raise full_max_nodes"
                )
            return [_exact_plan(num_nodes, counts, device)]
        # Private generator: evaluation repeats exactly and never advances the global generator.
        gen = torch.Generator().manual_seed(self.eval_seed)
        repeats = self.eval_repeats if mode == "mean" else 1
        return [_random_plan(num_nodes, self.group_size, counts, gen, device) for _ in range(repeats)]

    def forward(self, graph, feat: torch.Tensor, get_attention: bool = False):
        r"""Compute random batch attention over all nodes of ``graph``.

        Parameters
        ----------
        graph : DGLGraph
            A homogeneous graph, possibly batched (groups then stay inside each graph); only its
            node count and ``batch_num_nodes()`` are used.
        feat : torch.Tensor
            Node features ``(N, in_feats)``, finite, of the parameters' dtype.
        get_attention : bool, optional
            Also return the grouping and its attention weights as :class:`RBAAttention`.

        Returns
        -------
        torch.Tensor
            ``(N, num_heads, out_feats)``.
        RBAAttention, optional
            ``members (N, m)`` and ``weights (N, num_heads, m)`` (leading axis ``eval_repeats``
            with ``eval_mode="mean"``), only with ``get_attention=True``.

        Raises
        ------
        TypeError
            ``graph`` is not a DGLGraph; ``feat`` is not a floating-point tensor or its dtype
            differs from the parameters'.
        ValueError
            ``feat`` has the wrong shape or holds NaN/Inf.
        DGLError
            ``graph`` is a block, a heterograph or has no nodes; ``eval_mode="full"`` on a graph
            larger than ``full_max_nodes``.
        """
        check_homogeneous(graph, "graph", allow_block=False)
        check_nonempty(graph, "graph")
        num_nodes = graph.num_nodes()
        check_feat(feat, "feat", rows=num_nodes, last_dim=self._in_feats, ndim=2)
        _check_param_dtype(feat, self.fc_q.weight)
        with graph.local_scope():
            counts = _as_counts(graph.batch_num_nodes(), num_nodes)
            h = self.feat_drop(feat)
            heads, dim = self._num_heads, self._out_feats
            dropout_p = self.attn_drop if self.training else 0.0
            plans = self._plans(num_nodes, counts, feat.device)
            q = k = None
            if len(plans) == 1 and self._in_feats <= 3 * heads * dim:
                # Permute the input once instead of q, k and v: fewer rows of memory to move.
                blocks = _permute(h, plans[0])
                qs, ks, vs = ([fc(b).view(b.shape[0], heads, dim) for b in blocks]  # (n_b, H, D)
                              for fc in (self.fc_q, self.fc_k, self.fc_v))
                out = _attend_permuted(qs, ks, vs, plans[0], dropout_p)
            else:
                q = self.fc_q(h).view(num_nodes, heads, dim)  # (N, H, D)
                k = self.fc_k(h).view(num_nodes, heads, dim)  # (N, H, D)
                v = self.fc_v(h).view(num_nodes, heads, dim)  # (N, H, D)
                out = _attend(q, k, v, plans[0], dropout_p)
                for plan in plans[1:]:
                    out = out + _attend(q, k, v, plan, dropout_p)
                if len(plans) > 1:
                    out = out / len(plans)
            if self.res_fc is not None:
                out = out + self.res_fc(h).view(num_nodes, heads, dim)
            if self.activation is not None:
                out = self.activation(out)
            if not get_attention:
                return out
            if q is None:
                q = self.fc_q(h).view(num_nodes, heads, dim)  # (N, H, D)
                k = self.fc_k(h).view(num_nodes, heads, dim)  # (N, H, D)
            atts = [_group_weights(q, k, plan) for plan in plans]
            if self._mode() == "mean":
                att = RBAAttention(torch.stack([a.members for a in atts]),
                                   torch.stack([a.weights for a in atts]))
            else:
                att = atts[0]
            return out, att
