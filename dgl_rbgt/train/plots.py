"""Training curves as a PNG (matplotlib, no display needed)."""
from __future__ import annotations

import math
from pathlib import Path

__all__ = ["plot_curves"]


def plot_curves(rows: list[dict[str, float]], path: str | Path, title: str = "", metric: str = "metric") -> None:
    """Loss (left) and train/val/test metric (right) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], label="train")
    val_loss = [(r["epoch"], r["val_loss"]) for r in rows if not math.isnan(r["val_loss"])]
    if val_loss:
        ax_loss.plot(*zip(*val_loss), label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log")
    ax_loss.legend()
    for key in ("train_metric", "val_metric", "test_metric"):
        pts = [(r["epoch"], r[key]) for r in rows if not math.isnan(r[key])]
        if pts:
            ax_metric.plot(*zip(*pts), label=key.removesuffix("_metric"))
    ax_metric.set(xlabel="epoch", ylabel=metric)
    ax_metric.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
