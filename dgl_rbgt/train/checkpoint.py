"""Checkpoints: written atomically, read back with ``torch.load(..., weights_only=True)``.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so loading it never runs
code from the file. A crash while writing leaves the previous checkpoint intact: the new one is
written to a temporary file in the same folder, flushed to disk and renamed over the old one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..utils.files import atomic_open

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically (temp file + fsync + rename)."""
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a missing, truncated or foreign file,
    or one without the ``required`` entries, raises :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            # Never pass on torch's hint to load with weights_only=False: that runs the file's code.
            reason = "it holds objects other than tensors and plain data, which are never loaded"
        raise CheckpointError(f"checkpoint {path} is unreadable ({reason}); delete it or resume "
                              f"from another run") from None
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"checkpoint {path} was not written by dgl-rbgt (no 'format' entry)")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; it was not written by this trainer "
                              f"(delete it, or start a new run without --resume)")
    return state
