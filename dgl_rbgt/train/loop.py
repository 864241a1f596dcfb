"""The one training loop.

Everything model- or graph-specific sits behind four seams, so full-graph, mini-batch,
two-stage and distributed training all run this same loop:

- **batches**: a :class:`~dgl_rbgt.batching.Batching` says how the graph becomes model
  calls (``train_batches`` / ``eval_batches``);
- **step**: :meth:`Trainer.train_step` runs one batch (loss on its training nodes, backward,
  clipping, optimiser step); subclasses may override it;
- **evaluation**: :meth:`Trainer.gather_logits` collects logits for the evaluated nodes and
  :meth:`Trainer.evaluate` turns them into metrics (a distributed trainer overrides these two to
  gather across ranks);
- **persistence**: :class:`~dgl_rbgt.train.rundir.RunDir` and ``save_checkpoint`` write the run
  directory; ``is_writer`` lets only one rank write.

Randomness is re-seeded at the start of every epoch from ``(seed, epoch)``, so a run resumed
from the checkpoint of epoch e draws exactly what an uninterrupted run draws from epoch e + 1.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import dgl
import torch
from torch import nn
from tqdm.auto import tqdm

from .._checks import NonFiniteError, all_finite
from ..errors import CheckpointError, TrainingDiverged
from ..batching import Batch, Batching
from .averaging import WeightAverage
from .checkpoint import load_checkpoint, save_checkpoint
from ..utils.memory import peak_memory_bytes, reset_peak
from ..utils.progress import format_seconds, remaining_seconds
from .metrics import Metric, loss_for
from .plots import plot_curves
from .rundir import RunDir
from .schedule import warmup_cosine

__all__ = ["Trainer", "TrainResult", "seed_everything", "epoch_seed"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
#: What a training checkpoint holds (see Trainer._state).
CHECKPOINT_KEYS = ("format", "epoch", "seed", "model", "optimizer", "scheduler", "best", "bad_evals", "history")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: distinct for every (seed, epoch), reproducible."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    """Seed torch's and DGL's generators (the only ones the project draws from)."""
    torch.manual_seed(seed)
    dgl.seed(seed)


def flush_denormals() -> bool:
    """Let the CPU flush denormal floats (below float32's 1.2e-38) to zero; False where unsupported.

    A gradient path that training turns down (an attention gate that settles near 1e-4, say)
    carries values below the normal range, and x86 arithmetic on them is 10-100x slower: a
    tolokers epoch went from 0.27 to 3.5 s as its gates settled (GPS with ``attn_gate``).
    Zero in their place changes nothing above that range. The setting is the process's: a
    training process calls this; :func:`flushing_denormals` restores the caller's afterwards.
    """
    return torch.set_flush_denormal(True)


def denormals_flushed() -> bool:
    """Whether float32 arithmetic here flushes results below the normal range to zero."""
    return bool((torch.full((8,), 1e-30) * 1e-9).eq(0).all())


@contextlib.contextmanager
def flushing_denormals():
    """:func:`flush_denormals` inside the block, the caller's setting after it (a library call
    must not change how the rest of the program rounds: ``sparsify`` keeps scores of 1e-320)."""
    was = denormals_flushed()
    flush_denormals()
    try:
        yield
    finally:
        torch.set_flush_denormal(was)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns (also written as summary.json)."""

    summary: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """Trains ``model`` on the nodes in ``splits['train']``, selects on ``splits['val']``.

    Parameters
    ----------
    model : nn.Module
        Called through the batches of ``batching``; returns logits.
    batching : Batching
        How the graph is cut into model calls.
    labels : Tensor
        ``(N,)`` class ids or ``(N, T)`` multi-label targets, indexed by global node id.
    splits : dict
        ``{"train": ids, "val": ids, "test": ids}`` global node ids (int64).
    metric : Metric
        Validation/test metric (larger is better).
    config : TrainSection
        The recipe's ``train`` section (epochs, lr, schedule, clipping, patience, ...).
    run_dir : RunDir or None
        Where checkpoints, metrics and the summary go; None writes nothing.
    seed : int
        Base seed; epoch ``e`` runs with ``epoch_seed(seed, e)``.
    """

    def __init__(self, model: nn.Module, batching: Batching, labels: torch.Tensor,
                 splits: dict[str, torch.Tensor], metric: Metric, config, run_dir: RunDir | None = None,
                 *, seed: int = 0, device: torch.device | str = "cpu", checkpoint_every: int = 1,
                 plot: bool = True, title: str = "", is_writer: bool = True, progress: bool = True):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.batching = batching
        self.labels = labels.to(self.device)
        self.splits = {k: v.to(self.device) for k, v in splits.items()}
        self.metric = metric
        self.config = config
        self.run_dir = run_dir
        self.seed = seed
        self.checkpoint_every = checkpoint_every
        self.plot = plot
        self.title = title
        self.is_writer = is_writer and run_dir is not None
        self.progress = progress
        self.loss_fn = loss_for(self.labels)
        # A model may split its parameters into groups (e.g. per-branch weight decay) by defining
        # param_groups(weight_decay) -> list of torch param-group dicts.
        groups = (self.model.param_groups(config.weight_decay) if hasattr(self.model, "param_groups")
                  else self.model.parameters())
        optim_cls = torch.optim.Adam if getattr(config, "optimizer", "adamw") == "adam" else torch.optim.AdamW
        self.optimizer = optim_cls(groups, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = warmup_cosine(self.optimizer, config.epochs, config.warmup_epochs,
                                       config.min_lr_ratio)
        self._epoch = 0  # the epoch being trained, for messages
        self._is_train = torch.zeros(len(self.labels), dtype=torch.bool, device=self.device)
        self._is_train[self.splits["train"]] = True
        self._eval_nodes = torch.unique(torch.cat([self.splits[k] for k in ("train", "val", "test")]))
        decay = getattr(config, "ema_decay", None)
        # Averaged on the plain module: a DDP wrapper shares its parameters, and is not copyable.
        self.average = None if decay is None else WeightAverage(self.plain_model, decay)

    @property
    def plain_model(self) -> nn.Module:
        """The model without a ``DistributedDataParallel`` wrapper (the same parameters)."""
        return self.model.module if isinstance(self.model, nn.parallel.DistributedDataParallel) else self.model

    # ---- the step seam -------------------------------------------------------------------
    def train_step(self, batch: Batch) -> tuple[float, int]:
        """One optimiser step on ``batch``; returns (summed loss, number of training nodes)."""
        logits = batch.run(self.model)
        keep = self._is_train[batch.output_nodes]
        count = int(keep.sum())
        if count == 0:  # a random node batch may hold no labelled node: nothing to learn from
            return 0.0, 0
        loss = self.loss_fn(logits[keep], self.labels[batch.output_nodes[keep]])
        self.optimise(loss)
        return float(loss.detach()) * count, count

    def optimise(self, loss: torch.Tensor) -> None:
        """Backward, a check that loss and gradients are finite, optional clipping, one optimiser
        step, and a check that the step left every parameter finite (else it is undone)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._check_finite(loss)
        if self.config.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad_norm)
        params = [p for p in self.model.parameters() if p.grad is not None]
        before = [p.detach().clone() for p in params]  # a huge learning rate can overflow a finite step
        try:
            self.optimizer.step()
        except RuntimeError as exc:
            if "overflow" not in str(exc):  # torch: a scalar (lr * ...) that does not fit the dtype
                raise
            self._restore_parameters(params, before)
            raise self._diverged(f"the optimiser step overflows the parameters' dtype ({exc})") from None
        broken = next((i for i, p in enumerate(params) if not all_finite(p.detach())), None)
        if broken is not None:
            self._restore_parameters(params, before)
            name = next(n for n, p in self.model.named_parameters() if p is params[broken])
            raise self._diverged(f"the optimiser step made {name} non-finite")
        if self.average is not None:
            self.average.update()

    @staticmethod
    @torch.no_grad()
    def _restore_parameters(params: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        for p, value in zip(params, values):
            p.copy_(value)

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Stop before a NaN or Inf reaches the parameters: a later evaluation would otherwise
        fail far from the cause, or every later epoch would silently train on NaN."""
        named = [(n, p.grad) for n, p in self.model.named_parameters() if p.grad is not None]
        norms = (torch.stack([torch.linalg.vector_norm(g) for _, g in named]) if named
                 else loss.new_zeros(1))
        if bool(torch.isfinite(loss)) and bool(torch.isfinite(norms).all()):
            return  # one device sync per step; train_step syncs for the loss value anyway
        if not bool(torch.isfinite(loss)):
            raise self._diverged(f"the training loss is {float(loss)}")
        i = int(torch.nonzero(~torch.isfinite(norms))[0])
        name, grad = named[i]
        if all_finite(grad):  # every entry finite, yet the norm overflows the dtype
            raise self._diverged(f"the gradient of {name} overflows (its norm exceeds the largest float)")
        raise self._diverged(f"the gradient of {name} is not finite")

    def _diverged(self, what: str) -> TrainingDiverged:
        return TrainingDiverged(
            f"training diverged in epoch {self._epoch}: {what}; the parameters are those before this "
            f"step. Lower train.lr, set train.clip_grad_norm, or change the model's settings")

    # ---- the evaluation seam -------------------------------------------------------------
    @torch.no_grad()
    def gather_logits(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits for (at least) ``nodes``: returns (node ids, logits) in matching order."""
        self.model.eval()
        ids, outs = [], []
        batches = self.batching.eval_batches(nodes)
        if self.progress:  # large graphs evaluate in many batches (None: bars only on a terminal)
            batches = tqdm(batches, leave=False, unit="batch", desc="evaluate", disable=None)
        for batch in batches:
            ids.append(batch.output_nodes)
            outs.append(batch.run(self.model))
        logits = torch.cat(outs)
        if not all_finite(logits):
            raise NonFiniteError("the logits contain NaN or Inf values")
        return torch.cat(ids), logits

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Metric on train/val/test and the validation loss."""
        ids, logits = self.gather_logits(self._eval_nodes)
        row = torch.full((len(self.labels),), -1, dtype=torch.long, device=self.device)
        row[ids] = torch.arange(len(ids), device=self.device)
        result = {}
        for split in ("train", "val", "test"):
            nodes = self.splits[split]
            if len(nodes) and bool((row[nodes] < 0).any()):
                raise RuntimeError(f"evaluation batches did not cover every {split} node")
            result[f"{split}_metric"] = self.metric(logits[row[nodes]], self.labels[nodes])
        val = self.splits["val"]
        result["val_loss"] = float(self.loss_fn(logits[row[val]], self.labels[val])) if len(val) else math.nan
        return result

    # ---- persistence ---------------------------------------------------------------------
    def _state(self, epoch: int, best: dict, bad_evals: int, history: list) -> dict:
        state = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "seed": self.seed,
                 "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "best": best, "bad_evals": bad_evals,
                 "history": history}
        if self.average is not None:
            state["weight_average"] = self.average.state_dict()
        return state

    def _restore(self) -> tuple[int, dict, int, list]:
        state = load_checkpoint(self.run_dir.checkpoint, map_location=self.device, required=CHECKPOINT_KEYS)
        if state["seed"] != self.seed:
            raise CheckpointError(f"checkpoint was written with seed {state['seed']}, this run has {self.seed}")
        if self.average is not None and "weight_average" not in state:
            raise CheckpointError(f"{self.run_dir.checkpoint} holds no weight average: it was written without "
                                  f"train.ema_decay, so this run cannot resume from it with ema_decay "
                                  f"{self.average.decay}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.average is not None:
            self.average.load_state_dict(state["weight_average"])
        logger.info("resumed from %s after epoch %d", self.run_dir.checkpoint, state["epoch"])
        return state["epoch"] + 1, state["best"], state["bad_evals"], state["history"]

    # ---- the loop ------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.config
        start, best, bad_evals, history = 0, {"epoch": -1, "val_metric": -math.inf, "val_loss": math.inf}, 0, []
        if resume:
            start, best, bad_evals, history = self._restore()
        reset_peak(self.device)
        train_nodes = self.splits["train"]
        stopped_early = bool(history) and cfg.patience is not None and bad_evals >= cfg.patience
        spent: list[float] = []  # seconds of every epoch of this process, for the time estimate
        bar = tqdm(range(start, cfg.epochs), desc=self.title or "train", unit="epoch",
                   disable=None if self.progress else True, initial=start, total=cfg.epochs, dynamic_ncols=True)
        for epoch in bar:
            if stopped_early:
                break
            self._epoch = epoch
            seed_everything(epoch_seed(self.seed, epoch))
            if hasattr(self.model, "on_epoch_start"):
                self.model.on_epoch_start(epoch)
            self.model.train()
            lr = self.optimizer.param_groups[0]["lr"]
            t0 = time.perf_counter()
            loss_sum, count = 0.0, 0
            batches = self.batching.train_batches(train_nodes, epoch)
            n_batches = self.batching.num_train_batches(train_nodes)
            if n_batches and n_batches > 1 and self.progress:
                batches = tqdm(batches, total=n_batches, leave=False, unit="batch", desc=f"epoch {epoch}",
                               disable=None)  # None: bars only on a terminal, log lines elsewhere
            try:
                for batch in batches:
                    s, c = self.train_step(batch)
                    loss_sum, count = loss_sum + s, count + c
            except NonFiniteError as exc:  # the inputs were checked when loaded: the weights overflowed
                raise self._diverged(f"the model's activations are not finite ({exc})") from None
            self.scheduler.step()
            row = {"epoch": epoch, "lr": lr, "train_loss": loss_sum / max(count, 1),
                   "epoch_seconds": time.perf_counter() - t0,
                   "train_metric": math.nan, "val_metric": math.nan, "test_metric": math.nan,
                   "val_loss": math.nan, "eval_seconds": math.nan}
            last = epoch == cfg.epochs - 1
            if epoch % cfg.eval_every == 0 or last:
                with self._evaluated_weights():
                    improved = self._evaluate_epoch(epoch, row, best)
                if improved:
                    best = {"epoch": epoch, **{k: row[k] for k in ("train_metric", "val_metric", "test_metric",
                                                                   "val_loss")}}
                bad_evals = 0 if improved else bad_evals + 1
                stopped_early = cfg.patience is not None and bad_evals >= cfg.patience
            history.append(row)
            spent.append(time.perf_counter() - t0)  # training and evaluation
            left = "" if last or stopped_early else \
                f", about {format_seconds(remaining_seconds(spent, cfg.epochs - epoch - 1))} left at most"
            # Epochs between evaluations have no metrics: log none rather than NaN.
            evaluated = not math.isnan(row["eval_seconds"])
            metrics = "" if not evaluated else "  train {:.4f}  val {:.4f}  test {:.4f}".format(
                row["train_metric"], row["val_metric"], row["test_metric"])
            logger.info("epoch %4d  loss %.4f%s  lr %.2e  %.2fs%s",
                        epoch, row["train_loss"], metrics, lr, row["epoch_seconds"], left)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", best=f"{best['val_metric']:.3f}",
                            **({"val": f"{row['val_metric']:.3f}"} if evaluated else {}))
            if self.is_writer:
                self.run_dir.write_metrics(history)
                if (epoch + 1) % self.checkpoint_every == 0 or last or stopped_early:
                    save_checkpoint(self._state(epoch, best, bad_evals, history), self.run_dir.checkpoint)
        bar.close()
        if stopped_early:
            logger.info("early stop: no better %s for %d evaluations", self._selected_on, cfg.patience)
        summary = self._summary(best, history, stopped_early)
        if self.is_writer:
            self.run_dir.write_summary(summary)
            if self.plot and history:
                plot_curves(history, self.run_dir.curves, title=self.title, metric=self.metric.name)
        return TrainResult(summary, history)

    def _evaluated_weights(self) -> contextlib.AbstractContextManager:
        """The weights evaluated and saved as the best: the weight average where the recipe keeps
        one (``train.ema_decay``), else the model's own."""
        return self.average.applied() if self.average is not None else contextlib.nullcontext()

    def _evaluate_epoch(self, epoch: int, row: dict, best: dict) -> bool:
        """Fill ``row`` with this epoch's metrics; if they beat ``best``, write ``best.pt`` and
        return True."""
        t1 = time.perf_counter()
        try:
            row.update(self.evaluate())
        except NonFiniteError as exc:
            raise self._diverged(f"the model's activations are not finite in evaluation ({exc})") from None
        row["eval_seconds"] = time.perf_counter() - t1
        if not self._better(row, best):
            return False
        if self.is_writer:
            save_checkpoint({"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": self.model.state_dict()},
                            self.run_dir.best)
        return True

    @property
    def _selected_on(self) -> str:
        """What picks the best epoch, in words: ``validation accuracy``, ``validation loss``, ..."""
        return f"validation {self.metric.name if self.config.select_by == 'metric' else 'loss'}"

    def _better(self, row: dict, best: dict) -> bool:
        """Whether this evaluation beats the best so far by the recipe's ``select_by``."""
        if self.config.select_by == "loss":
            return row["val_loss"] < best.get("val_loss", math.inf)  # checkpoints before select_by lack it
        return row["val_metric"] > best["val_metric"]

    def _summary(self, best: dict, history: list, stopped_early: bool) -> dict[str, Any]:
        times = [r["epoch_seconds"] for r in history]
        evals = [r["eval_seconds"] for r in history if not math.isnan(r["eval_seconds"])]
        return {
            "metric": self.metric.name,
            "best_epoch": best["epoch"],
            "train_metric": best.get("train_metric", math.nan),
            "val_metric": best["val_metric"] if best["epoch"] >= 0 else math.nan,
            "test_metric": best.get("test_metric", math.nan),
            "val_loss": best.get("val_loss", math.nan),
            "selected_by": self._selected_on,
            "epochs_run": len(history),
            "stopped_early": stopped_early,
            "median_epoch_seconds": statistics.median(times) if times else math.nan,
            "median_eval_seconds": statistics.median(evals) if evals else math.nan,
            "peak_memory_mb": peak_memory_bytes(self.device) / 2**20,
            # glibc's allocator settings move the peak by a GB at scale (docs/scaling.md)
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "device": str(self.device),
            "threads": torch.get_num_threads(),
        }
