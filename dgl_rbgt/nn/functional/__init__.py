"""Torch-only attention cores: tensors in, tensors out, no DGLGraph.

The layers in :mod:`dgl_rbgt.nn` wrap these with projections, DGL conventions and argument checks;
use them directly when the nodes are already grouped or when DGL is not at hand (the GPU
benchmarks run them on machines with torch alone).

- :func:`random_batch_attention`: softmax attention inside random groups of ``p`` rows;
- :func:`full_attention`: exact softmax attention over all rows of each graph;
- :func:`sgformer_attention`: SGFormer's normalised linear attention;
- :func:`memory_recurrence`: recurrent memory over segments, sequential or diagonal schedule;
- :mod:`.grouping`: the grouping plans and grouped SDPA both softmax forms share.
"""
from .full import full_attention
from .linear import sgformer_attention
from .memory import MemoryWeights, memory_recurrence, shuffle_within_graphs
from .rba import random_batch_attention

__all__ = ["random_batch_attention", "full_attention", "sgformer_attention", "memory_recurrence", "MemoryWeights",
           "shuffle_within_graphs"]
