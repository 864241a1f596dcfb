"""Attention layers that drop into DGL models like ``dgl.nn`` convolutions.

One attention family per file: random batch attention (:mod:`.rba`), exact full attention
(:mod:`.full_attention`), SGFormer's linear attention (:mod:`.linear_attention`), Exphormer's
sparse attention (:mod:`.exphormer`), Spexphormer's score estimator (:mod:`.score_estimator`) and
its fixed-degree table attention (:mod:`.spexphormer`).
"""
import dgl.nn as _dgl_nn

from .exphormer import ExphormerConv
from .full_attention import FullAttentionConv, full_attention
from .linear_attention import SGFormerAttention, sgformer_attention
from .rba import RBAAttention, RBAConv, random_batch_attention
from .score_estimator import ScoreEstimatorConv
from .spexphormer import SpexphormerConv, TableBlock

_LAYERS = {
    "RBAConv": RBAConv,
    "FullAttentionConv": FullAttentionConv,
    "SGFormerAttention": SGFormerAttention,
    "ExphormerConv": ExphormerConv,
    "ScoreEstimatorConv": ScoreEstimatorConv,
    "SpexphormerConv": SpexphormerConv,
}


def _register(layers: dict) -> None:
    """Expose our layers as ``dgl.nn.<Name>`` without overwriting anything DGL defines."""
    for name, cls in layers.items():
        if not hasattr(_dgl_nn, name):
            setattr(_dgl_nn, name, cls)


_register(_LAYERS)

__all__ = sorted(_LAYERS) + ["RBAAttention", "TableBlock", "random_batch_attention", "full_attention",
                             "sgformer_attention"]
