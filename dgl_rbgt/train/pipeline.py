"""From a validated recipe to a finished run: dataset -> transforms -> model -> trainer -> run dir."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, RecipeError
from ..recipes import recipe_to_yaml
from .batching import BATCHINGS, Batching
from .checkpoint import load_checkpoint
from .loop import Trainer, TrainResult, seed_everything
from .metrics import get_metric
from .rundir import RunDir, latest_run_dir, new_run_dir
from .two_stage import build_estimator, run_two_stage

__all__ = ["run_recipe", "resolve_device", "prepare_dataset", "build_model", "build_batching", "open_run_dir"]

logger = logging.getLogger(__name__)


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` picks CUDA when available; an explicit CUDA device must exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise RecipeError(f"train.device: not a device name (got {spec!r}); use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"train.device: {spec!r} requested but CUDA is not available here; use cpu or auto")
    return device


def prepare_dataset(recipe):
    """Load the recipe's dataset and apply its transforms in order."""
    from ..data import load_dataset
    from ..transforms import TRANSFORMS

    ds = recipe.dataset
    seed = recipe.seed if ds.seed is None else ds.seed
    try:
        dataset = load_dataset(ds.name, root=ds.root, split=ds.split, seed=seed, **ds.params)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"dataset: {exc}") from None
    graph = dataset.graph
    for i, spec in enumerate(recipe.transforms):
        params = spec.model_dump(exclude={"name"})
        try:
            transform = TRANSFORMS[spec.name](**params)
        except (ValueError, TypeError) as exc:
            raise RecipeError(f"transforms.{i} ({spec.name}): {exc}") from None
        graph = transform(graph)
    return dataset, graph


def build_model(recipe, in_feats: int, num_classes: int) -> torch.nn.Module:
    from ..models import MODELS

    params = recipe.model.model_dump(exclude={"name"})
    try:
        return MODELS[recipe.model.name](in_feats, num_classes, **params)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"model ({recipe.model.name}): {exc}") from None


def build_batching(recipe, graph, device: torch.device) -> Batching:
    t = recipe.train
    kind = t.batching
    if kind == "full":
        return BATCHINGS[kind](graph, device)
    if kind == "neighbor":
        return BATCHINGS[kind](graph, device, fanouts=t.fanouts, batch_size=t.batch_size,
                               eval_batch_size=t.eval_batch_size)
    if kind == "node_batch":
        return BATCHINGS[kind](graph, device, batch_size=t.batch_size, eval_batch_size=t.eval_batch_size)
    raise RecipeError(f"train.batching: {kind!r} is set up by its model's pipeline, not by a plain run")


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
    two_stage = recipe.train.batching == "neighbour_tables"
    if two_stage:
        estimator = build_estimator(recipe, graph.ndata["feat"].shape[1], dataset.num_classes)
    else:
        batching = build_batching(recipe, graph, device)
    rd = open_run_dir(recipe, run_dir, resume)
    _log_to(rd)
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


def _log_to(rd: RunDir) -> None:
    """Add (once per run directory) a file handler writing the package log to train.log."""
    root = logging.getLogger("dgl_rbgt")
    for h in list(root.handlers):
        if getattr(h, "_dgl_rbgt_run", False):
            root.removeHandler(h)
            h.close()
    handler = logging.FileHandler(rd.log)
    handler._dgl_rbgt_run = True
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def summary_line(summary: dict[str, Any]) -> str:
    return (f"{summary['recipe']}: test {summary['metric']} {summary['test_metric']:.4f} "
            f"(val {summary['val_metric']:.4f}, best epoch {summary['best_epoch']}), "
            f"{summary['median_epoch_seconds']:.3f} s/epoch (median), "
            f"peak memory {summary['peak_memory_mb']:.0f} MB, run dir {summary['run_dir']}")
