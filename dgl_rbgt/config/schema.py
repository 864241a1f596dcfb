"""Recipes: YAML files that say dataset, transforms, model, training and output.

A recipe is parsed with a ``yaml.SafeLoader`` (:mod:`.yamlio`), overridden from the command line
(``--set train.lr=0.001`` beats the file), and validated before any work starts: unknown keys,
wrong types and out-of-range values are all reported at once with their key paths.

The ``model`` and ``transforms`` sections are generated from the constructors of the classes in
:mod:`dgl_rbgt.config.registry`, so each default lives only in the signature it configures.

Example
-------
>>> from dgl_rbgt.config import parse_recipe
>>> r = parse_recipe({"name": "demo", "dataset": {"name": "cora"}, "model": {"name": "gcn"}},
...                  overrides=["train.epochs=5"])
>>> r.train.epochs, r.model.hidden
(5, 64)
"""
from __future__ import annotations

import inspect
import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

from ..errors import RecipeError
from .messages import format_errors
from .overrides import apply_overrides
from .yamlio import read_yaml
from .sections import MAX_SEED, STRICT, DatasetSection, OutputSection, Stage1Base, TrainSection

__all__ = ["Recipe", "load_recipe", "parse_recipe", "recipe_to_yaml", "load_distributed_recipe",
           "check_recipe_for_distributed"]


def _schema_from_signature(kind: str, name: str, cls: type, skip: tuple[str, ...],
                           tagged: bool = True) -> type[BaseModel]:
    """A pydantic model whose fields are ``cls.__init__``'s keyword arguments (minus ``skip``),
    with their annotated types and defaults, plus ``name: Literal[name]`` as the tag."""
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    fields: dict[str, Any] = {"name": (Literal[name], ...)} if tagged else {}
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.name == "self" or param.name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.name not in hints:
            raise TypeError(f"{cls.__name__}.__init__ argument {param.name!r} needs a type annotation "
                            f"to be configurable from recipes")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints[param.name], default)
    return create_model(f"{kind}_{name}", __config__=STRICT, __doc__=cls.__doc__, **fields)


def _tagged_union(kind: str, registry: dict[str, type], skip: tuple[str, ...]):
    schemas = [_schema_from_signature(kind, n, c, skip) for n, c in registry.items()]
    if len(schemas) == 1:
        return schemas[0]
    return Annotated[Union[tuple(schemas)], Field(discriminator="name")]


def _build_recipe_model() -> type[BaseModel]:
    from .distributed import DistributedSection
    from .registry import BATCHINGS, MODELS, TRANSFORMS

    train = create_model("TrainSection", __base__=TrainSection, batching=(Literal[tuple(BATCHINGS)], "full"))
    fields: dict[str, Any] = {
        "name": (str, Field(..., pattern=r"^[A-Za-z0-9_.-]+$")),
        "seed": (int, Field(0, ge=0, le=MAX_SEED)),
        "dataset": (DatasetSection, ...),
        "transforms": (list[_tagged_union("transform", TRANSFORMS, skip=())], Field(default_factory=list)),
        "model": (_tagged_union("model", MODELS, skip=("in_feats", "num_classes")), ...),
        "train": (train, Field(default_factory=train)),
        "output": (OutputSection, Field(default_factory=OutputSection)),
    }
    # Sections of the batchings that have their own (Spexphormer's neighbour_tables) ...
    for cls in BATCHINGS.values():
        if cls.section:
            schema = _schema_from_signature(cls.section, "", cls, skip=cls.section_skip, tagged=False)
            fields[cls.section] = (Optional[schema], None)
    # ... and the first stage of two-stage models (Spexphormer's score estimator).
    estimators = {getattr(m, "estimator") for m in MODELS.values() if getattr(m, "estimator", None)}
    if estimators:
        (estimator_cls,) = estimators  # one stage-1 schema; a second kind would need a tagged union
        estimator = _schema_from_signature("stage1", "model", estimator_cls, skip=("in_feats", "num_classes"),
                                           tagged=False)
        stage1 = create_model("Stage1Section", __base__=Stage1Base,
                              model=(estimator, Field(default_factory=estimator)))
        fields["stage1"] = (Optional[stage1], None)
    # DistDGL layout, used by `dgl-rbgt partition` / `dgl-rbgt launch` (ignored by `train`):
    fields["distributed"] = (Optional[DistributedSection], None)
    return create_model("Recipe", __config__=STRICT, __validators__={"_modes": _check_modes}, **fields)


@model_validator(mode="after")
def _check_modes(recipe):
    """Cross-checks between model, batching and their sections, asked of the registered classes."""
    from .registry import BATCHINGS, MODELS, TRANSFORMS

    model_cls = MODELS[recipe.model.name]
    supported = getattr(model_cls, "batching", ("full",))
    batching = BATCHINGS[recipe.train.batching]
    if batching.name not in supported:
        raise ValueError(f"model {recipe.model.name!r} does not support train.batching="
                         f"{batching.name!r}; it supports {list(supported)}")
    for cls in BATCHINGS.values():
        if cls.section and cls is not batching and getattr(recipe, cls.section) is not None:
            raise ValueError(f"{cls.section}: only used with train.batching {cls.name!r}")
    if batching.section and getattr(recipe, batching.section) is None:
        raise ValueError(f"train.batching {batching.name!r} needs a {batching.section} section "
                         f"(see {batching.__name__}'s parameters)")
    if "stage1" in type(recipe).model_fields:
        if getattr(model_cls, "estimator", None) is None:
            if recipe.stage1 is not None:
                raise ValueError(f"stage1: only used with two-stage models (Spexphormer), not {recipe.model.name!r}")
        else:
            if recipe.stage1 is None:
                recipe.stage1 = type(recipe).model_fields["stage1"].annotation.__args__[0]()
            layers = getattr(recipe.model, "layers", None)
            if recipe.stage1.model.layers != layers:
                raise ValueError(f"stage1.model.layers ({recipe.stage1.model.layers}) must equal model.layers "
                                 f"({layers}): the estimator gives one score row per layer of the wide model")
            s1 = recipe.stage1.train
            allowed = getattr(model_cls.estimator, "batching", ("full",))
            if s1.batching not in allowed:
                raise ValueError(f"stage1.train.batching: the estimator trains with one of {list(allowed)}, "
                                 f"got {s1.batching!r}")
            if s1.batching == "neighbor" and len(s1.fanouts) != layers:
                raise ValueError(f"stage1.train.fanouts has {len(s1.fanouts)} entries but the estimator has "
                                 f"{layers} layers: give one fanout per layer")
    batching.check_recipe(recipe)
    if getattr(model_cls, "needs_edge_types", False) and not any(
            getattr(TRANSFORMS[t.name], "writes_edge_types", False) for t in recipe.transforms):
        typed = sorted(n for n, c in TRANSFORMS.items() if getattr(c, "writes_edge_types", False))
        raise ValueError(f"model {recipe.model.name!r} attends over typed edges (edata['etype']); add a "
                         f"transform that writes them, one of {typed}, e.g. transforms: [{{name: expander, "
                         f"degree: 3}}]")
    _check_constructors(recipe, model_cls)
    return recipe


def _check_constructors(recipe, model_cls) -> None:
    """Build the model, its first stage and every transform once with stand-in sizes, so their own
    argument checks run now, before any data is loaded, and report all they refuse together with
    key paths (``model.hidden: must be >= 1, got 0``)."""
    from .registry import TRANSFORMS

    calls = [("model", model_cls, recipe.model, (1, 2))]
    if getattr(model_cls, "estimator", None) is not None and recipe.stage1 is not None:
        calls.append(("stage1.model", model_cls.estimator, recipe.stage1.model, (1, 2)))
    calls += [(f"transforms.{i}", TRANSFORMS[t.name], t, ()) for i, t in enumerate(recipe.transforms)]
    problems = []
    for where, cls, section, args in calls:
        problems += _constructor_problems(where, cls, section.model_dump(exclude={"name"}), args)
    if problems:
        raise ValueError("; ".join(problems))


def _constructor_problems(where: str, cls: type, params: dict, args: tuple) -> list[str]:
    """Every argument ``cls`` refuses: a constructor stops at its first complaint, so the named
    argument is set back to its default and the call repeated, once per argument at most."""
    import torch  # the registry imported it already; recipes are read without it

    defaults = {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
                if p.default is not p.empty}
    problems = []
    for _ in range(len(params) + 1):
        with torch.random.fork_rng(devices=[]):  # initial weights are drawn: leave the generator alone
            try:
                cls(*args, **params)
                return problems
            except (ValueError, TypeError) as exc:
                message = " ".join(str(exc).split())
        head, _, rest = message.partition(" ")
        if head not in params or not rest:
            return problems + [f"{where}: {message}"]
        problems.append(f"{where}.{head}: {rest}")
        if head not in defaults or params[head] == defaults[head]:
            return problems
        params = {**params, head: defaults[head]}
    return problems


_RECIPE_MODEL: type[BaseModel] | None = None


def Recipe() -> type[BaseModel]:  # noqa: N802 - reads like the class it returns
    """The recipe schema (built on first use, after all models and transforms are importable)."""
    global _RECIPE_MODEL
    if _RECIPE_MODEL is None:
        _RECIPE_MODEL = _build_recipe_model()
    return _RECIPE_MODEL


def parse_recipe(data: Any, overrides: list[str] = (), source: str = "recipe"):
    """Validate a recipe given as a dict (after applying ``overrides``); raise RecipeError."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    data = apply_overrides(data, list(overrides))
    try:
        return Recipe().model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"{source}: {format_errors(exc, data)}") from None


def load_recipe(path: str | Path, overrides: list[str] = ()):
    """Read, override and validate a YAML recipe file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        data = read_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file (not UTF-8); a recipe is a YAML text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    return parse_recipe(data, overrides, source=str(path))


def recipe_to_yaml(recipe) -> str:
    """The resolved recipe (every default filled in) as YAML."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def load_distributed_recipe(path: str | os.PathLike, overrides: list[str] = ()):
    """Read, override and validate a recipe that has a ``distributed:`` section.

    Returns ``(recipe, dist)`` with ``dist`` being ``recipe.distributed``.
    """
    path = Path(path)
    recipe = load_recipe(path, overrides)
    dist = recipe.distributed
    if dist is None:
        raise RecipeError(f"{path}: no 'distributed:' section; add one with at least "
                          f"'hosts: [{{address: 127.0.0.1}}]' (see docs/distributed.md)")
    check_recipe_for_distributed(recipe, dist, source=str(path))
    return recipe, dist


def check_recipe_for_distributed(recipe, dist: DistributedSection, source: str = "recipe") -> None:
    """Cross-checks between the recipe and its distributed section."""
    t = recipe.train
    if t.batching == "full":
        raise RecipeError(f"{source}: train.batching: 'full' needs the whole graph in one process; a distributed "
                          f"run trains on mini-batches: neighbor (GCN, GAT; with train.fanouts), node_batch "
                          f"(RBTransformer) or neighbour_tables (Spexphormer)")
