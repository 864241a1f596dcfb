"""Random Batch Attention (RBA): softmax attention inside random groups of nodes.

The DGL layer :class:`RBAConv`; its torch-only core is
:func:`dgl_rbgt.nn.functional.random_batch_attention`, and the exact full-attention layer is
:class:`~dgl_rbgt.nn.FullAttentionConv` (both on :class:`~dgl_rbgt.nn.GroupedAttentionConv`).
"""
from __future__ import annotations

from typing import Callable

import torch
from dgl.base import DGLError

from .._checks import check_choice, check_positive_int
from .functional.grouping import GroupPlan, RBAAttention, exact_plan, random_plan
from .grouped_attention import GroupedAttentionConv

__all__ = ["RBAConv", "RBAAttention", "EVAL_MODES", "FULL_ATTENTION_MAX_NODES", "check_full_attention_size"]

#: Evaluation modes of :class:`RBAConv` (training always draws a fresh grouping).
EVAL_MODES = ("fixed", "mean", "full")

#: Default node limit of exact full attention (``eval_mode="full"``, :class:`FullAttentionConv`),
#: counted per graph of a batch. Full attention costs O(n^2) time per graph (and O(n^2) memory where
#: SDPA cannot use its fused kernel, e.g. for batches of graphs of different sizes), so larger
#: graphs raise.
FULL_ATTENTION_MAX_NODES = 16384


def check_full_attention_size(num_nodes: int, counts: torch.Tensor | None, max_nodes: int) -> None:
    """Raise ``DGLError`` when a graph (of a batch) is larger than exact attention allows."""
    largest = num_nodes if counts is None else int(counts.max())
    if largest > max_nodes:
        raise DGLError(
            f"exact full attention (eval_mode='full', FullAttentionConv) costs O(n^2) per graph and "
            f"allows at most full_max_nodes={max_nodes} nodes per graph; got a graph with {largest} "
            f"nodes. Use eval_mode='fixed' or 'mean', or raise full_max_nodes (max_nodes of "
            f"FullAttentionConv)"
        )


class RBAConv(GroupedAttentionConv):
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
    in_feats : int or (int, int)
        Input feature size :math:`d_{in}` (a ``(src, dst)`` pair of equal sizes is accepted, as in
        DGL layers).
    out_feats : int
        Feature size per head :math:`D`.
    num_heads : int, optional
        Number of heads :math:`H`. Default: ``1``.
    group_size : int, optional
        Group size :math:`p`. Default: ``256``. Cost per layer is :math:`O(N p H D)` time and :math:`O(N H D)`
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
    >>> from dgl_rbgt.nn import RBAConv
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
        in_feats: int | tuple[int, int],
        out_feats: int,
        num_heads: int = 1,
        group_size: int = 256,
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
        self.group_size = check_positive_int(group_size, "group_size")
        self.eval_mode = check_choice(eval_mode, "eval_mode", EVAL_MODES)
        self.eval_repeats = check_positive_int(eval_repeats, "eval_repeats")
        self.eval_seed = check_positive_int(eval_seed, "eval_seed", minimum=0)
        self.full_max_nodes = check_positive_int(full_max_nodes, "full_max_nodes")
        super().__init__(in_feats, out_feats, num_heads, feat_drop=feat_drop, attn_drop=attn_drop, bias=bias,
                         residual=residual, activation=activation)

    def extra_repr(self) -> str:
        return (
            f"in_feats={self._in_feats}, out_feats={self._out_feats}, num_heads={self._num_heads}, "
            f"group_size={self.group_size}, eval_mode={self.eval_mode!r}, "
            f"eval_repeats={self.eval_repeats}, eval_seed={self.eval_seed}, attn_drop={self.attn_drop}"
        )

    def _mode(self) -> str:
        """``"random"`` in training, else the evaluation mode."""
        return "random" if self.training else self.eval_mode

    def stacks_groupings(self) -> bool:
        return self._mode() == "mean"

    def plans(self, num_nodes: int, counts: torch.Tensor | None, device: torch.device) -> list[GroupPlan]:
        mode = self._mode()
        if mode == "random":
            return [random_plan(num_nodes, self.group_size, counts, None, device)]
        if mode == "full":
            check_full_attention_size(num_nodes, counts, self.full_max_nodes)
            return [exact_plan(num_nodes, counts, device)]
        # Private generator: evaluation repeats exactly and never advances the global generator.
        gen = torch.Generator().manual_seed(self.eval_seed)
        repeats = self.eval_repeats if mode == "mean" else 1
        return [random_plan(num_nodes, self.group_size, counts, gen, device) for _ in range(repeats)]
