"""Attention layers that drop into DGL models like ``dgl.nn`` convolutions.

One attention family per file: random batch attention (:mod:`.rba`), exact full attention
(:mod:`.full_attention`), both on :mod:`.grouped_attention`; SGFormer's linear attention
(:mod:`.linear_attention`); Exphormer's sparse attention (:mod:`.exphormer`); Spexphormer's score
estimator (:mod:`.score_estimator`) and its fixed-degree table attention (:mod:`.spexphormer`);
the recurrent memory transformer with diagonal batching (:mod:`.memory`).
The torch-only cores are in :mod:`dgl_rbgt.nn.functional`.

Every layer is also reachable as ``dgl.nn.<Name>`` once ``dgl_rbgt`` is imported (never replacing
a name DGL already has).
"""
import dgl.nn as _dgl_nn

from .exphormer import ExphormerConv
from .full_attention import FullAttentionConv
from .functional import full_attention, random_batch_attention, sgformer_attention
from .grouped_attention import GroupedAttentionConv
from .linear_attention import SGFormerAttention
from .memory import MemoryTransformer
from .rba import RBAAttention, RBAConv
from .score_estimator import ScoreEstimatorConv
from .spexphormer import SpexphormerConv, TableBlock

#: The layers registered under ``dgl.nn`` (:data:`dgl_rbgt.registration.LAYER_NAMES` lists the same
#: names, so that ``dgl.nn.<Name>`` resolves before this package is imported).
LAYERS = {
    "RBAConv": RBAConv,
    "FullAttentionConv": FullAttentionConv,
    "SGFormerAttention": SGFormerAttention,
    "ExphormerConv": ExphormerConv,
    "ScoreEstimatorConv": ScoreEstimatorConv,
    "SpexphormerConv": SpexphormerConv,
    "MemoryTransformer": MemoryTransformer,
}


def _register(layers: dict) -> None:
    """Expose our layers as ``dgl.nn.<Name>`` without overwriting anything DGL defines (``vars``,
    not ``hasattr``: the lookup hook would answer for our own names)."""
    for name, cls in layers.items():
        if name not in vars(_dgl_nn):
            setattr(_dgl_nn, name, cls)


_register(LAYERS)

__all__ = sorted(LAYERS) + ["GroupedAttentionConv", "RBAAttention", "TableBlock", "LAYERS",
                            "random_batch_attention", "full_attention", "sgformer_attention"]
