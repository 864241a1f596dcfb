"""The fixed sections of a recipe: dataset, train, output, and the base of Spexphormer's stage 1.

The model, transform and batching sections are generated from constructor signatures
(:mod:`dgl_rbgt.config.schema`); these are written out because no single class owns them.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["STRICT", "MAX_SEED", "DatasetSection", "TrainSection", "OutputSection", "Stage1Base"]

STRICT = ConfigDict(extra="forbid", strict=True)
#: Seeds reach numpy's generators (DGL's), which take 32-bit seeds.
MAX_SEED = 2**32 - 1


class _Section(BaseModel):
    model_config = STRICT


class DatasetSection(_Section):
    """Which graph to load (see ``dgl-rbgt datasets``)."""

    name: str
    root: Optional[str] = None  # else $DGL_RBGT_DATA, else the default cache folder
    split: int = Field(0, ge=0)  # which fixed split, for datasets that ship several
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)  # seed of random splits / generated graphs; default: the recipe seed
    params: dict[str, Any] = Field(default_factory=dict)  # generator parameters (synthetic graphs)


class TrainSection(_Section):
    """How to train: batching mode, optimiser (AdamW or Adam), warmup + cosine schedule, early stopping."""

    batching: str = "full"  # a name in config.registry.BATCHINGS; the recipe schema narrows it to those
    optimizer: Literal["adamw", "adam"] = "adamw"  # adamw: decoupled weight decay; adam: L2 in the gradient
    epochs: int = Field(200, ge=1)
    lr: float = Field(0.01, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(5e-4, ge=0, allow_inf_nan=False)
    warmup_epochs: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # cosine decays to lr * min_lr_ratio
    clip_grad_norm: Optional[float] = Field(None, gt=0, allow_inf_nan=False)
    # evaluate (and keep as best.pt) an exponential moving average of the weights with this decay
    ema_decay: Optional[float] = Field(None, gt=0, lt=1, allow_inf_nan=False)
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


class Stage1Base(_Section):
    """Spexphormer's stage 1 (attention-score estimator), trained before the wide model: full-graph
    (``train.batching: full``, the default) or on sampled neighbourhoods (``neighbor``, with
    ``train.fanouts``) when the full-graph step does not fit."""

    train: TrainSection = Field(default_factory=TrainSection)
    scores: Optional[str] = None  # an earlier run's scores.pt: skip stage 1


class OutputSection(_Section):
    """Where runs go: ``<root>/<recipe name>-<timestamp>`` unless --run-dir is given."""

    root: str = "runs"
    checkpoint_every: int = Field(1, ge=1)  # epochs between checkpoints (the last epoch always)
    plot: bool = True  # write curves.png
