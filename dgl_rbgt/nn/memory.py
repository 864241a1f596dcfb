"""Recurrent memory transformer over segments of nodes, with diagonal batching.

The DGL layer :class:`MemoryTransformer`; its torch-only core is
:mod:`dgl_rbgt.nn.functional.memory`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dgl_rbgt._checks import (
    check_choice,
    check_global_input,
    check_positive_int,
    check_probability,
)
from dgl_rbgt.nn.functional.memory import (
    PASSES,
    SCHEDULES,
    MemoryWeights,
    memory_recurrence,
    shuffle_within_graphs,
)

__all__ = ["MemoryTransformer", "EVAL_MODES"]

#: Evaluation node orders of :class:`MemoryTransformer` (training draws a fresh order per call).
EVAL_MODES = ("fixed", "mean")

# Rows whose largest feature exceeds this are scaled down by a power of two before the input
# projection: LayerNorm's variance overflows float32 beyond |h| ~ 1e19 (features * 1e20 gave NaN).
_HUGE = 2.0 ** 16


class MemoryTransformer(nn.Module):
    r"""Recurrent memory transformer over segments of nodes, with diagonal batching, from
    `Diagonal Batching Unlocks Parallelism in Recurrent Memory Transformers for Long Contexts
    <https://arxiv.org/abs/2506.05229>`__ (Sivtsov et al., 2025); recurrent memory after
    `Recurrent Memory Transformer <https://arxiv.org/abs/2207.06881>`__ (Bulatov et al., 2022).

    Global attention in :math:`O(N (p + m) d)`: the nodes are put in a random order and cut
    into :math:`S = \lceil N / p \rceil` segments of :math:`p`; a stack of :math:`L` post-norm
    transformer layers runs over the segments, and layer :math:`l` carries :math:`m` memory
    tokens :math:`M_l` from one segment to the next. Cell :math:`(l, s)` attends over its
    layer's memory and the segment's tokens (all of them queries):

    .. math::
        H_{-1}^s = \mathrm{LN}(W_{in} x_{\mathcal{S}_s} + b_{in}), \qquad
        [M_l^s;\, H_l^s] = \mathrm{Layer}_l\big([M_l^{s-1};\, H_{l-1}^s]\big),

        \mathrm{Layer}(X) = \mathrm{LN}_2\big(A + \mathrm{FFN}(A)\big), \quad
        A = \mathrm{LN}_1\big(X + \mathrm{MHA}(X) W_O\big)

    with :math:`M_l^{-1}` a learned parameter and :math:`\mathcal{S}_s` the nodes of segment
    :math:`s`; the output is :math:`H_{L-1}` in node order. Memory is layer-local (cell
    :math:`(l, s)` needs only :math:`(l-1, s)` and :math:`(l, s-1)`), so all cells with
    :math:`l + s = t` can run at once: ``schedule="diagonal"`` takes :math:`S + L - 1` batched
    steps where ``"sequential"`` (the definition) takes :math:`S L`; the results agree up to
    float reassociation. Our choices where the papers (about text) leave graphs open:

    * **Node order**: training draws a fresh random order per forward from torch's global
      generator (``torch.manual_seed`` makes runs repeat). Evaluation (``model.eval()``) uses
      orders from a private CPU ``torch.Generator`` seeded with ``seed`` at every call:
      ``eval_mode="fixed"`` one order, ``"mean"`` the mean output over ``eval_repeats`` orders.
    * **Read-out pass** (``passes=2``): one recurrent pass leaves segment :math:`s` blind to
      later segments. The second pass runs the same layers once more over every segment, each
      reading every layer's *final* memory :math:`M_l^{S-1}` (read only); it has no recurrence,
      so it runs all segments at once, and it doubles the cost.
    * **Batched graphs** (``dgl.batch``): every graph is its own sequence (a batch row): no
      segment mixes graphs and every graph starts from the learned memory. A graph's last
      segment may be shorter: its missing positions are masked keys nothing attends to; a
      graph with fewer segments than the largest keeps its memory through the empty ones.
    * **Chains** (``chains=C``): each graph's segments are cut into :math:`C` consecutive runs,
      each its own recurrence from the learned memory, all stepping together:
      :math:`\lceil S / C \rceil + L - 1` diagonal steps of :math:`C` times the cells. Fewer,
      larger steps cost less where the steps are many and small (``segment_size`` 64 on a CPU);
      a chain's memory then summarises :math:`N / C` nodes, and the read-out pass reads all
      :math:`C` chains' final memories (:math:`C m` tokens per layer).
    * **Working memory**: under ``torch.no_grad()`` the wavefront lives in one
      :math:`(L, B, m + p, d)` buffer and segments are read and written one at a time, so the
      layer holds :math:`O(L (p + m) d)` activations beyond the (projected) input and the output.

    Parameters
    ----------
    in_feats : int
        Input feature size.
    hidden : int
        Model width :math:`d` (also the output size).
    num_heads : int
        Attention heads :math:`H`; must divide ``hidden``.
    layers : int
        Transformer layers :math:`L \geq 1`.
    segment_size : int
        Nodes per segment :math:`p \geq 1`.
    memory_tokens : int
        Memory tokens per layer :math:`m \geq 0` (``0``: attention inside segments only, like
        random batch attention with groups of :math:`p`).
    dropout : float, optional
        Dropout on attention weights and on both residual branches (training only). Default: ``0``.
    ffn_ratio : int, optional
        Feed-forward width as a multiple of ``hidden``. Default: ``2``.
    passes : int, optional
        ``1`` (recurrence only) or ``2`` (recurrence, then the read-out pass). Default: ``2``.
    chains : int, optional
        Independent recurrences per graph (see above). Default: ``1``.
    eval_mode : str, optional
        ``"fixed"`` or ``"mean"`` (see above). Default: ``"fixed"``.
    eval_repeats : int, optional
        Orders averaged by ``eval_mode="mean"``. Default: ``8``.
    seed : int, optional
        Seed of the evaluation orders. Default: ``0``.
    schedule : str, optional
        ``"diagonal"`` or ``"sequential"``; an attribute that may be changed at any time (both
        use the same parameters). Default: ``"diagonal"``.

    Attributes
    ----------
    last_num_steps : int
        Recurrent steps the last forward ran, over all its orders: :math:`S + L - 1` per order
        (diagonal) or :math:`S L` (sequential), :math:`S` counted for the largest graph.

    Note
    ----
    This is global attention: edges are ignored and zero in-degree nodes are no problem; use it
    beside a message-passing layer. Blocks (message-flow graphs) are rejected with a
    ``DGLError``. Parameters are stored stacked per layer (``w_qkv`` is ``(L, d, 3d)``, ...), so
    the active layers of a wavefront step are one slice.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.nn.memory import MemoryTransformer
    >>> g = dgl.rand_graph(10, 30)
    >>> feat = torch.randn(10, 5)
    >>> layer = MemoryTransformer(5, 8, num_heads=2, layers=3, segment_size=4, memory_tokens=2)
    >>> layer(g, feat).shape
    torch.Size([10, 8])
    >>> layer.last_num_steps  # 3 segments + 3 layers - 1
    5
    >>> _ = layer.eval()
    >>> out = layer(g, feat)
    >>> layer.schedule = "sequential"
    >>> torch.allclose(layer(g, feat), out, atol=1e-5), layer.last_num_steps
    (True, 9)
    >>> bg = dgl.batch([dgl.rand_graph(6, 12), dgl.rand_graph(4, 8)])
    >>> out, memory = layer(bg, feat, get_memory=True)  # segments stay inside each graph
    >>> memory.shape  # (layers, graphs, memory_tokens, hidden)
    torch.Size([3, 2, 2, 8])
    >>> chained = MemoryTransformer(5, 8, num_heads=2, layers=3, segment_size=2, memory_tokens=2, chains=2)
    >>> chained(g, feat).shape, chained.last_num_steps  # 5 segments: chains of 3 and 2; 3 + 3 - 1
    (torch.Size([10, 8]), 5)
    """

    def __init__(
        self,
        in_feats: int,
        hidden: int,
        num_heads: int,
        layers: int,
        segment_size: int,
        memory_tokens: int,
        *,
        dropout: float = 0.0,
        ffn_ratio: int = 2,
        passes: int = 2,
        chains: int = 1,
        eval_mode: str = "fixed",
        eval_repeats: int = 8,
        seed: int = 0,
        schedule: str = "diagonal",
    ):
        super().__init__()
        self._in_feats = check_positive_int(in_feats, "in_feats")
        self._hidden = check_positive_int(hidden, "hidden")
        self._num_heads = check_positive_int(num_heads, "num_heads")
        if hidden % num_heads:
            raise ValueError(f"hidden must be divisible by num_heads, got hidden={hidden}, num_heads={num_heads}")
        self._layers = check_positive_int(layers, "layers")
        self.segment_size = check_positive_int(segment_size, "segment_size")
        self._memory_tokens = check_positive_int(memory_tokens, "memory_tokens", minimum=0)
        self.dropout = check_probability(dropout, "dropout")
        self._ffn = hidden * check_positive_int(ffn_ratio, "ffn_ratio")
        self.passes = check_choice(passes, "passes", PASSES)
        self.chains = check_positive_int(chains, "chains")
        self.eval_mode = check_choice(eval_mode, "eval_mode", EVAL_MODES)
        self.eval_repeats = check_positive_int(eval_repeats, "eval_repeats")
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.schedule = schedule
        self.last_num_steps = 0
        self.fc_in = nn.Linear(in_feats, hidden)
        self.norm_in = nn.LayerNorm(hidden)
        d, f, L = hidden, self._ffn, layers
        shapes = dict(memory=(L, memory_tokens, d), w_qkv=(L, d, 3 * d), b_qkv=(L, 3 * d), w_out=(L, d, d),
                      norm1_weight=(L, d), norm1_bias=(L, d), w_ff1=(L, d, f), b_ff1=(L, f),
                      w_ff2=(L, f, d), b_ff2=(L, d), norm2_weight=(L, d), norm2_bias=(L, d))
        for name in MemoryWeights._fields:
            self.register_parameter(name, nn.Parameter(torch.empty(shapes[name])))
        self.reset_parameters()

    @property
    def schedule(self) -> str:
        """``"diagonal"`` or ``"sequential"``; may be changed after construction."""
        return self._schedule

    @schedule.setter
    def schedule(self, value: str) -> None:
        self._schedule = check_choice(value, "schedule", SCHEDULES)

    def reset_parameters(self) -> None:
        """Reinitialise: Glorot-uniform matrices (per layer), zero biases, unit norms, and
        standard-normal memory (the scale of the LayerNorm'd node tokens it sits beside)."""
        nn.init.xavier_uniform_(self.fc_in.weight)
        nn.init.zeros_(self.fc_in.bias)
        self.norm_in.reset_parameters()
        with torch.no_grad():
            for name in ("w_qkv", "w_out", "w_ff1", "w_ff2"):
                for matrix in getattr(self, name):  # per layer: a stacked tensor's fans are wrong
                    nn.init.xavier_uniform_(matrix)
            for name in ("b_qkv", "b_ff1", "b_ff2", "norm1_bias", "norm2_bias"):
                nn.init.zeros_(getattr(self, name))
            nn.init.ones_(self.norm1_weight)
            nn.init.ones_(self.norm2_weight)
            nn.init.normal_(self.memory)

    def extra_repr(self) -> str:
        return (
            f"in_feats={self._in_feats}, hidden={self._hidden}, num_heads={self._num_heads}, "
            f"layers={self._layers}, segment_size={self.segment_size}, "
            f"memory_tokens={self._memory_tokens}, ffn={self._ffn}, dropout={self.dropout}, "
            f"passes={self.passes}, chains={self.chains}, eval_mode={self.eval_mode!r}, "
            f"eval_repeats={self.eval_repeats}, "
            f"seed={self.seed}, schedule={self.schedule!r}"
        )

    def memory_weights(self) -> MemoryWeights:
        """The stacked layer parameters, as :func:`~dgl_rbgt.nn.functional.memory.memory_recurrence`
        takes them."""
        return MemoryWeights(*(getattr(self, name) for name in MemoryWeights._fields))

    def _embed(self, feat: torch.Tensor) -> torch.Tensor:
        """Input projection + LayerNorm, safe for huge finite features.

        Rows whose largest entry exceeds ``_HUGE`` are divided by a power of two first (exact):
        ``fc_in(x) / s = W (x / s) + b / s`` and LayerNorm is scale-invariant (up to its eps),
        so normal rows are untouched and huge ones no longer overflow.
        """
        amax = feat.detach().abs().amax(-1, keepdim=True)  # (N, 1)
        if bool(amax.max() <= _HUGE):
            return self.norm_in(self.fc_in(feat))
        scale = torch.exp2(torch.floor(torch.log2(amax.clamp(min=_HUGE)) - math.log2(_HUGE)))  # (N, 1)
        h = torch.addcdiv(F.linear(feat / scale, self.fc_in.weight), self.fc_in.bias, scale)
        return self.norm_in(h)

    def _orders(self, sizes: list[int], device: torch.device) -> list[torch.Tensor]:
        if self.training:
            return [shuffle_within_graphs(sizes, None, device)]
        # Private generator: evaluation repeats exactly and never advances the global generator.
        gen = torch.Generator().manual_seed(self.seed)
        repeats = self.eval_repeats if self.eval_mode == "mean" else 1
        return [shuffle_within_graphs(sizes, gen, device) for _ in range(repeats)]

    def forward(self, graph, feat: torch.Tensor, get_memory: bool = False):
        r"""Run the memory transformer over all nodes of ``graph``.

        Parameters
        ----------
        graph : DGLGraph
            A homogeneous graph, possibly batched; only its node count and
            ``batch_num_nodes()`` are used.
        feat : torch.Tensor
            Node features ``(N, in_feats)``, finite, of the parameters' dtype.
        get_memory : bool, optional
            Also return every layer's final memory of the recurrent pass.

        Returns
        -------
        torch.Tensor
            ``(N, hidden)``.
        torch.Tensor, optional
            ``(layers, B, chains * memory_tokens, hidden)`` for ``B`` graphs (leading axis
            ``eval_repeats`` with ``eval_mode="mean"`` in evaluation), only with ``get_memory``.

        Raises
        ------
        TypeError
            ``graph`` is not a DGLGraph; ``feat`` is not a floating-point tensor or its dtype
            differs from the parameters'.
        ValueError
            ``feat`` has the wrong shape or holds NaN/Inf.
        DGLError
            ``graph`` is a block, a heterograph or has no nodes.
        """
        num_nodes = check_global_input(graph, feat, self._in_feats, self.w_qkv)
        with graph.local_scope():
            sizes = graph.batch_num_nodes().tolist()
            h = self._embed(feat)
            weights = self.memory_weights()
            out, memories, self.last_num_steps = None, [], 0
            orders = self._orders(sizes, feat.device)
            for order in orders:  # one at a time: "mean" holds one output sum, not eval_repeats
                res = memory_recurrence(h, weights, self._num_heads, self.segment_size, order=order,
                                        graph_sizes=sizes, schedule=self.schedule, passes=self.passes,
                                        chains=self.chains,
                                        dropout_p=self.dropout, training=self.training)
                out = res.out if out is None else out + res.out
                memories.append(res.memory)
                self.last_num_steps += res.num_steps
            if len(orders) > 1:
                out = out / len(orders)
            if not get_memory:
                return out
            return out, memories[0] if len(orders) == 1 else torch.stack(memories)
