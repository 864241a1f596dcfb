"""Progress for the long steps before and around training: a bar over named stages, a log line per
stage with its time, and a time estimate for what is left of a loop.

At 10 million nodes generating the graph, each transform, training stage 1, drawing tables and
partitioning take from seconds to minutes; the bar shows which one is running (on a terminal
only, as tqdm decides), the log keeps how long each took.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterator, Sequence

from tqdm.auto import tqdm

__all__ = ["Stages", "remaining_seconds", "format_seconds"]

logger = logging.getLogger(__name__)


class Stages:
    """A progress bar over the named stages of one job, with one log line per finished stage.

    Parameters
    ----------
    desc : str
        What the stages make up (``"prepare cora"``).
    names : sequence of str
        The stages, in the order they run (for the bar's total).
    progress : bool
        Show the bar (still only on a terminal); the log lines are written either way.

    Example
    -------
    >>> from dgl_rbgt.utils.progress import Stages
    >>> with Stages("prepare", ["load", "transform"], progress=False) as stages:
    ...     with stages.stage("load"):
    ...         pass
    ...     with stages.stage("transform"):
    ...         pass
    >>> [name for name, _ in stages.times]
    ['load', 'transform']
    """

    #: Stages shorter than this (seconds) are logged at DEBUG level, longer ones at INFO.
    LOG_AFTER = 1.0

    def __init__(self, desc: str, names: Sequence[str], progress: bool = True):
        self.desc = desc
        self.times: list[tuple[str, float]] = []
        self._start = time.perf_counter()
        self._bar = tqdm(total=len(names), desc=desc, unit="stage", leave=False, dynamic_ncols=True,
                         disable=None if progress else True)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run one stage: the bar names it while it runs; its time is logged when it ends."""
        self._bar.set_postfix_str(name)
        t0 = time.perf_counter()
        yield
        seconds = time.perf_counter() - t0
        self.times.append((name, seconds))
        self._bar.update(1)
        # Quick stages say nothing worth a line on the terminal; the slow ones are what it is for.
        level = logging.INFO if seconds >= self.LOG_AFTER else logging.DEBUG
        logger.log(level, "%s: %s done in %s", self.desc, name, format_seconds(seconds))

    def __enter__(self) -> "Stages":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()  # also when a stage raised: the bar must not stay on the terminal

    def close(self) -> None:
        """Close the bar and log the total (``with Stages(...)`` calls it on leaving)."""
        self._bar.close()
        if len(self.times) > 1 and sum(t for _, t in self.times) >= self.LOG_AFTER:
            logger.info("%s: %d stages in %s", self.desc, len(self.times),
                        format_seconds(time.perf_counter() - self._start))


def remaining_seconds(durations: Sequence[float], remaining: int) -> float:
    """Estimated time for ``remaining`` more iterations from the ``durations`` so far (their
    median, so one slow first iteration does not skew it).

    Example
    -------
    >>> remaining_seconds([10.0, 2.0, 2.5], remaining=4)
    10.0
    """
    if not durations or remaining <= 0:
        return 0.0
    ordered = sorted(durations)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return median * remaining


def format_seconds(seconds: float) -> str:
    """``'42.0 s'``, ``'3 min 20 s'`` or ``'2 h 05 min'``.

    Example
    -------
    >>> format_seconds(42), format_seconds(200), format_seconds(7500)
    ('42.0 s', '3 min 20 s', '2 h 05 min')
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
