"""Distributed training on DistDGL: partition a recipe's graph, launch servers and trainers on
every host, train with the same loop and models as a single machine.

``dgl-rbgt partition RECIPE`` then ``dgl-rbgt launch RECIPE`` (see docs/distributed.md). This
package imports neither DGL nor torch at import time; the pieces are:

- :mod:`dgl_rbgt.config.distributed`: the recipe's ``distributed:`` section;
- :mod:`.addresses`: this machine's addresses, as DistDGL sees them;
- :mod:`.partition`: :func:`partition` (``dgl.distributed.partition_graph`` + a report);
- :mod:`.launcher`: processes on every host, torchrun's failure semantics;
- :mod:`.trainer`: the server/trainer entry point run on every host;
- :mod:`.tables`: Spexphormer's neighbour tables stored in the partitions;
- :mod:`.batching`: the batchings over a DistGraph.

Several hosts on one Linux box (network + mount namespaces) are test scaffolding:
``tests/support/netns.py``.
"""
