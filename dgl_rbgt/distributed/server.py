"""The DistDGL server process: serves one partition until the trainers are done.

The launcher runs ``python -m dgl_rbgt.distributed.server --spec RUN/launch.json --rank N`` for
every server of every host (``DGL_ROLE=server``); :func:`dgl.distributed.initialize` loads the
partition into shared memory, serves it and never returns. The server imports DGL and the recipe
schema only: with the trainer's models and training loop it held 38 MB more private memory
(``RssAnon``, measured on import), and a host runs one server beside its trainers.
"""
from __future__ import annotations

import logging
import os

from .process import run_process

logger = logging.getLogger("dgl_rbgt.distributed.server")  # also when run as __main__


def serve(spec: dict) -> int:
    """Serve the partition of ``spec`` (the launcher's launch.json) until the trainers are done."""
    import dgl
    import torch

    from ..config import parse_distributed

    dist = parse_distributed(spec["distributed"])
    torch.set_num_threads(dist.server_threads)
    logger.info("server %s: serving partition %s", os.environ.get("DGL_SERVER_ID"), spec["part_config"])
    dgl.distributed.initialize(spec["ip_config"])  # serves until the trainers shut it down; exits
    return 0


def main(argv: list[str] | None = None):
    run_process("server", "DistDGL server process (started by `dgl-rbgt launch`).", serve, argv)


if __name__ == "__main__":
    main()
