"""Grouped softmax attention: the machinery random batch attention and exact attention share.

A :class:`GroupPlan` says how N rows are cut into groups (full groups of ``group_size`` plus one
smaller remainder group per graph); :func:`attend_in_groups` runs ordinary multi-head softmax
attention inside every group with fused SDPA calls and returns the rows in their original order.
Plans never mix the graphs of a batch (``segments``: rows per graph, contiguous as DGL lays them
out). Torch only: no DGLGraph here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from ..._checks import check_feat

__all__ = ["RBAAttention", "GroupPlan", "segment_counts", "graph_ids", "random_permutation", "check_permutation",
           "plan_from_permutation", "random_plan", "exact_plan", "permute_rows", "attend_permuted",
           "attend_in_groups", "group_weights", "check_qkv"]


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


@dataclass
class GroupPlan:
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


def segment_counts(segments: Any, num_nodes: int) -> torch.Tensor | None:
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


def graph_ids(counts: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N,) graph id of every node; nodes of a batched graph are contiguous per graph."""
    counts = counts.to(device)
    return torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts)


def random_permutation(
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
        gid = graph_ids(counts, draw_device)
        keys = torch.argsort(gid * num_nodes + keys)
    return keys.to(device)


def check_permutation(perm: Any, num_nodes: int, counts: torch.Tensor | None, device: torch.device) -> torch.Tensor:
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
        gid = graph_ids(counts, device)
        if bool((gid[perm] != gid).any()):
            raise ValueError(
                "perm mixes graphs: positions of graph b (per segments) must hold nodes of graph b, "
                "so that groups never mix nodes of different graphs"
            )
    return perm


def plan_from_permutation(perm: torch.Tensor, group_size: int, counts: torch.Tensor | None) -> GroupPlan:
    """Cut a segment-respecting permutation into full groups of ``group_size`` and remainders."""
    num_nodes = perm.numel()
    if counts is None:
        num_full = num_nodes // group_size
        rem = num_nodes - num_full * group_size
        return GroupPlan(perm, group_size, num_full, [rem] if rem else [])
    full = counts // group_size * group_size  # (B,) nodes of each graph in full groups
    rem = counts - full  # (B,) size of each graph's remainder group
    num_full = int(full.sum()) // group_size
    if not bool((rem > 0).any()):
        return GroupPlan(perm, group_size, num_full, [])
    # A position is in a full group when its offset inside its graph's segment is < full[b];
    # stable boolean selection moves all full groups to the front, in graph order.
    device = perm.device
    starts = torch.cumsum(counts, 0) - counts
    limit = torch.repeat_interleave((starts + full).to(device), counts.to(device))  # (N,)
    is_full = torch.arange(num_nodes, device=device) < limit
    order = torch.cat([perm[is_full], perm[~is_full]])
    return GroupPlan(order, group_size, num_full, rem[rem > 0].tolist())


def random_plan(num_nodes, group_size, counts, generator, device) -> GroupPlan:
    return plan_from_permutation(random_permutation(num_nodes, counts, generator, device), group_size, counts)


def exact_plan(num_nodes: int, counts: torch.Tensor | None, device: torch.device) -> GroupPlan:
    """One group per graph: exact full attention inside every graph of the batch."""
    largest = num_nodes if counts is None else int(counts.max())
    perm = torch.arange(num_nodes, device=device)
    return plan_from_permutation(perm, max(largest, 1), counts)


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


def permute_rows(x: torch.Tensor, plan: "GroupPlan") -> tuple[torch.Tensor, ...]:
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


#: Attention weights (groups x heads x p x p) one call of the CPU dropout path holds at most.
DROPOUT_CHUNK_WEIGHTS = 1 << 22


def _sdpa_equal_groups(q, k, v, num_groups: int, size: int, dropout_p: float) -> torch.Tensor:
    """Attention inside consecutive equal-size groups: ONE fused SDPA call, no mask."""
    n, heads, dim = q.shape
    qg = q.reshape(num_groups, size, heads, dim).transpose(1, 2)  # (G, H, p, D)
    kg = k.reshape(num_groups, size, heads, dim).transpose(1, 2)  # (G, H, p, D)
    vg = v.reshape(num_groups, size, heads, v.shape[-1]).transpose(1, 2)  # (G, H, p, Dv)
    per_chunk = max(1, DROPOUT_CHUNK_WEIGHTS // (heads * size * size))
    if dropout_p and q.device.type == "cpu" and num_groups > per_chunk:
        out = _sdpa_dropout_in_chunks(qg, kg, vg, per_chunk, dropout_p)
    else:
        out = F.scaled_dot_product_attention(qg, kg, vg, dropout_p=dropout_p)  # (G, H, p, Dv)
    return out.transpose(1, 2).reshape(n, heads, v.shape[-1])  # (G*p, H, Dv)


def _sdpa_dropout_in_chunks(qg, kg, vg, per_chunk: int, dropout_p: float) -> torch.Tensor:
    """SDPA with dropout on CPU, ``per_chunk`` groups per call, each recomputed in backward.

    On CPU, torch's fused SDPA kernel has no dropout, so SDPA falls back to its unfused kernel,
    which materialises the scores, the softmax and the dropped weights of every group and keeps
    them for the backward pass: several ``(G, H, p, p)`` tensors (4.1 GB each for 1M nodes at
    p = 256, H = 4), where the fused kernel keeps ``O(N H)``. Here the weights exist one chunk at
    a time, in the forward pass and again when the backward pass recomputes them with the same
    dropout mask (it replays the random state the forward pass started from).
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (qg, kg, vg)):
        return _ChunkedDropoutAttention.apply(qg, kg, vg, per_chunk, dropout_p)
    return _chunked_forward(qg, kg, vg, per_chunk, dropout_p)


def _chunked_forward(qg, kg, vg, per_chunk: int, dropout_p: float) -> torch.Tensor:
    # The output is allocated before the chunks' temporaries, and each chunk's result is copied
    # into it: a result kept between chunks would sit above the freed temporaries in glibc's heap,
    # which then stops reusing them (measured: +6.8 GB resident for 1M nodes, 0.3 GB live).
    out = qg.new_empty(*qg.shape[:-1], vg.shape[-1])  # (G, H, p, Dv)
    for a in range(0, qg.shape[0], per_chunk):
        b = a + per_chunk
        out[a:b] = F.scaled_dot_product_attention(qg[a:b], kg[a:b], vg[a:b], dropout_p=dropout_p)
    return out


class _ChunkedDropoutAttention(torch.autograd.Function):
    """:func:`_chunked_forward` that keeps only its inputs and the random state for backward."""

    @staticmethod
    def forward(ctx, qg, kg, vg, per_chunk: int, dropout_p: float):
        ctx.rng_state = torch.get_rng_state()  # the masks are drawn again, in the same order
        ctx.per_chunk, ctx.dropout_p = per_chunk, dropout_p
        ctx.save_for_backward(qg, kg, vg)
        return _chunked_forward(qg, kg, vg, per_chunk, dropout_p)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        qg, kg, vg = ctx.saved_tensors
        grads = [torch.empty_like(t) for t in (qg, kg, vg)]  # before the chunks' temporaries
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.set_rng_state(ctx.rng_state)
            for a in range(0, qg.shape[0], ctx.per_chunk):
                b = a + ctx.per_chunk
                parts = [t[a:b].detach().requires_grad_() for t in (qg, kg, vg)]
                out = F.scaled_dot_product_attention(*parts, dropout_p=ctx.dropout_p)
                for grad, part in zip(grads, torch.autograd.grad(out, parts, grad_out[a:b])):
                    grad[a:b] = part
        return (*grads, None, None)


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


def attend_permuted(qs, ks, vs, plan: GroupPlan, dropout_p: float) -> torch.Tensor:
    """RBA on blocks already in the plan's order (see :func:`permute_rows`); (N, H, Dv) node order."""
    parts = []
    blocks = zip(qs, ks, vs)
    if plan.num_full:
        q, k, v = next(blocks)  # (G*p, H, D) each
        parts.append(_sdpa_equal_groups(q, k, v, plan.num_full, plan.group_size, dropout_p))
    if plan.rem_sizes:
        q, k, v = next(blocks)  # (sum of remainders, H, D) each
        parts.append(_attend_remainders(q, k, v, plan.rem_sizes, dropout_p))
    return _UnpermuteRows.apply(plan.order, *parts)  # (N, H, Dv)


def attend_in_groups(q, k, v, plan: GroupPlan, dropout_p: float) -> torch.Tensor:
    """RBA on (N, H, D) tensors in node order; returns (N, H, Dv) in node order."""
    return attend_permuted(permute_rows(q, plan), permute_rows(k, plan), permute_rows(v, plan), plan, dropout_p)


def group_weights(q, k, plan: GroupPlan) -> RBAAttention:
    """Explicit per-group softmax weights for ``get_attention`` ((N, H, m), never N x N)."""
    scale = q.shape[-1] ** -0.5
    qp = torch.cat(permute_rows(q, plan))  # (N, H, D) in the plan's order
    kp = torch.cat(permute_rows(k, plan))
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


def check_qkv(q, k, v) -> None:
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
