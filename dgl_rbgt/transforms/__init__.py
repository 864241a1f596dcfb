"""Graph -> graph transforms: feature normalisation, a degree feature, typed self-loops, expander
edges, virtual nodes; and :func:`sparsify`, Spexphormer's score-driven sparsification.

Every class here is a DGL ``BaseTransform`` that returns a new graph. :func:`sparsify` and
:class:`Sparsifier` live in :mod:`dgl_rbgt.sampling` with the tables they draw; they are
re-exported here because ``dgl_rbgt.transforms.sparsify(g, scores)`` is where users look for them.
The recipe names of the transforms are in :data:`dgl_rbgt.config.registry.TRANSFORMS`.
"""
from ..conventions import EdgeType
from ..sampling import Sparsifier, sparsify
from .edge_types import add_self_loops
from .expander import AddExpanderEdges, spectral_gap
from .features import AddDegreeFeature, CastFeatures, MemoryMapFeatures, NormalizeFeatures
from .self_loops import AddSelfLoops
from .virtual_nodes import AddVirtualNodes

__all__ = ["AddDegreeFeature", "AddExpanderEdges", "AddSelfLoops", "AddVirtualNodes", "CastFeatures", "EdgeType", "MemoryMapFeatures", "NormalizeFeatures",
           "Sparsifier", "add_self_loops", "sparsify", "spectral_gap"]
