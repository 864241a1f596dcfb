"""Spexphormer's two stages as one run, on the one training loop.

Stage 1 trains the narrow :class:`~dgl_rbgt.models.spexphormer.ScoreEstimator` full-graph, or on
sampled neighbourhoods with ``stage1.train.batching: neighbor`` (its run directory is
``<run>/stage1``), restores its best-validation weights and writes per-layer attention scores
``(L, E)`` to ``<run>/scores.pt`` (read layer by layer in bounded memory when mini-batched). Stage 2 samples fixed-degree neighbour tables
from those scores (:class:`~dgl_rbgt.batching.TableBatching`) and trains the wide
:class:`~dgl_rbgt.models.spexphormer.Spexphormer` on mini-batches in ``<run>``.

A recipe's ``stage1.scores`` may point at an earlier run's ``scores.pt`` to skip stage 1; a resumed
run skips whatever stage already finished.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..batching import FullGraph, NeighborSampling
from ..errors import RecipeError
from ..models.spexphormer import INFERENCE_ROWS
from ..utils.progress import Stages
from .builders import build_batching
from .checkpoint import load_checkpoint, save_checkpoint
from .loop import Trainer, TrainResult
from .metrics import Metric
from .rundir import RunDir

__all__ = ["run_two_stage", "stage1_scores", "load_scores"]

logger = logging.getLogger(__name__)


def load_scores(path: str | Path, num_layers: int, num_edges: int) -> torch.Tensor:
    """Read a ``scores.pt`` written by stage 1 and check it fits this graph and model."""
    state = load_checkpoint(path)
    scores = state.get("scores")
    if not isinstance(scores, torch.Tensor) or scores.shape != (num_layers, num_edges):
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise RecipeError(f"stage1.scores: {path} holds scores of shape {got}, this recipe needs "
                          f"({num_layers}, {num_edges}) (model layers x edges of the transformed graph)")
    return scores


def stage1_view(graph):
    """The graph as stage 1 sees it: the same edges and node data, in a graph object of its own,
    so that the sparse formats stage 1 makes DGL build (the CSC of neighbour sampling and of the
    layer-wise scores, 16 bytes per edge: 2.9 GB at 10M nodes and 170M edges) go when stage 1
    is done instead of staying on the graph through stage 2."""
    return graph.formats(["coo", "csr", "csc"])


def stage1_batching(recipe, graph, device: torch.device):
    """Stage 1 trains full-graph (``stage1.train.batching: full``, the paper's way) or on DGL's
    sampled neighbourhoods (``neighbor``, with ``stage1.train.fanouts``) for graphs whose
    full-graph step does not fit; the latter evaluates, and reads the scores, layer by layer."""
    t = recipe.stage1.train
    if t.batching == "full":
        return FullGraph(graph, device)
    return NeighborSampling(graph, device, fanouts=t.fanouts, batch_size=t.batch_size,
                            eval_batch_size=t.eval_batch_size, eval_layerwise=True)


def stage1_scores(recipe, graph, estimator: torch.nn.Module, device: torch.device, rd: RunDir, metric: Metric,
                  splits: dict, resume: bool, progress: bool) -> tuple[torch.Tensor, dict | None]:
    """Per-layer attention scores ``(L, E)`` of the recipe's stage 1, and stage 1's summary.

    From ``stage1.scores`` when the recipe names a file; else from ``rd/scores.pt`` when resuming
    and it exists; else by training ``estimator`` in ``rd/stage1`` and writing ``rd/scores.pt``
    (the summary is None when stage 1 did not run here).
    """
    labels = graph.ndata["label"]
    num_layers = recipe.model.layers
    scores_path = rd.path / "scores.pt"
    if recipe.stage1.scores:
        logger.info("stage 1 skipped: scores from %s", recipe.stage1.scores)
        return load_scores(recipe.stage1.scores, num_layers, graph.num_edges()), None
    if resume and scores_path.is_file():
        logger.info("stage 1 already finished: scores from %s", scores_path)
        return load_scores(scores_path, num_layers, graph.num_edges()), None
    stage1_dir = RunDir(rd.path / "stage1").create()
    g = stage1_view(graph).to(device)
    trainer = Trainer(estimator, stage1_batching(recipe, g, device), labels, splits, metric, recipe.stage1.train,
                      stage1_dir, seed=recipe.seed, device=device, plot=recipe.output.plot,
                      title=f"{recipe.name} stage 1", progress=progress)
    summary = trainer.fit(resume=resume and stage1_dir.checkpoint.is_file()).summary
    del trainer
    estimator.load_state_dict(load_checkpoint(stage1_dir.best, map_location=device)["model"])
    with Stages("stage 1", ["scores"], progress) as stages, stages.stage("scores"):  # a minute at 10M nodes
        rows = None if recipe.stage1.train.batching == "full" else INFERENCE_ROWS  # bounded memory
        scores = estimator.attention_scores(g, g.ndata["feat"], rows=rows).cpu()
    if hasattr(estimator, "clear_cache"):
        estimator.clear_cache()  # stage 2 does not need stage 1's sparse layout of the graph
    save_checkpoint({"format": 1, "scores": scores}, scores_path)
    logger.info("stage 1: val %s %.4f at epoch %d; scores (%d x %d) written to %s", metric.name,
                summary["val_metric"], summary["best_epoch"], *scores.shape, scores_path)
    return scores, summary


def run_two_stage(recipe, dataset, graph, model: torch.nn.Module, estimator: torch.nn.Module,
                  device: torch.device, rd: RunDir, metric: Metric, splits: dict, resume: bool,
                  progress: bool) -> TrainResult:
    """Stage 1 (unless its scores exist), then stage 2; ``model`` is the wide network."""
    labels = graph.ndata["label"]
    scores, stage1_summary = stage1_scores(recipe, graph, estimator, device, rd, metric, splits, resume, progress)

    t = recipe.train
    with Stages("stage 2", ["sampler and tables"], progress) as stages, stages.stage("sampler and tables"):
        batching = build_batching(recipe, graph, device, scores=scores)
    del scores  # the sampler keeps them in its own (destination) order: 4 bytes per edge and layer saved
    trainer = Trainer(model, batching, labels, splits, metric, t, rd, seed=recipe.seed, device=device,
                      checkpoint_every=recipe.output.checkpoint_every, plot=recipe.output.plot,
                      title=f"{recipe.name} stage 2", progress=progress)
    result = trainer.fit(resume=resume and rd.checkpoint.is_file())
    if stage1_summary is None and (rd.path / "stage1" / "summary.json").is_file():
        import json

        stage1_summary = json.loads((rd.path / "stage1" / "summary.json").read_text())
    if stage1_summary is not None:
        result.summary["stage1"] = stage1_summary
    return result
