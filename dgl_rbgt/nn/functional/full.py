"""Exact softmax attention over all rows of each graph, on ``(N, H, D)`` tensors (torch only)."""
from __future__ import annotations

from typing import Sequence

import torch

from ..._checks import check_probability
from .grouping import attend_in_groups, check_qkv, exact_plan, segment_counts

__all__ = ["full_attention"]


def full_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    segments: torch.Tensor | Sequence[int] | None = None,
    dropout_p: float = 0.0,
    training: bool = True,
) -> torch.Tensor:
    r"""Exact softmax attention of every row over all rows of its graph, on ``(N, H, D)``.

    Equals :func:`random_batch_attention` with ``group_size >= N``. One graph
    runs as one fused SDPA call (O(N^2) time, O(N) memory); a batch of graphs of different
    sizes is padded to the largest with a key mask (O(B n_max^2) memory).

    Examples
    --------
    >>> import torch
    >>> from dgl_rbgt.nn.functional import full_attention
    >>> q, k, v = torch.randn(3, 7, 2, 4).unbind(0)
    >>> full_attention(q, k, v, segments=[3, 4]).shape
    torch.Size([7, 2, 4])
    """
    check_qkv(q, k, v)
    dropout_p = check_probability(dropout_p, "dropout_p")
    plan = exact_plan(q.shape[0], segment_counts(segments, q.shape[0]), q.device)
    return attend_in_groups(q, k, v, plan, dropout_p if training else 0.0)
