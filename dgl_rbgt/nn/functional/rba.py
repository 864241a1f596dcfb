"""Random batch attention on ``(N, H, D)`` tensors (torch only)."""
from __future__ import annotations

from typing import Sequence

import torch

from ..._checks import check_positive_int, check_probability
from .grouping import attend_in_groups, check_permutation, check_qkv, plan_from_permutation, random_plan, segment_counts

__all__ = ["random_batch_attention"]


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
        Dropout on the attention weights, applied only when ``training``. (On CPU, torch's fused
        kernel has no dropout: the groups then run in chunks of about 4M weights, each
        recomputed in the backward pass, so the ``(G, H, p, p)`` weights are never all held.)
    training : bool
        Whether dropout is active (as in ``torch.nn.functional.dropout``).

    Returns
    -------
    torch.Tensor
        ``(N, H, Dv)``.

    Examples
    --------
    >>> import torch
    >>> from dgl_rbgt.nn.functional import random_batch_attention
    >>> q, k, v = torch.randn(3, 10, 2, 8).unbind(0)
    >>> random_batch_attention(q, k, v, group_size=4).shape
    torch.Size([10, 2, 8])
    >>> out = random_batch_attention(q, k, v, group_size=4, segments=[6, 4])  # never mixes
    """
    check_qkv(q, k, v)
    group_size = check_positive_int(group_size, "group_size")
    dropout_p = check_probability(dropout_p, "dropout_p")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    num_nodes = q.shape[0]
    counts = segment_counts(segments, num_nodes)
    if perm is None:
        plan = random_plan(num_nodes, group_size, counts, generator, q.device)
    else:
        plan = plan_from_permutation(check_permutation(perm, num_nodes, counts, q.device), group_size, counts)
    return attend_in_groups(q, k, v, plan, dropout_p if training else 0.0)
