"""Where the package's log lines go: the terminal (above progress bars) and a run's train.log.

The CLI, the single-machine pipeline and every distributed process set logging up through these
three functions, so the formats and the handler bookkeeping live in one place.
"""
from __future__ import annotations

import logging
import os
import sys

from tqdm.auto import tqdm

__all__ = ["log_to_terminal", "log_to_file", "log_to_stdout"]

PACKAGE_LOGGER = "dgl_rbgt"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _TqdmHandler(logging.Handler):
    """Log lines printed above progress bars instead of through them."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def log_to_terminal(verbose: bool = False) -> None:
    """Print the package's log lines on stderr, above any progress bar (once per process)."""
    root = logging.getLogger(PACKAGE_LOGGER)
    if not any(isinstance(h, _TqdmHandler) for h in root.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def log_to_stdout() -> None:
    """Plain lines on stdout, for processes whose output a launcher collects."""
    # DistDGL warns about every interface without an IPv4 address (ifb0, ...): noise, not news.
    logging.getLogger("dgl-distributed-socket").setLevel(logging.WARNING + 1)
    root = logging.getLogger(PACKAGE_LOGGER)
    if not root.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def log_to_file(path: str | os.PathLike) -> None:
    """Also write the package log to ``path`` (a run's train.log), replacing the file handler of an
    earlier run in this process."""
    root = logging.getLogger(PACKAGE_LOGGER)
    for h in list(root.handlers):
        if getattr(h, "_dgl_rbgt_run", False):
            root.removeHandler(h)
            h.close()
    handler = logging.FileHandler(path)
    handler._dgl_rbgt_run = True
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
