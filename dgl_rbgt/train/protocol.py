"""A dataset's own evaluation protocol: how many runs, and what each run changes in a recipe.

Heterophilous graphs (Platonov et al.) come with 10 fixed splits: run ``i`` trains on split ``i``.
Photo, CS, Computers and Physics have no official split: run ``i`` draws a 60/20/20 split from
seed ``i`` (with ``dataset.params.splits: tunedgnn`` they keep Luo et al.'s one fixed split, and
run ``i`` only changes the training seed). Every other dataset (cora and citeseer with SGFormer's
random split, whose seed the recipe fixes; OGB's official splits) keeps its split and run ``i``
only changes the training seed.
The training seed is ``i`` everywhere. ``tools/accuracy.py --protocol`` reports these runs and
``tools/search.py --runs`` selects on their validation metric, so a setting is chosen on the same
splits it is evaluated on, and never on test.
"""
from __future__ import annotations

from dgl_rbgt.data.registry import get_spec

__all__ = ["PROTOCOL_RUNS", "protocol_runs"]

#: Runs of a dataset's own protocol (10 fixed splits, 10 seeded splits or 10 training seeds).
PROTOCOL_RUNS = 10


def protocol_runs(dataset, runs: int = PROTOCOL_RUNS) -> tuple[str, list[tuple[int, list[str]]]]:
    """The protocol of a recipe's ``dataset`` section: its description and, per run, the run's
    index and the ``--set`` overrides that make it (training seed, and the split where the dataset
    has several).

    Examples
    --------
    >>> from dgl_rbgt.config import parse_recipe
    >>> recipe = parse_recipe({"name": "m", "dataset": {"name": "minesweeper"}, "model": {"name": "gcn"}})
    >>> description, runs = protocol_runs(recipe.dataset, runs=2)
    >>> description, runs[1]
    ('2 fixed splits', (1, ['seed=1', 'dataset.split=1']))
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be an int >= 1, got {runs!r}")
    spec = get_spec(dataset.name)
    if spec.family == "heterophilous" and dataset.params.get("split_type", "fixed") == "fixed":
        return f"{runs} fixed splits", [(i, [f"seed={i}", f"dataset.split={i}"]) for i in range(runs)]
    if spec.family == "shchur" and dataset.params.get("splits", "random") == "random":
        return f"{runs} seeded random splits", [(i, [f"seed={i}", f"dataset.seed={i}"]) for i in range(runs)]
    return f"{runs} training seeds", [(i, [f"seed={i}"]) for i in range(runs)]
