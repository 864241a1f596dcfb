"""Graph -> graph transforms: feature normalisation, expander edges, virtual nodes, and
score-driven sparsification.

``TRANSFORMS`` maps a recipe's ``transforms[i].name`` to the class; the recipe schema of each
is generated from its constructor.
"""
from .features import NormalizeFeatures

TRANSFORMS: dict = {"normalize_features": NormalizeFeatures}

__all__ = ["NormalizeFeatures", "TRANSFORMS"]
