"""From a validated recipe to a finished run: dataset -> transforms -> model -> trainer -> run dir."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, RecipeError
from ..config import recipe_to_yaml
from ..utils.logs import log_to_file
from .builders import build_batching, build_estimator, build_model, is_two_stage, prepare_dataset, resolve_device
from .checkpoint import load_checkpoint
from .loop import Trainer, TrainResult, seed_everything
from .metrics import get_metric
from .rundir import RunDir, latest_run_dir, new_run_dir
from .two_stage import run_two_stage

__all__ = ["run_recipe", "open_run_dir", "splits_of", "summary_line"]

logger = logging.getLogger(__name__)


def open_run_dir(recipe, run_dir: str | Path | None, resume: bool) -> RunDir:
    """The run directory: a new one, the one given, or (resume) the newest of this recipe."""
    text = recipe_to_yaml(recipe)
    if resume:
        rd = RunDir(run_dir) if run_dir else latest_run_dir(recipe.output.root, recipe.name)
        if not rd.resumable():
            raise CheckpointError(f"--resume: no checkpoint.pt in {rd.path}")
        if rd.recipe.is_file() and rd.recipe.read_text() != text:
            raise CheckpointError(f"--resume: {rd.recipe} differs from this recipe; resume with the "
                                  f"same recipe and --set options, or start a new run")
        for ckpt in (rd.checkpoint, rd.path / "stage1" / "checkpoint.pt"):
            if ckpt.is_file():
                load_checkpoint(ckpt)  # fail now, before any work, if it is unreadable
        return rd
    if run_dir is not None:
        rd = RunDir(run_dir)
        if rd.path.exists() and any(rd.path.iterdir()):
            raise CheckpointError(f"--run-dir {rd.path} is not empty; pick a new folder or add --resume")
        rd.create()
    else:
        rd = new_run_dir(recipe.output.root, recipe.name)
    rd.write_recipe(text)
    return rd


def splits_of(graph) -> dict[str, torch.Tensor]:
    return {s: torch.nonzero(graph.ndata[f"{s}_mask"], as_tuple=True)[0] for s in ("train", "val", "test")}


def run_recipe(recipe, run_dir: str | Path | None = None, resume: bool = False,
               progress: bool = True) -> TrainResult:
    """Train the recipe's model; returns the result also written to ``run_dir``."""
    device = resolve_device(recipe.train.device)
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    # Everything that can fail on user input happens before the run directory exists.
    seed_everything(recipe.seed)
    dataset, graph = prepare_dataset(recipe)
    seed_everything(recipe.seed)  # the model's initial weights do not depend on the data pipeline
    model = build_model(recipe, graph.ndata["feat"].shape[1], dataset.num_classes)
    two_stage = is_two_stage(recipe)
    if two_stage:
        estimator = build_estimator(recipe, graph.ndata["feat"].shape[1], dataset.num_classes)
    else:
        batching = build_batching(recipe, graph, device)
    rd = open_run_dir(recipe, run_dir, resume)
    log_to_file(rd.log)
    logger.info("run directory %s", rd.path)
    logger.info("resolved recipe:\n%s", recipe_to_yaml(recipe).rstrip())
    logger.info("dataset %s: %d nodes, %d edges, %d features, %d classes, metric %s", dataset.name,
                graph.num_nodes(), graph.num_edges(), graph.ndata["feat"].shape[1], dataset.num_classes,
                dataset.metric)
    if two_stage:
        result = run_two_stage(recipe, dataset, graph, model, estimator, device, rd,
                               get_metric(dataset.metric), splits_of(graph), resume, progress)
    else:
        trainer = Trainer(model, batching, graph.ndata["label"], splits_of(graph),
                          get_metric(dataset.metric), recipe.train, rd, seed=recipe.seed, device=device,
                          checkpoint_every=recipe.output.checkpoint_every, plot=recipe.output.plot,
                          title=recipe.name, progress=progress)
        result = trainer.fit(resume=resume)
    result.summary.update(recipe=recipe.name, dataset=dataset.name, run_dir=str(rd.path))
    rd.write_summary(result.summary)
    return result



def summary_line(summary: dict[str, Any]) -> str:
    return (f"{summary['recipe']}: test {summary['metric']} {summary['test_metric']:.4f} "
            f"(val {summary['val_metric']:.4f}, best epoch {summary['best_epoch']}), "
            f"{summary['median_epoch_seconds']:.3f} s/epoch (median), "
            f"peak memory {summary['peak_memory_mb']:.0f} MB, run dir {summary['run_dir']}")
