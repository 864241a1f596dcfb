"""An exponential moving average of the weights, evaluated in place of the last step's weights.

``train.ema_decay: 0.9`` keeps ``avg <- decay * avg + (1 - decay) * w`` after every optimiser
step, over parameters and buffers (batch-norm statistics too), with torch's
:class:`~torch.optim.swa_utils.AveragedModel`. Evaluation, the best epoch's ``best.pt`` and the
reported metrics then use the average. On a small graph trained with heavy dropout the weights
of consecutive epochs differ by more than the signal in 500 validation nodes, so the curve that
selects the epoch is noisy; the average of the recent weights is a smoother model to select from
(Polyak & Juditsky 1992; the weight averaging of Izmailov et al. 2018, "Averaging Weights Leads
to Wider Optima and Better Generalization"). Measured on cora (GPS) and Actor (RBTransformer):
test +0.12 and +0.53, but validation does not prefer it (docs/results_gps.md, docs/results_rba.md),
so no recipe uses it yet.

Costs one more copy of the model's parameters and buffers.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["WeightAverage"]


class WeightAverage:
    """Exponential moving average of ``model``'s parameters and buffers.

    Parameters
    ----------
    model : nn.Module
        The model being trained; copied once here, then :meth:`update` averages its current
        weights into the copy and :meth:`applied` lends it the average.
    decay : float
        Weight of the old average at each update, in (0, 1): the average spans about
        ``1 / (1 - decay)`` steps.

    Example
    -------
    >>> import torch
    >>> from dgl_rbgt.train.averaging import WeightAverage
    >>> model = torch.nn.Linear(2, 1)
    >>> average = WeightAverage(model, decay=0.5)
    >>> with torch.no_grad():
    ...     _ = model.weight.add_(2.0)
    >>> average.update()
    >>> before = model.weight.detach().clone()
    >>> with average.applied():  # evaluate with the average: half way between the two
    ...     moved = model.weight.detach().clone()
    >>> bool(torch.allclose(moved, before - 1.0)), bool(torch.equal(model.weight, before))
    (True, True)
    """

    def __init__(self, model: nn.Module, decay: float):
        if isinstance(decay, bool) or not isinstance(decay, float) or not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be a float in (0, 1), got {decay!r}")
        self.model, self.decay = model, decay
        # use_buffers: batch-norm running statistics are averaged too, so they match the weights
        self._averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @torch.no_grad()
    def update(self) -> None:
        """Fold the model's current parameters and buffers into the average."""
        self._averaged.update_parameters(self.model)

    @contextlib.contextmanager
    def applied(self) -> Iterator[nn.Module]:
        """The model holds the averaged weights inside the block and its own ones again after."""
        own = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self._averaged.module.state_dict())
        try:
            yield self.model
        finally:
            self.model.load_state_dict(own)

    def state_dict(self) -> dict:
        """The average and its update count, for a checkpoint (tensors only)."""
        return self._averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._averaged.load_state_dict(state)
