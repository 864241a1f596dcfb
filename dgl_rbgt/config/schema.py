"""Recipes: YAML files that say dataset, transforms, model, training and output.

A recipe is parsed with ``yaml.safe_load``, overridden from the command line
(``--set train.lr=0.001`` beats the file), and validated before any work starts: unknown keys,
wrong types and out-of-range values are all reported at once with their key paths.

The ``model`` and ``transforms`` sections are generated from the constructors of the classes in
:data:`dgl_rbgt.models.MODELS` and :data:`dgl_rbgt.transforms.TRANSFORMS`, so each default lives
only in the signature it configures.

Example
-------
>>> from dgl_rbgt.recipes import parse_recipe
>>> r = parse_recipe({"name": "demo", "dataset": {"name": "cora"}, "model": {"name": "gcn"}},
...                  overrides=["train.epochs=5"])
>>> r.train.epochs, r.model.hidden
(5, 64)
"""
from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from .errors import RecipeError

__all__ = ["Recipe", "load_recipe", "parse_recipe", "apply_overrides", "recipe_to_yaml"]

_STRICT = ConfigDict(extra="forbid", strict=True)


class _Section(BaseModel):
    model_config = _STRICT


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
    return create_model(f"{kind}_{name}", __config__=_STRICT, __doc__=cls.__doc__, **fields)


def _tagged_union(kind: str, registry: dict[str, type], skip: tuple[str, ...]):
    schemas = [_schema_from_signature(kind, n, c, skip) for n, c in registry.items()]
    if len(schemas) == 1:
        return schemas[0]
    return Annotated[Union[tuple(schemas)], Field(discriminator="name")]


class DatasetSection(_Section):
    """Which graph to load (see ``dgl-rbgt datasets``)."""

    name: str
    root: Optional[str] = None  # else $DGL_RBGT_DATA, else the default cache folder
    split: int = Field(0, ge=0)  # which fixed split, for datasets that ship several
    seed: Optional[int] = None  # seed of random splits / generated graphs; default: the recipe seed
    params: dict[str, Any] = Field(default_factory=dict)  # generator parameters (synthetic graphs)


class TrainSection(_Section):
    """How to train: batching mode, optimiser (AdamW or Adam), warmup + cosine schedule, early stopping."""

    batching: Literal["full", "neighbor", "node_batch", "neighbour_tables"] = "full"
    optimizer: Literal["adamw", "adam"] = "adamw"  # adamw: decoupled weight decay; adam: L2 in the gradient
    epochs: int = Field(200, ge=1)
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    warmup_epochs: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # cosine decays to lr * min_lr_ratio
    clip_grad_norm: Optional[float] = Field(None, gt=0)
    # the best epoch (best.pt, summary.json): highest validation metric, or lowest validation loss
    select_by: Literal["metric", "loss"] = "metric"
    patience: Optional[int] = Field(None, ge=1)  # stop after this many evaluations without a better best epoch
    eval_every: int = Field(1, ge=1)
    batch_size: int = Field(1024, ge=1)  # mini-batch modes: target nodes per batch
    eval_batch_size: Optional[int] = Field(None, ge=1)
    fanouts: Optional[list[Annotated[int, Field(ge=-1)]]] = None  # neighbor mode, one per layer (-1 = all)
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto" (cuda when available)
    threads: Optional[int] = Field(None, ge=1)  # torch intra-op threads; default: torch's choice

    @model_validator(mode="after")
    def _check(self):
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be smaller than epochs ({self.epochs})")
        if self.batching == "neighbor" and not self.fanouts:
            raise ValueError("batching 'neighbor' needs fanouts: one sample size per layer, e.g. [10, 10]")
        return self


class _Stage1Base(_Section):
    """Spexphormer's stage 1 (attention-score estimator), trained full-graph before the wide model."""

    train: TrainSection = Field(default_factory=TrainSection)
    scores: Optional[str] = None  # an earlier run's scores.pt: skip stage 1


class OutputSection(_Section):
    """Where runs go: ``<root>/<recipe name>-<timestamp>`` unless --run-dir is given."""

    root: str = "runs"
    checkpoint_every: int = Field(1, ge=1)  # epochs between checkpoints (the last epoch always)
    plot: bool = True  # write curves.png


def _build_recipe_model() -> type[BaseModel]:
    from .models import MODELS
    from .transforms import TRANSFORMS

    from .distributed.config import DistributedSection
    from .models.spexphormer import ScoreEstimator
    from .train.neighbour_tables import NeighbourTables

    model_union = _tagged_union("model", MODELS, skip=("in_feats", "num_classes"))
    estimator = _schema_from_signature("stage1", "model", ScoreEstimator, skip=("in_feats", "num_classes"),
                                       tagged=False)
    stage1 = create_model("Stage1Section", __base__=_Stage1Base,
                          model=(estimator, Field(default_factory=estimator)))
    tables = _schema_from_signature("neighbour_tables", "", NeighbourTables, tagged=False,
                                    skip=("graph", "device", "scores", "batch_size", "eval_batch_size"))
    fields: dict[str, Any] = {
        "name": (str, Field(..., pattern=r"^[A-Za-z0-9_.-]+$")),
        "seed": (int, 0),
        "dataset": (DatasetSection, ...),
        "transforms": (None, None),  # filled below; keeps the sections in data-flow order
        "model": (model_union, ...),
        "train": (TrainSection, Field(default_factory=TrainSection)),
        "output": (OutputSection, Field(default_factory=OutputSection)),
        # Spexphormer only (train.batching: neighbour_tables):
        "neighbour_tables": (Optional[tables], None),
        "stage1": (Optional[stage1], None),
        # DistDGL layout, used by `dgl-rbgt partition` / `dgl-rbgt launch` (ignored by `train`):
        "distributed": (Optional[DistributedSection], None),
    }
    if TRANSFORMS:
        fields["transforms"] = (list[_tagged_union("transform", TRANSFORMS, skip=())], Field(default_factory=list))
    else:
        fields["transforms"] = (list[dict], Field(default_factory=list, max_length=0))
    return create_model("Recipe", __config__=_STRICT, __validators__={"_modes": _check_modes}, **fields)


@model_validator(mode="after")
def _check_modes(recipe):
    from .models import MODELS

    model_cls = MODELS[recipe.model.name]
    supported = getattr(model_cls, "batching", ("full",))
    if recipe.train.batching not in supported:
        raise ValueError(f"model {recipe.model.name!r} does not support train.batching="
                         f"{recipe.train.batching!r}; it supports {list(supported)}")
    layers = getattr(recipe.model, "layers", None)
    if recipe.train.batching == "neighbor" and layers is not None and len(recipe.train.fanouts) != layers:
        raise ValueError(f"train.fanouts has {len(recipe.train.fanouts)} entries but model.layers is "
                         f"{layers}: give one fanout per layer")
    two_stage = recipe.train.batching == "neighbour_tables"
    if two_stage:
        if recipe.neighbour_tables is None:
            raise ValueError("train.batching 'neighbour_tables' needs a neighbour_tables section (ks: one "
                             "table width per layer, resample_every, ...)")
        if recipe.stage1 is None:
            recipe.stage1 = type(recipe).model_fields["stage1"].annotation.__args__[0]()
        if recipe.stage1.model.layers != layers:
            raise ValueError(f"stage1.model.layers ({recipe.stage1.model.layers}) must equal model.layers "
                             f"({layers}): the estimator gives one score row per layer of the wide model")
        ks = recipe.neighbour_tables.ks
        if not isinstance(ks, int) and len(ks) != layers:
            raise ValueError(f"neighbour_tables.ks has {len(ks)} entries but model.layers is {layers}")
    else:
        for key in ("neighbour_tables", "stage1"):
            if getattr(recipe, key) is not None:
                raise ValueError(f"{key}: only used with train.batching 'neighbour_tables' (Spexphormer)")
    return recipe


_RECIPE_MODEL: type[BaseModel] | None = None


def Recipe() -> type[BaseModel]:  # noqa: N802 - reads like the class it returns
    """The recipe schema (built on first use, after all models and transforms are importable)."""
    global _RECIPE_MODEL
    if _RECIPE_MODEL is None:
        _RECIPE_MODEL = _build_recipe_model()
    return _RECIPE_MODEL


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides (value parsed as YAML) to a nested dict, in order."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected key.path=value, e.g. train.lr=0.001")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        if not all(keys):
            raise RecipeError(f"--set {item!r}: empty key in path {path!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise RecipeError(f"--set {item!r}: value is not valid YAML ({exc.problem})") from None
        node: Any = data
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            where = ".".join(keys[:i + 1])
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise RecipeError(f"--set {item!r}: {where} must be an index below {len(node)}")
                key = int(key)
            elif not isinstance(node, dict):
                raise RecipeError(f"--set {item!r}: {'.'.join(keys[:i])} is not a mapping")
            if last:
                node[key] = value
            else:
                if isinstance(node, dict) and node.get(key) is None:
                    node[key] = {}
                node = node[key]
    return data


def _format_errors(exc: ValidationError, data: dict) -> str:
    parts = []
    for err in exc.errors():
        loc = list(err["loc"])
        # Drop the union tag pydantic inserts after a tagged section (model.gcn.hidden -> model.hidden).
        if len(loc) >= 2 and loc[0] == "model" and isinstance(data.get("model"), dict) and loc[1] == data["model"].get("name"):
            del loc[1]
        if len(loc) >= 3 and loc[0] == "transforms" and isinstance(loc[1], int):
            items = data.get("transforms") or []
            if loc[1] < len(items) and isinstance(items[loc[1]], dict) and loc[2] == items[loc[1]].get("name"):
                del loc[2]
        where = ".".join(str(x) for x in loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "union_tag_invalid":
            ctx = err.get("ctx", {})
            msg = f"unknown name {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
        got = err.get("input")
        shown = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        parts.append(f"{where}: {msg}{shown}" if where else msg)
    return "; ".join(parts)


def parse_recipe(data: Any, overrides: list[str] = (), source: str = "recipe"):
    """Validate a recipe given as a dict (after applying ``overrides``); raise RecipeError."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    data = apply_overrides(data, list(overrides))
    try:
        return Recipe().model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"{source}: {_format_errors(exc, data)}") from None


def load_recipe(path: str | Path, overrides: list[str] = ()):
    """Read, override and validate a YAML recipe file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    return parse_recipe(data, overrides, source=str(path))


def recipe_to_yaml(recipe) -> str:
    """The resolved recipe (every default filled in) as YAML."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
