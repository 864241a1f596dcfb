"""Graph -> graph transforms: feature normalisation, typed self-loops, expander edges, virtual
nodes, and score-driven sparsification (:func:`sparsify`).

``TRANSFORMS`` maps a recipe's ``transforms[i].name`` to the class; the recipe schema of each
is generated from its constructor.
"""
from .edge_types import EdgeType, add_self_loops
from .expander import AddExpanderEdges, spectral_gap
from .features import NormalizeFeatures
from .self_loops import AddSelfLoops
from .sparsify import SparseNeighbourhoods, Sparsifier, sparsify
from .virtual_nodes import AddVirtualNodes

TRANSFORMS: dict = {
    "normalize_features": NormalizeFeatures,
    "expander": AddExpanderEdges,
    "self_loops": AddSelfLoops,
    "virtual_nodes": AddVirtualNodes,
}

__all__ = ["AddExpanderEdges", "AddSelfLoops", "AddVirtualNodes", "EdgeType", "NormalizeFeatures",
           "SparseNeighbourhoods", "Sparsifier", "add_self_loops", "sparsify", "spectral_gap", "TRANSFORMS"]
