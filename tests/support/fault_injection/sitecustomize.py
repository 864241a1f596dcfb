"""Test-only fault injection for distributed runs: ``DGL_RBGT_FAIL_AT=RANK:EPOCH`` makes trainer
RANK raise at the start of training epoch EPOCH.

A test puts this folder on the launched processes' ``PYTHONPATH`` (the launcher passes it on), so
Python imports this module at start-up in every server, trainer and sampler process; production
code carries no trace of it. Every rank first meets the others in a barrier at the start of that
epoch, so the failure comes after all of them finished the epoch before (rank 0 has logged it).
"""
import os

SPEC = os.environ.get("DGL_RBGT_FAIL_AT")


def _fail_at(epoch: int) -> None:
    import torch

    if not SPEC.endswith(f":{epoch}"):
        return
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if SPEC == f"{os.environ.get('RANK', '0')}:{epoch}":
        raise RuntimeError(f"failure injected by DGL_RBGT_FAIL_AT={SPEC}")


def _inject() -> None:
    from dgl_rbgt.distributed import batching

    for cls in (batching.DistNeighborSampling, batching.DistNodeBatches, batching.DistTableBatching):
        original = cls.train_batches

        def train_batches(self, train_nodes, epoch, original=original):
            _fail_at(epoch)
            yield from original(self, train_nodes, epoch)

        cls.train_batches = train_batches


if SPEC and os.environ.get("DGL_ROLE") == "client":
    _inject()
