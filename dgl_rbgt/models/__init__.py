"""Reference models composed from :mod:`dgl_rbgt.nn` and ``dgl.nn``.

The recipe names of the models are in :data:`dgl_rbgt.config.registry.MODELS`; the recipe schema
for each is generated from its constructor's keyword arguments (their types and defaults live
only there).
"""
from .baselines import GAT, GCN, SAGE
from .exphormer import Exphormer
from .gps import GPSTransformer
from .rbtransformer import RBTransformer
from .spexphormer import ScoreEstimator, Spexphormer

__all__ = ["GCN", "SAGE", "GAT", "RBTransformer", "GPSTransformer", "Exphormer", "ScoreEstimator", "Spexphormer"]
