"""The global attention of a transformer layer, built by name for every model that has one.

:func:`global_attention` turns a recipe's ``attention`` name into a layer from :mod:`dgl_rbgt.nn`,
and :func:`attend` calls any of them the same way: ``(N, hidden)`` features and a graph in,
``(N, hidden)`` out, the heads averaged (SGFormer, :class:`~dgl_rbgt.models.RBTransformer`) or
concatenated (GPS, :class:`~dgl_rbgt.models.GPSTransformer`). Models hold the returned layer
itself, not a wrapper, so their ``state_dict`` keys are the layer's own.

A new attention kind is added here only: one builder in :data:`_BUILDERS` and its name in
:data:`AttentionKind` (the models' recipe schemas read that type).
"""
from __future__ import annotations

import typing
from typing import Callable, Literal

import torch
from torch import nn

from dgl_rbgt._checks import check_choice, check_positive_int, check_probability
from dgl_rbgt.nn import FullAttentionConv, MemoryTransformer, RBAConv, SGFormerAttention
from dgl_rbgt.nn.rba import EVAL_MODES

__all__ = ["AttentionKind", "ATTENTIONS", "HeadMerge", "HEAD_MERGES", "global_attention", "attend"]

#: A recipe's ``model.attention``: ``"none"`` means no global attention in the layer.
AttentionKind = Literal["rba", "sgformer", "full", "memory", "none"]
#: The names of :data:`AttentionKind`, in order.
ATTENTIONS: tuple[str, ...] = typing.get_args(AttentionKind)

#: A layer's ``merge``: how its heads become one ``(N, hidden)`` output: ``"mean"`` (each head is ``hidden`` wide) or
#: ``"concat"`` (each head is ``hidden // num_heads`` wide).
HeadMerge = Literal["mean", "concat"]
HEAD_MERGES: tuple[str, ...] = typing.get_args(HeadMerge)


def _rba(hidden: int, head_dim: int, num_heads: int, options: dict) -> nn.Module:
    return RBAConv(hidden, head_dim, num_heads, options["group_size"], attn_drop=options["attn_dropout"],
                   eval_mode=options["eval_mode"], eval_repeats=options["eval_repeats"])


def _full(hidden: int, head_dim: int, num_heads: int, options: dict) -> nn.Module:
    return FullAttentionConv(hidden, head_dim, num_heads, attn_drop=options["attn_dropout"])


def _sgformer(hidden: int, head_dim: int, num_heads: int, options: dict) -> nn.Module:
    return SGFormerAttention(hidden, head_dim, num_heads, mean_heads=False)


def _memory(hidden: int, head_dim: int, num_heads: int, options: dict) -> nn.Module:
    if options["eval_mode"] == "full":
        raise ValueError("eval_mode 'full' is exact attention, which recurrent memory has no form of; "
                         "use eval_mode 'fixed' or 'mean' with attention 'memory'")
    if hidden % num_heads:
        raise ValueError(f"num_heads must divide hidden for attention 'memory', got num_heads={num_heads} "
                         f"and hidden={hidden}")
    # One memory layer per transformer layer: segments of group_size nodes pass memory_tokens
    # tokens on, and (memory_passes 2) a read-out pass lets early segments see the final memory.
    return MemoryTransformer(hidden, hidden, num_heads, 1, options["group_size"], options["memory_tokens"],
                             dropout=options["attn_dropout"], eval_mode=options["eval_mode"],
                             eval_repeats=options["eval_repeats"], passes=options["memory_passes"],
                             chains=options["memory_chains"])


# Every builder maps (hidden, per-head width, heads, options) to a layer called as
# ``layer(graph, feat)`` that returns (N, H, head_dim), or (N, hidden) when it merges heads itself.
_BUILDERS: dict[str, Callable[[int, int, int, dict], nn.Module]] = {
    "rba": _rba,
    "sgformer": _sgformer,
    "full": _full,
    "memory": _memory,
}


def global_attention(
    kind: str,
    hidden: int,
    *,
    num_heads: int = 1,
    merge: str = "mean",
    group_size: int = 256,
    attn_dropout: float = 0.0,
    eval_mode: str = "fixed",
    eval_repeats: int = 8,
    memory_tokens: int = 16,
    memory_passes: int = 2,
    memory_chains: int = 1,
) -> nn.Module | None:
    """Build the global attention layer of one transformer layer of width ``hidden``.

    Parameters
    ----------
    kind : str
        ``"rba"`` (:class:`~dgl_rbgt.nn.RBAConv`, random groups of ``group_size``), ``"sgformer"``
        (:class:`~dgl_rbgt.nn.SGFormerAttention`, linear), ``"full"``
        (:class:`~dgl_rbgt.nn.FullAttentionConv`, exact, small graphs only), ``"memory"``
        (:class:`~dgl_rbgt.nn.MemoryTransformer`: segments of ``group_size`` nodes carrying
        ``memory_tokens`` memory tokens, diagonal batching) or ``"none"``.
    hidden : int
        Input width, and the width :func:`attend` returns.
    num_heads : int
        Attention heads.
    merge : str
        ``"mean"``: every head is ``hidden`` wide and :func:`attend` averages them (SGFormer).
        ``"concat"``: every head is ``hidden // num_heads`` wide (``num_heads`` must divide
        ``hidden``) and :func:`attend` concatenates them (multi-head attention as in GPS).
    group_size : int
        RBA's group size :math:`p` (``kind="rba"`` only).
    attn_dropout : float
        Dropout on the attention weights (``rba`` and ``full``).
    eval_mode : str
        RBA's evaluation grouping, ``"fixed"``, ``"mean"`` or ``"full"`` (see
        :class:`~dgl_rbgt.nn.RBAConv`).
    eval_repeats : int
        Groupings averaged by ``eval_mode="mean"``.
    memory_tokens : int
        Memory tokens per layer (``kind="memory"`` only).
    memory_passes : int
        ``2`` (default): a read-out pass lets every segment read the final memory; ``1``: one
        recurrent pass, early segments blind to later ones (``kind="memory"`` only).
    memory_chains : int
        Independent recurrences per graph (``kind="memory"`` only; see
        :class:`~dgl_rbgt.nn.MemoryTransformer`): fewer, larger steps.

    Returns
    -------
    torch.nn.Module or None
        The layer (call it through :func:`attend`), or ``None`` for ``kind="none"``.

    Raises
    ------
    ValueError, TypeError
        An argument out of range or of the wrong type; the message names it.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.models.global_attention import attend, global_attention
    >>> layer = global_attention("rba", 16, num_heads=4, merge="concat", group_size=8)
    >>> type(layer).__name__
    'RBAConv'
    >>> attend(layer, dgl.rand_graph(20, 40), torch.randn(20, 16), merge="concat").shape
    torch.Size([20, 16])
    >>> global_attention("none", 16) is None
    True
    """
    check_choice(kind, "attention", ATTENTIONS)
    check_positive_int(hidden, "hidden")
    check_positive_int(num_heads, "num_heads")
    check_choice(merge, "merge", HEAD_MERGES)
    check_positive_int(group_size, "group_size")
    check_probability(attn_dropout, "attn_dropout")
    check_choice(eval_mode, "eval_mode", EVAL_MODES)
    check_positive_int(eval_repeats, "eval_repeats")
    check_positive_int(memory_tokens, "memory_tokens", minimum=0)
    check_choice(memory_passes, "memory_passes", (1, 2))
    check_positive_int(memory_chains, "memory_chains")
    if kind == "none":
        return None
    if merge == "concat" and hidden % num_heads:
        raise ValueError(f"num_heads must divide hidden when heads are concatenated, got num_heads={num_heads} "
                         f"and hidden={hidden}")
    head_dim = hidden if merge == "mean" else hidden // num_heads
    options = dict(group_size=group_size, attn_dropout=attn_dropout, eval_mode=eval_mode, eval_repeats=eval_repeats,
                   memory_tokens=memory_tokens, memory_passes=memory_passes, memory_chains=memory_chains)
    return _BUILDERS[kind](hidden, head_dim, num_heads, options)


def attend(layer: nn.Module, graph, feat: torch.Tensor, merge: str = "mean") -> torch.Tensor:
    """Run a layer from :func:`global_attention` and merge its heads: ``(N, hidden)``.

    Parameters
    ----------
    layer : torch.nn.Module
        What :func:`global_attention` returned (not ``None``).
    graph : DGLGraph
        The full graph, a node batch's induced subgraph or a ``dgl.batch`` of graphs (attention
        stays inside each graph of a batch).
    feat : torch.Tensor
        ``(N, hidden)`` node features.
    merge : str
        The ``merge`` the layer was built with.

    Returns
    -------
    torch.Tensor
        ``(N, hidden)``.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.models.global_attention import attend, global_attention
    >>> layer = global_attention("sgformer", 8, num_heads=2)
    >>> attend(layer, dgl.rand_graph(5, 10), torch.randn(5, 8)).shape
    torch.Size([5, 8])
    """
    out = layer(graph, feat)
    if out.dim() == 2:  # the layer merged its heads itself
        return out
    # (N, H, D) -> (N, D) averaged, or (N, H * D) concatenated
    return out.mean(1) if merge == "mean" else out.flatten(1)
