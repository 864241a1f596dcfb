"""The run directory: everything a training run leaves behind.

```
<run>/recipe.yaml      the resolved recipe (every default filled in)
<run>/train.log        the log, one line per epoch
<run>/metrics.csv      one row per epoch
<run>/checkpoint.pt    the last completed epoch (resumable), written atomically
<run>/best.pt          model weights at the best validation epoch
<run>/summary.json     val/test at the best validation epoch, epochs run, timings, peak memory
<run>/curves.png       loss and metric curves
<run>/error.txt        only when the run failed: the one-line reason (also the last line of train.log)
```
"""
from __future__ import annotations

import csv
import json
import io
import os
import time
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..utils.files import atomic_write_text

__all__ = ["RunDir", "new_run_dir", "latest_run_dir"]

METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_metric", "val_metric", "test_metric",
                  "val_loss", "epoch_seconds", "eval_seconds"]



class RunDir:
    """Paths and writers of one run's folder."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    recipe = property(lambda self: self.path / "recipe.yaml")
    log = property(lambda self: self.path / "train.log")
    metrics = property(lambda self: self.path / "metrics.csv")
    checkpoint = property(lambda self: self.path / "checkpoint.pt")
    best = property(lambda self: self.path / "best.pt")
    summary = property(lambda self: self.path / "summary.json")
    curves = property(lambda self: self.path / "curves.png")

    def resumable(self) -> bool:
        """Whether a checkpoint exists (of the run, or of a two-stage run's first stage)."""
        return self.checkpoint.is_file() or (self.path / "stage1" / "checkpoint.pt").is_file()

    def create(self) -> "RunDir":
        if self.path.exists() and not self.path.is_dir():
            raise CheckpointError(f"run directory {self.path} is not a folder (a file is in the way)")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create the run directory {self.path}: {exc.strerror} "
                                  f"(check output.root or --run-dir)") from None
        return self

    error = property(lambda self: self.path / "error.txt")

    def record_failure(self, exc: BaseException) -> None:
        """Log why the run stopped (one line, also to train.log) and leave it in error.txt, so a
        failed run is visible in its folder."""
        if isinstance(exc, KeyboardInterrupt):
            line = "interrupted"
        else:
            line = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        # Straight to the file: the terminal shows the CLI's own one-line error.
        with open(self.log, "a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR run failed: {line}\n")
        atomic_write_text(self.error, line + "\n")

    def write_recipe(self, text: str) -> None:
        atomic_write_text(self.recipe, text)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.summary, json.dumps(summary, indent=2, sort_keys=True) + "\n")

    def read_metrics(self) -> list[dict[str, float]]:
        if not self.metrics.is_file():
            return []
        with open(self.metrics, newline="") as f:
            return [{k: float(v) if v not in ("", "nan") else float("nan") for k, v in row.items()}
                    for row in csv.DictReader(f)]

    def write_metrics(self, rows: list[dict[str, float]]) -> None:
        """Rewrite the whole CSV (a resumed run drops rows past its checkpoint this way)."""
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics, buffer.getvalue())


def new_run_dir(root: str | os.PathLike, name: str) -> RunDir:
    """A fresh ``<root>/<name>-<YYYYmmdd-HHMMSS>`` folder; never reuses an existing one."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return RunDir(path).create()


def latest_run_dir(root: str | os.PathLike, name: str) -> RunDir:
    """The newest ``<root>/<name>-*`` run that has a checkpoint, for ``--resume``."""
    candidates = sorted((p for p in Path(root).glob(f"{name}-*") if RunDir(p).resumable()),
                        key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise CheckpointError(f"no run of recipe {name!r} with a checkpoint under {root}; "
                              f"start one without --resume or pass --run-dir")
    return RunDir(candidates[-1])
