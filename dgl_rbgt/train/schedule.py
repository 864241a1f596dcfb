"""Learning-rate schedule: linear warmup, then cosine decay, stepped once per epoch."""
from __future__ import annotations

import math

import torch

__all__ = ["warmup_cosine"]


def warmup_cosine(optimizer: torch.optim.Optimizer, epochs: int, warmup_epochs: int = 0,
                  min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Multiplier ``(e + 1) / warmup`` during warmup, then cosine from 1 to ``min_lr_ratio``.

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> s = warmup_cosine(opt, epochs=10, warmup_epochs=2)
    >>> [round(opt.param_groups[0]["lr"], 3)] + [round((s.step(), opt.param_groups[0]["lr"])[1], 3) for _ in range(3)]
    [0.5, 1.0, 1.0, 0.962]
    """
    decay_epochs = max(1, epochs - warmup_epochs)

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return (epoch + 1) / warmup_epochs
        t = min(1.0, (epoch - warmup_epochs) / decay_epochs)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
