"""The DistDGL trainer process, for every model.

The launcher runs ``python -m dgl_rbgt.distributed.trainer --spec RUN/launch.json --rank N`` for
every trainer of every host (the servers run :mod:`dgl_rbgt.distributed.server`). A trainer
connects to the servers, joins ``torch.distributed`` (gloo on CPU, NCCL on GPU), opens the
:class:`~dgl.distributed.DistGraph`, takes its share of the train/val/test nodes
(:func:`~dgl.distributed.node_split`), and trains with the single-machine loop
(:class:`dgl_rbgt.train.loop.Trainer`) through two seams:

- a :class:`~dgl_rbgt.batching.Batching` over the DistGraph, chosen by ``train.batching``
  (:mod:`dgl_rbgt.distributed.batching`: neighbour sampling for GCN/GAT, random node batches for
  RBTransformer, stored neighbour tables for Spexphormer stage 2), with the same number of
  training batches on every trainer (DDP's all-reduce would otherwise wait forever);
- :class:`DistTrainer`, which takes labels from the batches and gathers evaluation logits from
  every rank, so all ranks compute the same metrics and stop early together.

Evaluation runs the very batches a single machine would (:func:`eval_plan`): the labelled nodes
in original-id order cut into ``eval_batch_size`` chunks, dealt round-robin to the trainers. This
matters because models such as GCN normalise by degrees counted inside a block, so a node's logits
depend on which nodes share its batch; with rank-local batches the same weights scored 5 points
lower on the 3000-node quickstart graph than on one machine.

Rank 0 alone writes the run directory (checkpoints atomically); every rank reads the checkpoint
on ``--resume``, so the run directory must be on a file system all hosts share (like the
partitions and the checkout).
"""
from __future__ import annotations

import datetime
import logging
import math
import os
import torch
from torch import nn

from ..batching import Batching
from ..batching.node_batches import EVAL_FULL_GRAPH_NODES
from ..config.registry import MODELS
from ..train.loop import Trainer
from ..utils.logs import log_to_file
from .process import run_process
from .batching import DIST_BATCHINGS, DistBatch, DistNeighborSampling, DistNodeBatches, DistTableBatching

__all__ = ["DistTrainer", "Replicated", "all_gather_cat", "eval_plan", "pad_to", "main"]

logger = logging.getLogger("dgl_rbgt.distributed.trainer")  # also when run as __main__

COLLECTIVE_TIMEOUT_S = 1800  # a collective waiting longer than this fails (the launcher then stops all)


class Replicated(nn.parallel.DistributedDataParallel):
    """DDP whose state dict is the wrapped model's (no ``module.`` prefix), so checkpoints and
    ``best.pt`` load into the plain model exactly like single-machine ones."""

    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)

    def on_epoch_start(self, epoch: int) -> None:
        hook = getattr(self.module, "on_epoch_start", None)
        if hook is not None:
            hook(epoch)


def collective_device() -> torch.device:
    """Where collective operands must live: the current GPU under NCCL, else the CPU."""
    import torch.distributed as tdist

    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (rows may differ per rank) from every rank, in rank order; the
    result is on ``tensor``'s device."""
    import torch.distributed as tdist

    world = tdist.get_world_size()
    dev = collective_device()
    size = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    tdist.all_gather(sizes, size)
    rows = [int(s) for s in sizes]
    padded = torch.zeros((max(rows),) + tuple(tensor.shape[1:]), dtype=tensor.dtype, device=dev)
    padded[:tensor.shape[0]] = tensor.to(dev)
    parts = [torch.empty_like(padded) for _ in range(world)]
    tdist.all_gather(parts, padded)
    return torch.cat([p[:r] for p, r in zip(parts, rows)]).to(tensor.device)


def pad_to(nodes: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """``nodes`` followed by a seeded selection of its own entries, ``length`` in all.

    Every trainer pads its training nodes to the longest list, so all run the same number of
    batches per epoch: DDP all-reduces gradients in every step, and a rank that runs out of
    batches early would leave the others waiting forever.
    """
    if length < len(nodes):
        raise ValueError(f"cannot pad {len(nodes)} nodes down to {length}")
    if length == len(nodes):
        return nodes
    if len(nodes) == 0:
        raise ValueError("cannot pad an empty node list")
    extra = torch.randperm(len(nodes), generator=generator).repeat(-(-(length - len(nodes)) // len(nodes)))
    return torch.cat([nodes, nodes[extra[:length - len(nodes)]]])


def eval_plan(ids: torch.Tensor, keys: torch.Tensor, codes: torch.Tensor, rank: int, world: int,
              batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This rank's evaluation nodes, in batches identical to a single machine's.

    ``ids``, ``keys`` and ``codes`` hold every rank's labelled nodes (gathered): DistGraph ids,
    original ids (the single-machine order) and split codes (0 train, 1 val, 2 test). Sorted by
    ``keys`` and cut into ``batch_size`` chunks, chunk ``k`` goes to rank ``k % world``; the chunks
    of a rank are concatenated in order, so a loader with the same ``batch_size`` and no shuffling
    cuts them back exactly (only the globally last chunk can be short, and it comes last).

    Returns (this rank's nodes, all ids sorted, their codes) - the last two look codes up.
    """
    order = torch.argsort(keys)
    chunks = ids[order].split(batch_size)
    mine = chunks[rank::world]
    nodes = torch.cat(mine) if mine else ids[:0]
    by_id = torch.argsort(ids)
    return nodes, ids[by_id], codes[by_id]


class DistTrainer(Trainer):
    """The single-machine :class:`~dgl_rbgt.train.loop.Trainer` on one rank of a DistDGL job.

    ``splits`` are this rank's nodes; labels come with each batch (no label vector over all nodes
    is held anywhere; ``code_lookup`` holds the ids and split codes of the labelled nodes, from
    :func:`eval_plan`). ``evaluate`` gathers logits, labels and split membership from all ranks, so
    every rank computes identical metrics and makes the same early-stopping decision.
    """

    def __init__(self, model: nn.Module, batching: Batching, splits: dict[str, torch.Tensor],
                 label_template: torch.Tensor, num_outputs: int, metric, config, run_dir, *,
                 code_lookup: tuple[torch.Tensor, torch.Tensor], **kwargs):
        self.num_outputs = num_outputs
        empty = {k: torch.empty(0, dtype=torch.int64) for k in ("train", "val", "test")}
        super().__init__(model, batching, label_template[:0], empty, metric, config, run_dir, **kwargs)
        self.splits = {k: v.to(self.device) for k, v in splits.items()}
        # (sorted ids, split codes) of every labelled node of every rank: 0 train, 1 val, 2 test
        self._eval_sorted, self._eval_codes = code_lookup
        self.memory = _MemoryLog(kwargs.get("is_writer", True))

    def train_step(self, batch: DistBatch) -> tuple[float, int]:
        logits = batch.run(self.model)  # through DDP: gradients are all-reduced in backward
        labels = batch.labels
        if batch.loss_mask is not None:
            logits, labels = logits[batch.loss_mask], labels[batch.loss_mask]
        count = len(labels)
        # A node batch may hold no training node; this rank must still take part in the step
        # (DDP all-reduces in every backward), so it contributes a zero gradient.
        loss = self.loss_fn(logits, labels) if count else logits.sum() * 0.0
        self.optimise(loss)
        return float(loss.detach()) * count, count

    @torch.no_grad()
    def _gather_eval(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        module = self._eval_module()
        ids, outs, labels, codes = [], [], [], []
        for batch in self.batching.eval_batches():
            # Node batches output every node of a subgraph; keep the labelled ones
            split = self._split_codes(batch)
            keep = split >= 0
            ids.append(batch.output_nodes[keep])
            outs.append(batch.run(module)[keep])
            labels.append(batch.labels[keep])
            codes.append(split[keep])
        ids = torch.cat(ids) if ids else torch.empty(0, dtype=torch.int64, device=self.device)
        outs = torch.cat(outs) if outs else torch.empty((0, self.num_outputs), device=self.device)
        labels = torch.cat(labels) if labels else self.labels[:0]
        codes = torch.cat(codes) if codes else torch.empty(0, dtype=torch.int64, device=self.device)
        return all_gather_cat(ids), all_gather_cat(outs.float()), all_gather_cat(labels), all_gather_cat(codes)

    def _eval_module(self) -> nn.Module:
        """The plain module in eval mode, not DDP: evaluation batch counts differ per rank, and
        DDP's forward may start collectives (buffer broadcasts) that would then never be matched."""
        module = self.plain_model
        module.eval()
        return module

    def _split_codes(self, batch: DistBatch) -> torch.Tensor:
        """(B,) int64 split of every output node of ``batch``: 0 train, 1 val, 2 test, -1 none;
        carried by the batch, else looked up in the evaluation plan's (ids, codes)."""
        if batch.splits is not None:
            return batch.splits.to(torch.int64)
        ids = batch.output_nodes.cpu()
        codes = torch.full_like(ids, -1)
        if len(self._eval_sorted):
            pos = torch.searchsorted(self._eval_sorted, ids).clamp_(max=len(self._eval_sorted) - 1)
            keep = self._eval_sorted[pos] == ids
            codes[keep] = self._eval_codes[pos[keep]]
        return codes.to(batch.output_nodes.device)

    @torch.no_grad()
    def _evaluate_counts(self) -> dict[str, float]:
        """Accuracy and validation loss from sums: each rank counts, batch by batch, its correct
        predictions and nodes per split and its validation loss, and one ``all_reduce`` adds them
        up. Nothing of the size of the graph is gathered (on a 10M-node graph the gathered logits,
        labels and ids took about 1 GB on every rank)."""
        import torch.distributed as tdist

        module = self._eval_module()
        sums = torch.zeros(8, dtype=torch.float64)  # correct and count per split, val loss sum and count
        for batch in self.batching.eval_batches():
            logits, labels = batch.run(module).float(), batch.labels
            codes = self._split_codes(batch).to(logits.device)
            right = logits.argmax(-1) == labels
            for i in range(3):
                sel = codes == i
                sums[2 * i] += int(right[sel].sum())
                sums[2 * i + 1] += int(sel.sum())
            val = codes == 1
            if bool(val.any()):
                sums[6] += float(torch.nn.functional.cross_entropy(logits[val], labels[val], reduction="sum"))
                sums[7] += int(val.sum())
        sums = sums.to(collective_device())
        tdist.all_reduce(sums)
        sums = sums.cpu().tolist()
        result = {f"{split}_metric": sums[2 * i] / sums[2 * i + 1] if sums[2 * i + 1] else math.nan
                  for i, split in enumerate(("train", "val", "test"))}
        result["val_loss"] = sums[6] / sums[7] if sums[7] else math.nan
        return result

    @torch.no_grad()
    def gather_logits(self, nodes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of every evaluated node of every rank (collective: all ranks must call it)."""
        ids, logits, _, _ = self._gather_eval()
        if nodes is not None:
            keep = torch.isin(ids, nodes.to(ids.device))
            ids, logits = ids[keep], logits[keep]
        return ids, logits

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.memory("training epoch")
        if self.metric.name == "accuracy":
            result = self._evaluate_counts()
            self.memory("evaluation")
            return result
        _, logits, labels, codes = self._gather_eval()
        self.memory("evaluation gather")
        result = {}
        for i, split in enumerate(("train", "val", "test")):
            sel = codes == i
            result[f"{split}_metric"] = self.metric(logits[sel], labels[sel])
        val = codes == 1
        result["val_loss"] = float(self.loss_fn(logits[val], labels[val])) if bool(val.any()) else math.nan
        return result


# ---- process entry --------------------------------------------------------------------------------

def _threads(dist, recipe) -> int:
    if dist.trainer_threads:
        return dist.trainer_threads
    if recipe.train.threads:
        return recipe.train.threads
    return max(1, (os.cpu_count() or 2) // (2 * dist.trainers_per_host))


def _socket_ifname(address: str) -> None:
    """Point gloo/NCCL at the interface that holds this host's address (unless the user did):
    their default follows the hostname, which on multi-homed hosts or network namespaces is often
    an address the other hosts cannot reach."""
    from .addresses import interface_of

    name = interface_of(address) if address else None
    if name:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", name)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", name)


def _split_nodes(g, rank: int, world: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """This rank's train/val/test nodes (DistDGL's node_split) and its padded training list."""
    import dgl

    from ..errors import UserError

    pb = g.get_partition_book()
    trainer_ids = g.ndata["trainer_id"] if "trainer_id" in g.ndata else None
    splits = {s: dgl.distributed.node_split(g.ndata[f"{s}_mask"], pb, force_even=True, node_trainer_ids=trainer_ids)
              for s in ("train", "val", "test")}
    # Pad every rank's training nodes to the longest list: equal batch counts keep DDP in step.
    n_max = _max_over_ranks(len(splits["train"]))
    n_min = -_max_over_ranks(-len(splits["train"]))
    if n_min == 0:
        raise UserError(f"a trainer got no training nodes ({world} trainers, at most {int(n_max)} training "
                        f"nodes each); use fewer trainers")
    train_nodes = pad_to(splits["train"], int(n_max), torch.Generator().manual_seed(seed * 1_000_003 + rank))
    logger.info("rank %d/%d on partition %d: %d train (%d padding), %d val, %d test nodes", rank, world,
                pb.partid, len(splits["train"]), len(train_nodes) - len(splits["train"]), len(splits["val"]),
                len(splits["test"]))
    return splits, train_nodes


def _plan_evaluation(g, splits: dict[str, torch.Tensor], rank: int, world: int, batch_size: int):
    """:func:`eval_plan` over the labelled nodes of all ranks (collective)."""
    local = torch.cat([splits["train"], splits["val"], splits["test"]])
    codes = torch.cat([torch.full((len(splits[k]),), i, dtype=torch.int64)
                       for i, k in enumerate(("train", "val", "test"))])
    # original ids (stored by `dgl-rbgt partition`) give the single-machine evaluation order
    keys = g.ndata["orig_nid"][local].to(torch.int64) if "orig_nid" in g.ndata else local
    return eval_plan(all_gather_cat(local), all_gather_cat(keys), all_gather_cat(codes), rank, world, batch_size)


def _eval_parts(g, rank: int, world: int, batch_size: int) -> torch.Tensor:
    """This rank's share of one machine's evaluation parts of a node-batch model: the original
    ids cut into contiguous parts of ``batch_size``, part ``k`` to rank ``k % world``, as
    DistGraph ids (concatenated in order). Each part's ids are read from ``ndata["dist_nid"]``
    (stored by ``dgl-rbgt partition``: entry ``i`` holds the DistGraph id of original node ``i``),
    so no rank holds anything of the graph's size."""
    n = g.num_nodes()
    if "dist_nid" not in g.ndata:
        from ..errors import UserError

        raise UserError("the partitions lack ndata['dist_nid'] (made by an older dgl-rbgt partition); "
                        "run `dgl-rbgt partition RECIPE` again")
    starts = range(rank * batch_size, n, world * batch_size)
    parts = [g.ndata["dist_nid"][torch.arange(a, min(a + batch_size, n))] for a in starts]
    return torch.cat(parts).to(torch.int64) if parts else torch.empty(0, dtype=torch.int64)


def _max_over_ranks(value: int) -> int:
    import torch.distributed as tdist

    t = torch.tensor([value], dtype=torch.int64, device=collective_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return int(t)


def _own_nodes(g) -> torch.Tensor:
    """This trainer's share of all nodes, labelled or not (every node in exactly one share)."""
    import dgl

    everything = torch.ones(g.num_nodes(), dtype=torch.bool)
    trainer_ids = g.ndata["trainer_id"] if "trainer_id" in g.ndata else None
    return dgl.distributed.node_split(everything, g.get_partition_book(), force_even=True,
                                      node_trainer_ids=trainer_ids)


def _batching(g, recipe, part: dict, device, splits: dict[str, torch.Tensor], train_nodes: torch.Tensor,
              eval_nodes: torch.Tensor, eval_bs: int) -> Batching:
    """The recipe's batching mode over the DistGraph (collective: every rank calls it)."""
    import dgl
    import torch.distributed as tdist

    t = recipe.train
    if t.batching == "neighbor":
        return DistNeighborSampling(g, device, fanouts=t.fanouts, batch_size=t.batch_size, eval_batch_size=eval_bs,
                                    train_nodes=train_nodes, eval_nodes=eval_nodes)
    if t.batching == "node_batch":
        # all of this trainer's nodes, labelled or not: the context of attention and the GCN branch
        local = _own_nodes(g)
        model_cls = MODELS[recipe.model.name]
        hops = model_cls.context_hops(recipe.model) if hasattr(model_cls, "context_hops") else 1
        rank, world = tdist.get_rank(), tdist.get_world_size()
        parts = None
        if g.num_nodes() > EVAL_FULL_GRAPH_NODES:  # one machine's evaluation parts, in its node order
            parts = _eval_parts(g, rank, world, eval_bs)
        batching = DistNodeBatches(g, device, rank=rank, world=world, batch_size=t.batch_size, seed=recipe.seed,
                                   local_nodes=local, eval_batch_size=eval_bs, eval_context_hops=hops,
                                   eval_parts=parts)
        logger.info("rank %d: %d random node batches per epoch; evaluates %d nodes%s", rank, batching.num_batches,
                    len(local if parts is None else parts),
                    "" if parts is None else f" in parts of {eval_bs} (as one machine does above "
                                             f"{EVAL_FULL_GRAPH_NODES} nodes)")
        return batching
    if t.batching == "neighbour_tables":
        tables = part.get("tables")
        if not tables:
            from ..errors import UserError

            raise UserError("the partitions hold no neighbour tables; run `dgl-rbgt partition RECIPE` again")
        num_batches = -(-_max_over_ranks(len(splits["train"])) // t.batch_size)
        nt = recipe.neighbour_tables
        resampler = None
        if tables["resample_every"] > 0:
            from .tables import ChunkedResampler

            resampler = ChunkedResampler.from_dist_graph(g, _own_nodes(g), nt.ks, nt.method, recipe.seed,
                                                         tdist.get_rank())
        return DistTableBatching(g, device, num_layers=tables["layers"], eval_draws=tables["eval_draws"],
                                 resample_every=tables["resample_every"], train_nodes=splits["train"],
                                 num_batches=num_batches, eval_nodes=eval_nodes, eval_batch_size=eval_bs,
                                 resampler=resampler)
    raise ValueError(f"train.batching {t.batching!r} has no distributed form; those with one: "
                     f"{sorted(DIST_BATCHINGS)}")  # the recipe check rejects it first


class _MemoryLog:
    """Logs rank 0's resident and peak memory after each setup stage, each training epoch and
    each evaluation, with the resident set split into the trainer's own heap (anon) and the
    partition pages it maps from its host's server (shmem): what a trainer holds, stage by stage,
    for sizing hosts."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, stage: str) -> None:
        if self.enabled:
            from ..utils.memory import peak_rss_mb, rss_mb, rss_parts_mb

            parts = ", ".join(f"{k} {v:.0f}" for k, v in rss_parts_mb().items())
            logger.info("rank 0 memory after %s: resident %.0f MB (%s), peak %.0f MB", stage, rss_mb(), parts,
                        peak_rss_mb())


def run_trainer(spec: dict) -> int:
    import dgl
    import torch.distributed as tdist

    from ..config import parse_recipe
    from ..train.loop import flush_denormals, seed_everything
    from ..utils.memory import peak_rss_bytes
    from ..train.metrics import get_metric
    from ..train.pipeline import build_model, resolve_device, summary_line
    from ..train.rundir import RunDir
    from ..config import parse_distributed

    recipe = parse_recipe(dict(spec["recipe"]), source="launch spec")
    dist = parse_distributed(spec["distributed"])
    part = spec["partition"]
    t = recipe.train
    torch.set_num_threads(_threads(dist, recipe))
    flush_denormals()
    dgl.distributed.initialize(spec["ip_config"])  # before torch.distributed, as DistDGL requires
    _socket_ifname(os.environ.get("DGL_RBGT_HOST_ADDR", ""))
    device = resolve_device(t.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    tdist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                             timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    rank, world = tdist.get_rank(), tdist.get_world_size()
    rd = RunDir(spec["run_dir"])
    if rank == 0:
        log_to_file(rd.log)
        logger.info("%s: %d trainer(s); resolved recipe in %s", recipe.name, world, rd.recipe)

    memory = _MemoryLog(rank == 0)
    g = dgl.distributed.DistGraph(part["graph_name"])
    memory("graph client")
    splits, train_nodes = _split_nodes(g, rank, world, recipe.seed)
    memory("node split")
    eval_bs = t.eval_batch_size or t.batch_size
    if t.batching == "node_batch":  # its evaluation batches carry their splits: no plan over all nodes
        eval_nodes = sorted_ids = sorted_codes = torch.empty(0, dtype=torch.int64)
    else:
        eval_nodes, sorted_ids, sorted_codes = _plan_evaluation(g, splits, rank, world, eval_bs)
    memory("evaluation plan")
    batching = _batching(g, recipe, part, device, splits, train_nodes, eval_nodes, eval_bs)
    memory("batching")
    seed_everything(recipe.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_model(recipe, part["in_feats"], part["num_classes"]).to(device)
    ddp = Replicated(model, device_ids=[device.index] if device.type == "cuda" else None)
    labels = torch.empty((0, *part["label_shape"]), dtype=getattr(torch, part["label_dtype"]))
    trainer = DistTrainer(ddp, batching, splits, labels, part["num_classes"], get_metric(part["metric"]), t, rd,
                          code_lookup=(sorted_ids, sorted_codes), seed=recipe.seed, device=device,
                          checkpoint_every=recipe.output.checkpoint_every, plot=recipe.output.plot,
                          title=recipe.name, is_writer=rank == 0, progress=False)
    result = trainer.fit(resume=bool(spec.get("resume")))

    peaks = all_gather_cat(torch.tensor([peak_rss_bytes() / 2**20], dtype=torch.float64))
    if rank == 0:
        summary = dict(result.summary)
        summary.update(recipe=recipe.name, dataset=part.get("dataset", ""), run_dir=str(rd.path),
                       world_size=world, hosts=len(dist.hosts), trainers_per_host=dist.trainers_per_host,
                       peak_memory_mb_per_rank=[round(float(x), 1) for x in peaks])
        rd.write_summary(summary)
        logger.info("%s", summary_line(summary))
    tdist.barrier()
    # DistDGL's exit now (client barrier; rank 0 shuts the servers down). The caller then leaves
    # with os._exit: everything is written, and torch's gloo teardown at interpreter exit
    # occasionally hangs (pytorch/pytorch#75097; seen here once in ~30 runs: rank 0 stuck after
    # the final barrier while rank 1 had exited).
    dgl.distributed.exit_client()
    return 0


def main(argv: list[str] | None = None):
    run_process("trainer", "DistDGL trainer process (started by `dgl-rbgt launch`).", run_trainer, argv)


if __name__ == "__main__":  # the guard matters: sampler processes are spawned and re-import this module
    # Run main from the module imported under its real name, so anything pickled for spawned
    # sampler processes refers to dgl_rbgt.distributed.trainer, not __main__.
    from dgl_rbgt.distributed.trainer import main as _main

    _main()
