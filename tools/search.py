"""Hyperparameter search over a recipe with Optuna, selecting on the validation split only.

Every trial is one ``dgl-rbgt train`` run of the recipe with ``--set`` overrides drawn from a
search space (Optuna's TPE sampler, seeded, so the same command repeats the same trials). The
objective is the run's validation metric at its best epoch (or its validation loss with
``--select-by loss``); test metrics are never read. The search space is a YAML file: either a
mapping from key paths to distributions, or one whose ``search:`` key holds that mapping:

    search:
      model.dropout: {float: [0.0, 0.7]}
      model.layers: {int: [1, 4]}
      model.local: {choice: [gcn, sage]}
      train.lr: {log_float: [1e-4, 1e-2]}

    tools/in-venv python tools/search.py recipes/gps/gps_longrange.yaml space.yaml --trials 20

``--runs 0 1 2`` trains every trial on those runs of the dataset's own protocol (the fixed
splits, seeded splits or training seeds that ``tools/accuracy.py --protocol`` reports,
:mod:`dgl_rbgt.train.protocol`) and scores it by their mean validation metric: one run's
validation set (500 nodes on cora) is too small to rank close settings.

The output folder (``--out``, default ``runs/<recipe name>-search-<time>``) holds ``trials/NNN/``
(every trial's run directory; ``trials/NNN/rI/`` per protocol run with ``--runs``), ``trials.csv``
(one row per trial: parameters, validation metric and loss, run directory, state), ``study.db``
(the Optuna study, SQLite; ``--out`` of an earlier search continues it) and ``best.json``; the
best overrides are printed last as ``--set`` arguments. ``--start-from-recipe`` makes the
recipe's own values the first trial of a new study (they must lie in the space), so the search
starts from a known configuration (a tuned baseline's settings, say) and keeps it unless another
trial scores better on validation. ``--trials 0 --out DIR`` writes ``best.json`` for a search stopped by hand. A bad
search space is reported in one line with exit status 2.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from dgl_rbgt.config import load_recipe
from dgl_rbgt.errors import EXIT_USER_ERROR, UserError
from dgl_rbgt.train.protocol import protocol_runs

#: Distribution kinds of a search space and how Optuna draws them.
KINDS = ("float", "log_float", "int", "choice")
#: Columns of trials.csv before the parameters.
COLUMNS = ("trial", "state", "val_metric", "val_loss", "best_epoch", "seconds", "run_dir", "error")


class SpaceError(UserError):
    """A search space that cannot be searched; reported in one line with exit status 2."""


def parse_space(data: Any) -> dict[str, tuple[str, list]]:
    """Check a search space: ``{key.path: {kind: args}}`` -> ``{key.path: (kind, args)}``.

    ``float``, ``log_float`` and ``int`` take ``[low, high]`` (low < high; log needs low > 0);
    ``choice`` takes a non-empty list of values.

    Examples
    --------
    >>> parse_space({"search": {"train.lr": {"log_float": [1e-4, 1e-2]}, "model.local": {"choice": ["gcn"]}}})
    {'train.lr': ('log_float', [0.0001, 0.01]), 'model.local': ('choice', ['gcn'])}
    """
    if isinstance(data, dict) and "search" in data:
        data = data["search"]
    if not isinstance(data, dict) or not data:
        raise SpaceError("search space: expected a non-empty mapping of key paths to distributions, "
                         "e.g. {model.dropout: {float: [0.0, 0.7]}}")
    space = {}
    for key, dist in data.items():
        if not isinstance(dist, dict) or len(dist) != 1:
            raise SpaceError(f"search space: {key}: expected one of {{{': ..., '.join(KINDS)}: ...}}, got {dist!r}")
        (kind, args), = dist.items()
        if kind not in KINDS:
            raise SpaceError(f"search space: {key}: unknown distribution {kind!r}; expected one of {', '.join(KINDS)}")
        if kind == "choice":
            if not isinstance(args, list) or not args:
                raise SpaceError(f"search space: {key}: choice needs a non-empty list of values, got {args!r}")
        else:
            numbers = isinstance(args, list) and len(args) == 2 and all(
                isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in args)
            if not numbers or not args[0] < args[1]:
                raise SpaceError(f"search space: {key}: {kind} needs [low, high] with low < high, got {args!r}")
            if kind == "int" and not all(isinstance(a, int) for a in args):
                raise SpaceError(f"search space: {key}: int needs integer bounds, got {args!r}")
            if kind == "log_float" and args[0] <= 0:
                raise SpaceError(f"search space: {key}: log_float needs low > 0, got {args!r}")
            if kind != "int":
                args = [float(a) for a in args]
        space[str(key)] = (kind, args)
    return space


def override(key: str, value: Any) -> str:
    """A ``--set`` argument; the value in JSON, which the recipe reader parses as YAML.

    Examples
    --------
    >>> override("model.local", "sage"), override("train.lr", 0.001), override("model.ffn", False)
    ('model.local="sage"', 'train.lr=0.001', 'model.ffn=false')
    """
    return f"{key}={json.dumps(value)}"


def check_space_against_recipe(recipe: Path, space: dict, sets: list[str]) -> None:
    """Validate the recipe with every bound and every choice of the space, before any trial, so a
    key the recipe does not have or a value it refuses fails now, in one line."""
    for key, (kind, args) in space.items():
        for value in args:
            try:
                load_recipe(recipe, [*sets, override(key, value)])
            except UserError as exc:
                raise SpaceError(f"search space: {key}={value!r}: {exc}") from None


def recipe_values(recipe: Path, space: dict, sets: list[str]) -> dict[str, Any]:
    """The recipe's own value of every key of the space (after ``sets``), checked to lie in the
    space, as the parameters of a first trial (``--start-from-recipe``)."""
    config = load_recipe(recipe, sets)
    values = {}
    for key, (kind, args) in space.items():
        node = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
        inside = node in args if kind == "choice" else (
            isinstance(node, (int, float)) and not isinstance(node, bool) and args[0] <= node <= args[1]
            and (kind != "int" or float(node).is_integer()))
        if not inside:
            raise SpaceError(f"--start-from-recipe: the recipe's {key} = {node!r} is outside the search space "
                             f"({kind}: {args})")
        values[key] = int(node) if kind == "int" else node
    return values


def suggest(trial, key: str, kind: str, args: list) -> Any:
    """Draw one value of a dimension from an Optuna trial."""
    if kind == "choice":
        return trial.suggest_categorical(key, args)
    if kind == "int":
        return trial.suggest_int(key, *args)
    return trial.suggest_float(key, *args, log=kind == "log_float")


class TrialLog:
    """trials.csv: one row per finished trial, written as it finishes."""

    def __init__(self, path: Path, keys: list[str]):
        self.path, self.columns = path, [*COLUMNS, *keys]
        if not path.is_file():
            with path.open("w", newline="") as f:
                csv.writer(f).writerow(self.columns)

    def add(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)


def make_objective(recipe: Path, space: dict, sets: list[str], out: Path, select_by: str, log: TrialLog,
                   runs: list[tuple[int, list[str]]] | None = None):
    """The Optuna objective: train one trial's recipe (on each protocol run of ``runs``, as
    ``(index, overrides)``), return its (mean) validation metric or loss."""
    from dgl_rbgt.train.pipeline import run_recipe

    def objective(trial) -> float:
        params = {key: suggest(trial, key, kind, args) for key, (kind, args) in space.items()}
        run_dir = out / "trials" / f"{trial.number:03d}"
        row = {"trial": trial.number, "run_dir": str(run_dir), **params}
        start = time.perf_counter()
        try:
            summaries = []
            for index, run_sets in runs or [(None, [])]:
                config = load_recipe(recipe, [*sets, *(override(k, v) for k, v in params.items()), *run_sets])
                where = run_dir if index is None else run_dir / f"r{index}"
                summaries.append(run_recipe(config, run_dir=where, progress=False).summary)
            # Only validation numbers leave a trial: the selection must never see test.
            row.update(val_metric=statistics.fmean(s["val_metric"] for s in summaries),
                       val_loss=statistics.fmean(s["val_loss"] for s in summaries),
                       best_epoch=" ".join(str(s["best_epoch"]) for s in summaries))
            value = row["val_metric"] if select_by == "metric" else row["val_loss"]
            if not math.isfinite(value):
                raise UserError(f"validation {select_by} is not finite ({value})")
        except UserError as exc:
            log.add({**row, "state": "FAIL", "seconds": f"{time.perf_counter() - start:.1f}", "error": str(exc)})
            raise
        trial.set_user_attr("val_loss", row["val_loss"])
        trial.set_user_attr("run_dir", str(run_dir))
        log.add({**row, "state": "COMPLETE", "seconds": f"{time.perf_counter() - start:.1f}"})
        return value

    return objective


def search(recipe: Path, space: dict, *, trials: int, out: Path, seed: int = 0, sets: list[str] = (),
           select_by: str = "metric", runs: list[tuple[int, list[str]]] | None = None,
           start: dict[str, Any] | None = None):
    """Run ``trials`` trials (a study in ``out/study.db`` continues); returns the Optuna study.
    ``runs``: protocol runs ``(index, overrides)`` every trial trains on (default: the recipe as is).
    ``start``: parameters of the first trial of a new study (see :func:`recipe_values`)."""
    import optuna

    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="search", storage=f"sqlite:///{out / 'study.db'}", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        direction="maximize" if select_by == "metric" else "minimize")
    log = TrialLog(out / "trials.csv", list(space))
    if start and not study.trials:
        study.enqueue_trial(start)
    # A failed run (diverged, a combination the model refuses) is recorded and the search goes on.
    if trials:
        study.optimize(make_objective(recipe, space, list(sets), out, select_by, log, runs), n_trials=trials,
                       catch=(UserError,))
    return study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="The search space format and the output folder are described in the "
                                            "module docstring of tools/search.py.")
    parser.add_argument("recipe", type=Path, help="the recipe to tune, e.g. recipes/gps/gps_longrange.yaml")
    parser.add_argument("space", type=Path, help="YAML search space: {key.path: {float|log_float|int|choice: ...}} "
                                                 "or the same mapping under a 'search:' key")
    parser.add_argument("--trials", type=int, default=20,
                        help="trials to run (default 20); 0 reports the best of the study in --out without running one")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default runs/<recipe name>-search-<time>); an existing one continues")
    parser.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="fixed override for every trial (repeatable)")
    parser.add_argument("--select-by", choices=("metric", "loss"), default="metric",
                        help="maximise the validation metric (default) or minimise the validation loss")
    parser.add_argument("--runs", nargs="+", type=int, default=None, metavar="I",
                        help="train every trial on these runs of the dataset's own protocol (splits or seeds, "
                             "as tools/accuracy.py --protocol) and select on their mean validation value")
    parser.add_argument("--start-from-recipe", action="store_true",
                        help="make the recipe's own values of the searched keys the first trial of a new study")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        if args.trials < 0 or (args.trials == 0 and not (args.out and (args.out / "study.db").is_file())):
            raise SpaceError(f"--trials must be >= 1, or 0 with the --out of an earlier search, got {args.trials}")
        if not args.space.is_file():
            raise SpaceError(f"search space file not found: {args.space}")
        try:
            space = parse_space(yaml.safe_load(args.space.read_text(encoding="utf-8")))
        except yaml.YAMLError as exc:
            raise SpaceError(f"{args.space}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
        base = load_recipe(args.recipe, args.set)
        runs = None
        if args.runs is not None:
            if len(set(args.runs)) != len(args.runs) or min(args.runs) < 0:
                raise SpaceError(f"--runs must be distinct run indices >= 0, got {args.runs}")
            _, every = protocol_runs(base.dataset, max(args.runs) + 1)
            runs = [every[i] for i in args.runs]
        check_space_against_recipe(args.recipe, space, args.set)
        start = recipe_values(args.recipe, space, args.set) if args.start_from_recipe else None
        out = args.out or Path(base.output.root) / f"{base.name}-search-{time.strftime('%Y%m%d-%H%M%S')}"
        study = search(args.recipe, space, trials=args.trials, out=out, seed=args.seed, sets=args.set,
                       select_by=args.select_by, runs=runs, start=start)
    except UserError as exc:
        print(f"search: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    done = [t for t in study.trials if t.value is not None]
    if not done:
        print(f"search: no trial finished; see {out / 'trials.csv'}", file=sys.stderr)
        return 1
    best = study.best_trial
    sets = [override(k, v) for k, v in best.params.items()]
    record = {"trial": best.number, "select_by": args.select_by, "runs": args.runs, "value": best.value, "params": best.params,
              "set": sets, "run_dir": best.user_attrs.get("run_dir"), "trials": len(study.trials)}
    (out / "best.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"best of {len(done)} finished trials: trial {best.number}, validation {args.select_by} {best.value:.4f}, "
          f"run {record['run_dir']} (record: {out})")
    print(" ".join(f"--set {s}" for s in sets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
