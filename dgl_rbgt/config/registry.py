"""The one registry: the names a recipe may use for models, transforms and batchings.

The recipe schema (:mod:`dgl_rbgt.config.schema`), the single-machine pipeline
(:mod:`dgl_rbgt.train.pipeline`) and the distributed trainer all look names up here, so a new
model, transform or batching is added in exactly one place: its class, plus one line below. The
schema of each entry is generated from its constructor (types and defaults live only there).

What a class may declare for the pipeline and the schema:

- a model: ``batching`` (the batching names it supports, default ``("full",)``), ``estimator``
  (a first-stage model whose scores drive a :class:`~dgl_rbgt.batching.TableBatching`; adds the
  recipe's ``stage1:`` section), ``context_hops(config)`` (how many hops of neighbours a node's
  output depends on, for distributed evaluation);
- a batching: ``section`` (the name of its own recipe section, generated from its constructor
  minus ``section_skip``), ``from_recipe(recipe, graph, device, **inputs)`` and
  ``check_recipe(recipe)``.
"""
from __future__ import annotations

from ..batching import FullGraph, NeighborSampling, NodeBatches, TableBatching
from ..models import GAT, GCN, SAGE, Exphormer, GPSTransformer, RBTransformer, Spexphormer
from ..transforms import (
    AddDegreeFeature, AddExpanderEdges, AddSelfLoops, AddVirtualNodes, CastFeatures, MemoryMapFeatures, NormalizeFeatures,
)

__all__ = ["MODELS", "TRANSFORMS", "BATCHINGS"]

#: ``model.name`` -> model class, ``Model(in_feats, num_classes, **model)``.
MODELS: dict[str, type] = {
    "gcn": GCN,
    "sage": SAGE,
    "gat": GAT,
    "rbtransformer": RBTransformer,
    "exphormer": Exphormer,
    "spexphormer": Spexphormer,
    "gps": GPSTransformer,
}

#: ``transforms[i].name`` -> DGL ``BaseTransform`` class, ``Transform(**transforms[i])``.
TRANSFORMS: dict[str, type] = {
    "normalize_features": NormalizeFeatures,
    "degree_feature": AddDegreeFeature,
    "cast_features": CastFeatures,
    "memory_map_features": MemoryMapFeatures,
    "expander": AddExpanderEdges,
    "self_loops": AddSelfLoops,
    "virtual_nodes": AddVirtualNodes,
}

#: ``train.batching`` -> :class:`~dgl_rbgt.batching.Batching` class.
BATCHINGS: dict[str, type] = {cls.name: cls for cls in (FullGraph, NeighborSampling, NodeBatches, TableBatching)}
