"""Evaluation metrics and the loss that goes with each label kind.

Accuracy and ROC-AUC come from scikit-learn; OGB datasets use OGB's official ``Evaluator``.
Both are imported on first use: importing ``sklearn.metrics`` costs 35 MB of private memory,
which a DistDGL trainer that counts its accuracy itself (``DistTrainer``) never needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

__all__ = ["Metric", "get_metric", "loss_for"]


@dataclass(frozen=True)
class Metric:
    """``fn(logits, labels) -> float``; larger is better for every metric we ship."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], float]

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        if len(labels) == 0:
            return float("nan")
        return float(self.fn(logits.detach().float().cpu(), labels.detach().cpu()))


def _accuracy(logits, labels):
    from sklearn.metrics import accuracy_score

    return accuracy_score(labels.numpy(), logits.argmax(-1).numpy())


def _roc_auc(logits, labels):
    from sklearn.metrics import roc_auc_score

    if labels.dim() == 2:  # multi-label: mean over tasks that have both classes
        y, s = labels.numpy(), torch.sigmoid(logits).numpy()
        aucs = [roc_auc_score(y[:, t], s[:, t]) for t in range(y.shape[1]) if 0 < y[:, t].sum() < len(y)]
        return float(np.mean(aucs)) if aucs else float("nan")
    if len(torch.unique(labels)) < 2:
        return float("nan")  # undefined on one class; never a silent 0.5
    return roc_auc_score(labels.numpy(), torch.softmax(logits, -1)[:, 1].numpy())


def _ogb(dataset_name: str):
    from ogb.nodeproppred import Evaluator

    evaluator = Evaluator(dataset_name)
    key = evaluator.eval_metric

    def fn(logits, labels):
        if key == "rocauc":
            y_pred = logits.numpy()
            y_true = labels.numpy()
        else:
            y_pred = logits.argmax(-1, keepdim=True).numpy()
            y_true = labels.view(-1, 1).numpy()
        return evaluator.eval({"y_true": y_true, "y_pred": y_pred})[key]

    return fn


def get_metric(spec: str) -> Metric:
    """``"accuracy"``, ``"roc_auc"`` or ``"ogb:<dataset>"``."""
    if spec == "accuracy":
        return Metric("accuracy", _accuracy)
    if spec == "roc_auc":
        return Metric("roc_auc", _roc_auc)
    if spec.startswith("ogb:"):
        return Metric(spec, _ogb(spec[4:]))
    raise ValueError(f"metric must be 'accuracy', 'roc_auc' or 'ogb:<dataset>', got {spec!r}")


def loss_for(labels: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy for class indices (int64, 1-D); BCE-with-logits for multi-label 0/1 matrices."""
    if labels.dim() == 2:
        return lambda logits, y: torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float())
    return torch.nn.functional.cross_entropy
