"""Distributed training on DistDGL: partition a recipe's graph, launch servers and trainers on
every host, train with the same loop and models as a single machine.

``dgl-rbgt partition RECIPE`` then ``dgl-rbgt launch RECIPE`` (see docs/distributed.md). This
package imports neither DGL nor torch at import time; the pieces are:

- :mod:`.config`: the recipe's ``distributed:`` section (:class:`DistributedSection`);
- :mod:`.partition`: :func:`partition` (``dgl.distributed.partition_graph`` + a report);
- :mod:`.launcher`: processes on every host, torchrun's failure semantics;
- :mod:`.trainer`: the server/trainer entry point run on every host;
- :mod:`.netns`: several hosts on one Linux box (network + mount namespaces), for tests and
  benchmarks.
"""
from .config import DistributedSection, HostSection, load_distributed_recipe

__all__ = ["DistributedSection", "HostSection", "load_distributed_recipe"]
