"""Reference models composed from :mod:`dgl_rbgt.nn` and ``dgl.nn``.

``MODELS`` maps a recipe's ``model.name`` to the class; the recipe schema for each model is
generated from its constructor's keyword arguments (their types and defaults live only there).
"""
from .baselines import GAT, GCN

MODELS = {"gcn": GCN, "gat": GAT}

__all__ = ["GCN", "GAT", "MODELS"]
