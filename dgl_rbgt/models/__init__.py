"""Reference models composed from :mod:`dgl_rbgt.nn` and ``dgl.nn``.

``MODELS`` maps a recipe's ``model.name`` to the class; the recipe schema for each model is
generated from its constructor's keyword arguments (their types and defaults live only there).
"""
from .baselines import GAT, GCN
from .exphormer import Exphormer
from .rbtransformer import RBTransformer
from .spexphormer import ScoreEstimator, Spexphormer

MODELS = {
    "gcn": GCN,
    "gat": GAT,
    "rbtransformer": RBTransformer,
    "exphormer": Exphormer,
    "spexphormer": Spexphormer,
}

__all__ = ["GCN", "GAT", "RBTransformer", "Exphormer", "ScoreEstimator", "Spexphormer", "MODELS"]
