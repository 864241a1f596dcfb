"""From a validated recipe to the objects a run needs: device, dataset + transforms, model(s),
batching. Shared by the single-machine pipeline and the distributed trainer; every name comes from
:mod:`dgl_rbgt.config.registry`, and a constructor's complaint becomes a :class:`RecipeError`
naming the recipe section.
"""
from __future__ import annotations

import torch

from ..batching import Batching
from ..config.registry import BATCHINGS, MODELS, TRANSFORMS
from ..errors import RecipeError

__all__ = ["resolve_device", "prepare_dataset", "build_model", "build_estimator", "build_batching", "is_two_stage"]


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


def prepare_dataset(recipe, progress: bool = False):
    """Load the recipe's dataset and apply its transforms in order (a bar over the stages with
    ``progress``; each stage's time in the log either way).

    Returns ``(dataset, graph)`` with ``dataset.graph is graph``, the transformed graph: the loaded
    graph is not kept beside it (at 10M nodes it is 1.6 GB that no later stage reads)."""
    import dataclasses

    from ..data import NodeDataset, load_dataset
    from ..utils.progress import Stages

    ds = recipe.dataset
    seed = recipe.seed if ds.seed is None else ds.seed
    with Stages(f"prepare {ds.name}", [f"load {ds.name}", *(t.name for t in recipe.transforms)], progress) as stages:
        with stages.stage(f"load {ds.name}"):
            try:
                dataset = load_dataset(ds.name, root=ds.root, split=ds.split, seed=seed, **ds.params)
            except (ValueError, TypeError) as exc:
                raise RecipeError(f"dataset: {exc}") from None
        graph = dataset.graph
        about = {f.name: getattr(dataset, f.name) for f in dataclasses.fields(dataset) if f.name != "graph"}
        del dataset  # from here ``graph`` holds the only reference: a transform's input can be freed
        for i, spec in enumerate(recipe.transforms):
            params = spec.model_dump(exclude={"name"})
            try:
                transform = TRANSFORMS[spec.name](**params)
            except (ValueError, TypeError) as exc:
                raise RecipeError(f"transforms.{i} ({spec.name}): {exc}") from None
            with stages.stage(spec.name):
                graph = transform(graph)
    return NodeDataset(graph=graph, **about), graph


def build_model(recipe, in_feats: int, num_classes: int) -> torch.nn.Module:
    params = recipe.model.model_dump(exclude={"name"})
    try:
        return MODELS[recipe.model.name](in_feats, num_classes, **params)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"model ({recipe.model.name}): {exc}") from None


def build_batching(recipe, graph, device: torch.device, **inputs) -> Batching:
    """The recipe's ``train.batching`` over ``graph``; ``inputs`` are what an earlier stage computed
    (Spexphormer's scores)."""
    try:
        return BATCHINGS[recipe.train.batching].from_recipe(recipe, graph, device, **inputs)
    except (ValueError, TypeError) as exc:
        section = BATCHINGS[recipe.train.batching].section or "train"
        raise RecipeError(f"{section}: {exc}") from None


def build_estimator(recipe, in_feats: int, num_classes: int) -> torch.nn.Module:
    """The stage-1 model of a two-stage recipe (its errors reported as recipe errors)."""
    try:
        return MODELS[recipe.model.name].estimator(in_feats, num_classes, **recipe.stage1.model.model_dump())
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"stage1.model: {exc}") from None


def is_two_stage(recipe) -> bool:
    """Whether the recipe's model trains after a first-stage estimator (Spexphormer)."""
    return getattr(MODELS[recipe.model.name], "estimator", None) is not None
