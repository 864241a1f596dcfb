"""From a validated recipe to a finished run: dataset -> transforms -> model -> trainer -> run dir."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from ..config import recipe_to_yaml
from ..config.yamlio import read_yaml
from ..errors import CheckpointError
from ..utils.logs import log_to_file
from .builders import build_batching, build_estimator, build_model, is_two_stage, prepare_dataset, resolve_device
from .checkpoint import load_checkpoint
from .loop import CHECKPOINT_KEYS, Trainer, TrainResult, flushing_denormals, seed_everything
from .metrics import get_metric
from .rundir import RunDir, latest_run_dir, new_run_dir
from .two_stage import run_two_stage

__all__ = ["run_recipe", "check_new_run_dir", "open_run_dir", "splits_of", "summary_line"]

logger = logging.getLogger(__name__)


#: What a run writes before its first checkpoint: a folder holding nothing else may be reused.
STARTED_ONLY = frozenset({"recipe.yaml", "train.log", "error.txt"})
#: Recipe keys a resumed run may change: they extend a run without making it inconsistent (the
#: cosine schedule stretches to the new number of epochs from the resumed epoch on).
RESUMABLE_CHANGES = frozenset({"train.epochs", "train.patience"})


def check_new_run_dir(run_dir: str | Path) -> RunDir:
    """``run_dir`` as a new run's directory: absent, empty, or holding only a run stopped before
    its first checkpoint; CheckpointError naming it otherwise."""
    rd = RunDir(run_dir)
    if rd.path.exists() and not rd.path.is_dir():
        raise CheckpointError(f"--run-dir {rd.path} is not a folder; give a new or empty folder")
    if rd.path.exists() and not _only_started(rd):
        raise CheckpointError(f"--run-dir {rd.path} is not empty; pick a new folder or add --resume")
    return rd


def open_run_dir(recipe, run_dir: str | Path | None, resume: bool) -> tuple[RunDir, bool]:
    """The run directory and whether training resumes from a checkpoint in it.

    A new folder, the one given, or (``resume``) the newest of this recipe. A run stopped before
    its first checkpoint (its folder holds only :data:`STARTED_ONLY` files) starts again from
    epoch 0 in its folder, with or without ``--resume``.
    """
    text = recipe_to_yaml(recipe)
    if resume:
        rd = RunDir(run_dir) if run_dir else latest_run_dir(recipe.output.root, recipe.name)
        if rd.recipe.is_file():
            _check_resumable(rd, recipe)
        if not rd.resumable():
            if not rd.recipe.is_file() or not _only_started(rd):
                raise CheckpointError(f"--resume: no checkpoint.pt in {rd.path}")
            logger.info("--resume: %s stopped before its first checkpoint; starting it from epoch 0", rd.path)
            rd.write_recipe(text)
            return rd, False
        for ckpt in (rd.checkpoint, rd.path / "stage1" / "checkpoint.pt"):
            if ckpt.is_file():
                load_checkpoint(ckpt, required=CHECKPOINT_KEYS)  # fail now, before any work
        rd.write_recipe(text)  # a resumed run may have more epochs or patience: say so
        return rd, True
    if run_dir is not None:
        rd = check_new_run_dir(run_dir)
        rd.create()
    else:
        rd = new_run_dir(recipe.output.root, recipe.name)
    rd.write_recipe(text)
    return rd, False


def _only_started(rd: RunDir) -> bool:
    """Whether the folder holds nothing but what a run writes before its first checkpoint."""
    return {p.name for p in rd.path.iterdir()} <= STARTED_ONLY


def _check_resumable(rd: RunDir, recipe) -> None:
    """Refuse a resume whose recipe differs from the run's in anything but RESUMABLE_CHANGES."""
    old = read_yaml(rd.recipe.read_text())
    changed = [key for key in _differences(old, recipe.model_dump(mode="json")) if key not in RESUMABLE_CHANGES]
    if changed:
        raise CheckpointError(f"--resume: {rd.recipe} differs from this recipe in {', '.join(changed)}; a resumed "
                              f"run may change only {', '.join(sorted(RESUMABLE_CHANGES))}: start a new run "
                              f"for other changes")


def _differences(old, new, prefix: str = "") -> list[str]:
    """Key paths whose values differ between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [k for key in keys for k in _differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


def splits_of(graph) -> dict[str, torch.Tensor]:
    return {s: torch.nonzero(graph.ndata[f"{s}_mask"], as_tuple=True)[0] for s in ("train", "val", "test")}


def run_recipe(recipe, run_dir: str | Path | None = None, resume: bool = False,
               progress: bool = True) -> TrainResult:
    """Train the recipe's model; returns the result also written to ``run_dir``.

    Denormal floats are flushed to zero during the run (:func:`~dgl_rbgt.train.loop.flush_denormals`),
    and the caller's setting is restored after it."""
    with flushing_denormals():
        return _run_recipe(recipe, run_dir, resume, progress)


def _run_recipe(recipe, run_dir: str | Path | None, resume: bool, progress: bool) -> TrainResult:
    device = resolve_device(recipe.train.device)
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    # Everything that can fail on user input happens before the run directory exists, and the
    # cheap checks before the data is loaded (which takes minutes on large graphs).
    if run_dir is not None and not resume:
        check_new_run_dir(run_dir)
    seed_everything(recipe.seed)
    dataset, graph = prepare_dataset(recipe, progress=progress)
    seed_everything(recipe.seed)  # the model's initial weights do not depend on the data pipeline
    model = build_model(recipe, graph.ndata["feat"].shape[1], dataset.num_classes)
    two_stage = is_two_stage(recipe)
    if two_stage:
        estimator = build_estimator(recipe, graph.ndata["feat"].shape[1], dataset.num_classes)
    else:
        batching = build_batching(recipe, graph, device)
        if batching.graph is not graph:  # kept in another sparse format: hold one copy of the edges
            graph = batching.graph
            dataset = dataclasses.replace(dataset, graph=graph)
    rd, resume = open_run_dir(recipe, run_dir, resume)
    rd.error.unlink(missing_ok=True)  # an earlier attempt's reason stays in train.log
    log_to_file(rd.log)
    logger.info("run directory %s (resolved recipe: %s)", rd.path, rd.recipe.name)
    logger.info("dataset %s: %d nodes, %d edges, %d features, %d classes, metric %s", dataset.name,
                graph.num_nodes(), graph.num_edges(), graph.ndata["feat"].shape[1], dataset.num_classes,
                dataset.metric)
    try:
        result = _train(recipe, dataset, graph, model, estimator if two_stage else None,
                        None if two_stage else batching, device, rd, resume, progress)
    except BaseException as exc:
        rd.record_failure(exc)
        raise
    result.summary.update(recipe=recipe.name, dataset=dataset.name, run_dir=str(rd.path))
    rd.write_summary(result.summary)
    return result


def _train(recipe, dataset, graph, model, estimator, batching, device, rd: RunDir, resume: bool,
           progress: bool) -> TrainResult:
    if estimator is not None:
        return run_two_stage(recipe, dataset, graph, model, estimator, device, rd,
                             get_metric(dataset.metric), splits_of(graph), resume, progress)
    trainer = Trainer(model, batching, graph.ndata["label"], splits_of(graph),
                      get_metric(dataset.metric), recipe.train, rd, seed=recipe.seed, device=device,
                      checkpoint_every=recipe.output.checkpoint_every, plot=recipe.output.plot,
                      title=recipe.name, progress=progress)
    return trainer.fit(resume=resume)


def summary_line(summary: dict[str, Any]) -> str:
    return (f"{summary['recipe']}: test {summary['metric']} {summary['test_metric']:.4f} "
            f"(val {summary['val_metric']:.4f}, best epoch {summary['best_epoch']}), "
            f"{summary['median_epoch_seconds']:.3f} s/epoch (median), "
            f"peak memory {summary['peak_memory_mb']:.0f} MB, run dir {summary['run_dir']}")
