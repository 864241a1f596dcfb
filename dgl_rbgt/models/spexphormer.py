"""Spexphormer (Shirzad et al., NeurIPS 2024, https://arxiv.org/abs/2411.16278): two stages.

The two-stage pipeline::

    graph = add_self_loops(AddExpanderEdges(degree=...)(g))          # typed edges 0 / 1 / 2
    estimator = ScoreEstimator(in_feats, num_classes, layers=L)       # stage 1, full graph
    ... train it (Trainer with FullGraph batching; on_epoch_start anneals T), keep the best ...
    scores = estimator.attention_scores(graph, graph.ndata["feat"])   # (L, E)
    batching = TableBatching(graph, scores=scores, ks=[k_1, ..., k_L], batch_size=...)
    model = Spexphormer(in_feats, num_classes, layers=L)              # stage 2, mini-batches
    ... train it with Trainer(model, batching, ...) ...

:class:`~dgl_rbgt.batching.TableBatching` draws :class:`~dgl_rbgt.sampling.NeighbourTables`
from ``(graph, scores, ks)`` and grows layer-wise mini-batches through them (lists of
:class:`~dgl_rbgt.nn.spexphormer.TableBlock`); both stages must use the *same* graph object (the
scores are per edge of it).
"""
from __future__ import annotations

import weakref
from typing import ClassVar, Sequence

import dgl
import torch
import torch.utils.checkpoint
from torch import nn

from dgl_rbgt._checks import all_finite, check_feat, check_homogeneous, check_nonempty, check_positive_int, check_probability
from dgl_rbgt.conventions import ETYPE
from dgl_rbgt.nn.score_estimator import ScoreEstimatorConv
from dgl_rbgt.nn.spexphormer import SpexphormerConv, TableBlock
from dgl_rbgt.nn.stored_features import project_stored
from dgl_rbgt.nn.typed_csr import GraphCache
from dgl_rbgt.sampling import NeighbourTables, table_blocks

__all__ = ["ScoreEstimator", "Spexphormer"]

#: Destination rows per chunk of full-graph evaluation (about 200 MB of activations at hidden 64).
INFERENCE_ROWS = 1 << 17


def _check_heads(hidden: int, num_heads: int) -> None:
    check_positive_int(hidden, "hidden")
    check_positive_int(num_heads, "num_heads")
    if hidden % num_heads:
        raise ValueError(f"hidden ({hidden}) must be divisible by num_heads ({num_heads}); "
                         f"each head gets hidden // num_heads channels")


class _FeedForward(nn.Module):
    """Linear(h, 2h) + ReLU + dropout + Linear(2h, h) + dropout (the reference's FFN block)."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(2 * hidden, hidden), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ScoreEstimator(nn.Module):
    r"""Spexphormer's stage 1: a narrow attention network whose scores pick the neighbours.

    .. math::
        x^{(0)} = \mathrm{ReLU}(W_{in} x), \quad
        y = \mathrm{LN}\big(x^{(l-1)} + \mathrm{Drop}(\mathrm{Attn}_l(x^{(l-1)}))\big), \quad
        x^{(l)} = \mathrm{LN}\big(y + \mathrm{FFN}(y)\big), \quad
        \mathrm{logits} = W_{out} x^{(L)}

    with :class:`~dgl_rbgt.nn.score_estimator.ScoreEstimatorConv` as ``Attn`` (heads
    concatenated) on the graph plus expander and self-loop edges. The softmax temperature is
    annealed per epoch by :meth:`on_epoch_start`:
    :math:`T = 1` for ``epoch < temperature_wait``, then
    :math:`T = \max(T_{min}, r^{\,epoch - wait})`. Train it full-graph (or, for graphs whose
    full-graph step does not fit, on DGL's sampled neighbourhoods: ``forward(blocks, feat)``),
    keep the best-validation checkpoint (the temperature is a buffer, so it is restored with the
    weights), then read the per-layer scores with :meth:`attention_scores` (layer by layer in
    chunks with ``rows``). The reference uses LayerNorm-like GraphNorm
    here; we use LayerNorm.

    Parameters
    ----------
    in_feats, num_classes : int
        Input feature size and number of output logits.
    hidden : int
        Width (heads concatenated); Spexphormer uses 4-8.
    num_heads : int
        Attention heads (Spexphormer uses 1; scores are averaged over heads).
    layers : int
        Attention layers; must equal the wide network's layers (one score row per layer).
    dropout : float
        Dropout after attention and in the FFN.
    num_edge_types : int
        Edge-type vocabulary of ``graph.edata['etype']``.
    temperature_min, temperature_decay : float
        :math:`T_{min}` in (0, 1] and the per-epoch factor :math:`r` in (0, 1].
    temperature_wait : int
        Epochs at :math:`T = 1` before the decay starts.
    checkpoint : bool
        Recompute each layer's activations in the backward pass instead of keeping them (activation
        checkpointing): training then holds one layer's activations at a time, for about a third
        more time per step. For graphs whose full-graph step does not fit otherwise (on a
        10-million-node graph with 170M edges, hidden 4 and 3 layers: about 3 GB instead of 11 GB).

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.models.spexphormer import ScoreEstimator
    >>> from dgl_rbgt.transforms.edge_types import add_self_loops
    >>> g = add_self_loops(dgl.rand_graph(30, 90))
    >>> model = ScoreEstimator(5, 3, hidden=4, layers=2)
    >>> model(g, torch.randn(30, 5)).shape
    torch.Size([30, 3])
    >>> feat = torch.randn(30, 5)
    >>> model.attention_scores(g, feat).shape
    torch.Size([2, 120])
    >>> torch.allclose(model.attention_scores(g, feat, rows=8), model.attention_scores(g, feat), atol=1e-6)
    True
    """

    batching: ClassVar[tuple[str, ...]] = ("full", "neighbor")

    #: Takes features stored in half precision as they are: the input projection casts them in
    #: chunks (:func:`~dgl_rbgt.nn.stored_features.project_stored`), so a full-graph call never
    #: holds a float32 copy of them.
    projects_stored_features: ClassVar[bool] = True

    def __init__(self, in_feats: int, num_classes: int, *, hidden: int = 8, num_heads: int = 1,
                 layers: int = 4, dropout: float = 0.0, num_edge_types: int = 3,
                 temperature_min: float = 0.05, temperature_decay: float = 0.99,
                 temperature_wait: int = 10, checkpoint: bool = False):
        super().__init__()
        if not isinstance(checkpoint, bool):
            raise TypeError(f"checkpoint must be True or False, got {checkpoint!r}")
        self.checkpoint = checkpoint
        check_positive_int(in_feats, "in_feats")
        check_positive_int(num_classes, "num_classes")
        _check_heads(hidden, num_heads)
        check_positive_int(layers, "layers")
        check_probability(dropout, "dropout")
        for name, value in (("temperature_min", temperature_min), ("temperature_decay", temperature_decay)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
        check_positive_int(temperature_wait, "temperature_wait", minimum=0)
        self.temperature_min = float(temperature_min)
        self.temperature_decay = float(temperature_decay)
        self.temperature_wait = temperature_wait
        self.encoder = nn.Sequential(nn.Linear(in_feats, hidden), nn.ReLU())
        self.convs = nn.ModuleList(
            ScoreEstimatorConv(hidden, hidden // num_heads, num_heads, num_edge_types)
            for _ in range(layers))
        shared = GraphCache()  # one sparse layout of the graph for all layers
        for conv in self.convs:
            conv.structure_cache = shared
        self.attn_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.ffns = nn.ModuleList(_FeedForward(hidden, dropout) for _ in range(layers))
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)

    @property
    def temperature(self) -> float:
        return float(self.convs[0].temperature)

    def temperature_at(self, epoch: int) -> float:
        """The annealed temperature of ``epoch`` (1 before ``temperature_wait``)."""
        if epoch < self.temperature_wait:
            return 1.0
        return max(self.temperature_min, self.temperature_decay ** (epoch - self.temperature_wait))

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the training loop before each epoch: sets every layer's temperature."""
        value = self.temperature_at(epoch)
        for conv in self.convs:
            conv.set_temperature(value)

    def _run(self, graph: dgl.DGLGraph, feat: torch.Tensor, collect: bool):
        check_homogeneous(graph, allow_block=False)
        check_nonempty(graph)
        check_feat(feat, "feat", rows=graph.num_nodes())
        x = self.encoder[1](project_stored(self.encoder[0], feat))  # (N, hidden), half-stored feat in chunks
        # (L, E) written row by row: a list stacked at the end would hold the scores twice
        scores = x.new_empty(len(self.convs), graph.num_edges()) if collect else None
        for i, conv in enumerate(self.convs):
            if collect:
                out, att = conv(graph, x, get_attention=True)  # (N, H, D), (E, H, 1)
                scores[i] = att.mean(dim=1).squeeze(-1)  # (E,) averaged over heads
                del att
                x = self._finish_layer(i, x, out)
            elif self.checkpoint and torch.is_grad_enabled():
                # keep only the layer's input; its node and edge activations are recomputed in backward
                x = torch.utils.checkpoint.checkpoint(self._layer, i, graph, x, use_reentrant=False)
            else:
                x = self._layer(i, graph, x)
        return self.head(x), scores

    def _layer(self, i: int, graph: dgl.DGLGraph, x: torch.Tensor) -> torch.Tensor:
        return self._finish_layer(i, x, self.convs[i](graph, x))

    def _finish_layer(self, i: int, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Residual, normalisation and feed-forward around layer ``i``'s attention output."""
        x = self.attn_norms[i](x + self.dropout(out.flatten(1)))  # (N, hidden)
        return self.ffn_norms[i](x + self.ffns[i](x))

    def clear_cache(self) -> None:
        """Forget the sparse layout of the last graph (kept between epochs; several GB on a
        10-million-node graph), e.g. once the scores are read."""
        self.convs[0].structure_cache.clear()

    def forward(self, graph: dgl.DGLGraph | Sequence[dgl.DGLGraph], feat: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` on the full graph (with expander and self-loop edges), or,
        given one DGL block per layer (``NeighborSampling``'s message-flow graphs), for the last
        block's destination nodes: mini-batch training for graphs whose full-graph step does not
        fit. Sampled in-neighbourhoods change each softmax's support; the scores are read on the
        full graph afterwards (:meth:`attention_scores` with ``rows``)."""
        if isinstance(graph, (list, tuple)):
            return self._run_blocks(list(graph), feat)
        return self._run(graph, feat, collect=False)[0]

    def _run_blocks(self, blocks: list, feat: torch.Tensor) -> torch.Tensor:
        if len(blocks) != len(self.convs):
            raise ValueError(f"got {len(blocks)} blocks for a model with {len(self.convs)} layers; sample "
                             f"one fanout per layer")
        for i, block in enumerate(blocks):
            if not (isinstance(block, dgl.DGLGraph) and block.is_block):
                raise TypeError(f"blocks[{i}] must be a DGL block, got {type(block).__name__}")
        check_feat(feat, "feat", rows=blocks[0].num_src_nodes())
        x = self.encoder[1](project_stored(self.encoder[0], feat))  # (n_0, hidden)
        for i, (block, conv) in enumerate(zip(blocks, self.convs)):
            # destination nodes are the first rows of a block's sources: their own features
            x = self._finish_layer(i, x[: block.num_dst_nodes()], conv(block, x))
        return self.head(x)

    @torch.no_grad()
    def layerwise_inference(self, graph: dgl.DGLGraph, feat: torch.Tensor, rows: int = INFERENCE_ROWS,
                            collect: bool = False):
        """The full-graph forward computed layer by layer, ``rows`` destination nodes at a time:
        the same logits as ``forward(graph, feat)`` in evaluation mode, holding two ``(N, hidden)``
        states and one chunk's in-edges instead of the graph's sparse layout and every edge's
        activations. With ``collect``, returns ``(logits, scores)`` as :meth:`attention_scores`.

        Each chunk is a DGL block of its destinations' in-edges, sliced from the graph's CSC (built
        once, 16 bytes per edge, and kept by the graph: neighbour sampling reads it too).
        """
        check_homogeneous(graph, allow_block=False)
        check_nonempty(graph)
        check_positive_int(rows, "rows")
        n = graph.num_nodes()
        check_feat(feat, "feat", rows=n)
        x = self.encoder[1](project_stored(self.encoder[0], feat))  # (N, hidden)
        scores = x.new_empty(len(self.convs), graph.num_edges()) if collect else None
        indptr, indices, eids = graph.adj_tensors("csc")
        etype = graph.edata.get(ETYPE)
        for i, conv in enumerate(self.convs):
            nxt = x.new_empty(x.shape)
            for a in range(0, n, rows):
                b = min(a + rows, n)
                lo, hi = int(indptr[a]), int(indptr[b])
                src, edges = indices[lo:hi], eids[lo:hi]  # the chunk's in-edges, by destination
                nodes, src_local = torch.unique(src, return_inverse=True)
                dst_local = torch.repeat_interleave(torch.arange(b - a, device=src.device), indptr[a + 1:b + 1] - indptr[a:b])
                block = dgl.create_block((src_local, dst_local), num_src_nodes=len(nodes), num_dst_nodes=b - a)
                if etype is not None:
                    block.edata[ETYPE] = etype[edges]
                if collect:
                    out, att = conv(block, (x[nodes], x[a:b]), get_attention=True)
                    scores[i][edges] = att.mean(dim=1).squeeze(-1)
                else:
                    out = conv(block, (x[nodes], x[a:b]))
                nxt[a:b] = self._finish_layer(i, x[a:b], out)
            x = nxt
        logits = self.head(x)
        return (logits, scores) if collect else logits

    @torch.no_grad()
    def attention_scores(self, graph: dgl.DGLGraph, feat: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """Per-layer normalised attention scores, ``(L, E)``, averaged over heads.

        Runs in evaluation mode (no dropout) without gradients, at the current temperature, and
        restores the training mode afterwards. Row ``l`` sums to 1 over every node's in-edges;
        it is what :func:`~dgl_rbgt.sampling.sparsify` expects. With ``rows``, computed layer by
        layer in chunks of ``rows`` destination nodes (:meth:`layerwise_inference`): the same
        scores in bounded memory.
        """
        was_training = self.training
        self.eval()
        try:
            if rows is not None:
                _, scores = self.layerwise_inference(graph, feat, rows=rows, collect=True)
            else:
                _, scores = self._run(graph, feat, collect=True)
        finally:
            self.train(was_training)
        return scores


# model -> (weak reference to its last input without gradients, version key, projection); kept
# out of the module so that copies and pickles of the model carry no cache.
_ENCODE_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _drop_cache(model_ref) -> None:
    """Forget a model's cached projection once its input tensor is freed."""
    model = model_ref()
    if model is not None:
        _ENCODE_CACHE.pop(model, None)


class Spexphormer(nn.Module):
    r"""Spexphormer's stage 2: a wide attention network on sampled neighbour tables.

    .. math::
        x^{(0)} = W_{in} x, \quad
        y = \mathrm{BN}\big(x^{(l-1)}_{dst} + \mathrm{Drop}(\mathrm{Attn}_l(x^{(l-1)}))\big), \quad
        x^{(l)} = \mathrm{BN}\big(y + \mathrm{FFN}(y)\big), \quad
        \mathrm{logits} = W_{out} x^{(L)}

    ``Attn`` is :class:`~dgl_rbgt.nn.spexphormer.SpexphormerConv` (heads concatenated) over the
    layer's table; the residual of each destination node's own features is the local/self term,
    as in the reference (``h_in[:n_dst] + h_attn``), on top of the sampled self-loop entries.

    ``forward(blocks, feat)``: ``blocks`` lists one :class:`~dgl_rbgt.nn.spexphormer.TableBlock`
    per layer, first layer first. Layer ``l`` maps node list ``l`` (its source list, length
    ``blocks[l].num_src``) to node list ``l + 1``, which is the *prefix* of length
    ``blocks[l].num_dst`` of node list ``l``; ``feat`` holds the input features of node list 0
    and the logits belong to node list ``L`` (the target nodes), in order. Mini-batches come from
    :class:`~dgl_rbgt.batching.TableBatching`; a
    :class:`~dgl_rbgt.sampling.NeighbourTables` is also accepted and runs the
    full graph (every node list is all nodes).

    Parameters
    ----------
    in_feats, num_classes : int
        Input feature size and number of output logits.
    hidden : int
        Width (heads concatenated).
    num_heads : int
        Attention heads per layer.
    layers : int
        Attention layers (one table per layer).
    dropout : float
        Dropout after attention and in the FFN.
    num_edge_types : int
        Edge-type vocabulary of the tables.
    edge_bias : bool
        Per-type per-head logit bias in every layer (the reference's ``E2``).
    clamp : float
        Logit clipping of every layer.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.models.spexphormer import Spexphormer
    >>> from dgl_rbgt.transforms.edge_types import add_self_loops
    >>> from dgl_rbgt.sampling import sparsify
    >>> g = add_self_loops(dgl.rand_graph(30, 90))
    >>> nb = sparsify(g, torch.rand(2, g.num_edges()), [4, 3])
    >>> model = Spexphormer(5, 3, hidden=8, layers=2)
    >>> model(nb, torch.randn(30, 5)).shape
    torch.Size([30, 3])
    """

    batching: ClassVar[tuple[str, ...]] = ("neighbour_tables",)
    #: Stage 1: its attention scores drive the neighbour tables this model trains on.
    estimator: ClassVar[type] = ScoreEstimator

    #: Takes features stored in half precision as they are: the input projection casts them in
    #: chunks (:func:`~dgl_rbgt.nn.stored_features.project_stored`), so a full-graph call never
    #: holds a float32 copy of them.
    projects_stored_features: ClassVar[bool] = True

    def __init__(self, in_feats: int, num_classes: int, *, hidden: int = 64, num_heads: int = 2,
                 layers: int = 4, dropout: float = 0.2, num_edge_types: int = 3,
                 edge_bias: bool = True, clamp: float = 5.0):
        super().__init__()
        check_positive_int(in_feats, "in_feats")
        check_positive_int(num_classes, "num_classes")
        _check_heads(hidden, num_heads)
        check_positive_int(layers, "layers")
        check_probability(dropout, "dropout")
        self.num_layers = layers
        self.encoder = nn.Linear(in_feats, hidden)
        self.convs = nn.ModuleList(
            SpexphormerConv(hidden, hidden // num_heads, num_heads, num_edge_types,
                            edge_bias=edge_bias, clamp=clamp)
            for _ in range(layers))
        shared = GraphCache()  # one sparse layout of the graph for all layers
        for conv in self.convs:
            conv.structure_cache = shared
        self.attn_norms = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(layers))
        self.ffns = nn.ModuleList(_FeedForward(hidden, dropout) for _ in range(layers))
        self.ffn_norms = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)

    def _encode(self, feat: torch.Tensor, rows: int | None) -> torch.Tensor:
        """Input projection of ``feat`` (dense, or sparse CSR for wide sparse features).

        The NaN/Inf check runs on the projected ``(n, hidden)`` rows (or the stored values of a
        sparse input), not on the wide input: a non-finite input entry makes its whole output
        row non-finite (``inf * 0`` is NaN), so the check is as strict and far cheaper.

        Without gradients, the projection of the last input tensor is kept (keyed on the tensor
        itself, weakly, and the version counters of it and of the weights), so evaluating several
        table draws on the same features projects them once.
        """
        key = None
        if not torch.is_grad_enabled() and isinstance(feat, torch.Tensor):
            key = (feat._version, self.encoder.weight._version,
                   None if self.encoder.bias is None else self.encoder.bias._version)
            cached = _ENCODE_CACHE.get(self)
            if cached is not None and cached[0]() is feat and cached[1] == key:
                return cached[2]
        _ENCODE_CACHE.pop(self, None)
        if isinstance(feat, torch.Tensor) and feat.layout == torch.sparse_csr:
            if not torch.is_floating_point(feat) or feat.dim() != 2:
                raise TypeError(f"a sparse feat must be a 2-D floating-point CSR tensor, got "
                                f"dtype {feat.dtype}, shape {tuple(feat.shape)}")
            if rows is not None and feat.shape[0] != rows:
                raise ValueError(f"feat must have {rows} rows (one per node), got shape {tuple(feat.shape)}")
            if feat.shape[1] != self.encoder.in_features:
                raise ValueError(f"feat must have last dimension {self.encoder.in_features}, got shape "
                                 f"{tuple(feat.shape)}")
            check_feat(feat.values(), "feat", ndim=1)  # NaN / Inf among the stored entries
            x = self.encoder(feat)
        else:
            check_feat(feat, "feat", rows=rows, last_dim=self.encoder.in_features, finite=False)
            x = project_stored(self.encoder, feat)  # half-stored feat: cast in chunks
            if not all_finite(x):
                if not all_finite(feat):
                    raise ValueError("feat contains NaN or Inf values")
                raise ValueError("the input projection of feat overflowed (NaN or Inf)")
        if key is not None:
            ref = weakref.ref(feat, lambda _ref, model_ref=weakref.ref(self): _drop_cache(model_ref))
            _ENCODE_CACHE[self] = (ref, key, x)
        return x

    def forward(self, blocks: Sequence[TableBlock] | NeighbourTables, feat: torch.Tensor) -> torch.Tensor:
        """Logits ``(n_targets, num_classes)`` for the last node list (see the class notes).

        ``feat`` may be a sparse CSR tensor (wide bag-of-words features): the input projection
        then runs as a sparse-dense product (what
        :class:`~dgl_rbgt.batching.TableBatching` passes for such graphs).
        """
        if isinstance(blocks, NeighbourTables):
            if not torch.is_grad_enabled() and not self.training:
                return self._full_graph_inference(blocks, feat)
            blocks = table_blocks(blocks)
        blocks = list(blocks)
        if len(blocks) != self.num_layers:
            raise ValueError(f"got {len(blocks)} table blocks for a model with {self.num_layers} "
                             f"layers; sparsify with one k per layer (len(ks) == layers)")
        for i, block in enumerate(blocks):
            if not isinstance(block, TableBlock):
                raise TypeError(f"blocks[{i}] must be a TableBlock, got {type(block).__name__}")
        x = self._encode(feat, blocks[0].num_src)  # (n_0, hidden)
        for i, (block, conv) in enumerate(zip(blocks, self.convs)):
            # (the layer checks the block) Destination nodes are the prefix of the source list:
            # their own features are the first n_dst rows (the residual / self term).
            x = self._layer(i, conv(block, x).flatten(1), x[: block.num_dst])
        return self.head(x)

    def _layer(self, i: int, out: torch.Tensor, x_dst: torch.Tensor) -> torch.Tensor:
        """Residual, normalisation and feed-forward around layer ``i``'s attention output."""
        x = self.attn_norms[i](x_dst + self.dropout(out))
        return self.ffn_norms[i](x + self.ffns[i](x))  # (n_dst, hidden)

    def _full_graph_inference(self, nb: NeighbourTables, feat: torch.Tensor) -> torch.Tensor:
        """Evaluation on the whole graph, layer by layer and :data:`INFERENCE_ROWS` destination
        nodes at a time: the same logits as one full-graph call (normalisation uses running
        statistics in evaluation, so rows are independent), holding two ``(N, hidden)`` states
        and one chunk's activations (its destinations and their table sources) instead of every
        layer's (N, k, hidden) intermediates."""
        if len(nb.tables) != self.num_layers:
            raise ValueError(f"got {len(nb.tables)} tables for a model with {self.num_layers} layers; "
                             f"sparsify with one k per layer (len(ks) == layers)")
        n = nb.num_nodes
        x = self._encode(feat, n)  # (N, hidden)
        for i, conv in enumerate(self.convs):
            table, etype, valid = nb.tables[i], nb.etypes[i], nb.valid[i]
            nxt = x.new_empty(n, x.shape[1])
            for a in range(0, n, INFERENCE_ROWS):
                b = min(a + INFERENCE_ROWS, n)
                # only the chunk's sources are projected (not all N rows once per chunk)
                src, local = torch.unique(table[a:b].to(torch.int64), return_inverse=True)
                block = TableBlock(local, etype[a:b].to(torch.int64), valid[a:b], num_src=len(src))
                nxt[a:b] = self._layer(i, conv(block, (x[src], x[a:b])).flatten(1), x[a:b])
            x = nxt
        return self.head(x)

