"""Reference models composed from :mod:`dgl_rbgt.nn` and ``dgl.nn``.

The recipe names of the models are in :data:`dgl_rbgt.config.registry.MODELS`; the recipe schema
for each is generated from its constructor's keyword arguments (their types and defaults live
only there).
"""
from .baselines import GAT, GCN
from .exphormer import Exphormer
from .rbtransformer import RBTransformer
from .spexphormer import ScoreEstimator, Spexphormer

__all__ = ["GCN", "GAT", "RBTransformer", "Exphormer", "ScoreEstimator", "Spexphormer"]
