"""Accuracy over seeds: run recipes (optionally with variants) for several seeds, report mean +- std.

Each (recipe, variant, seed) runs in its own process through the CLI, so every run is exactly
what a user gets from ``dgl-rbgt train``; results are read from the runs' summary.json files.
A finished run is reused when the recipe file's text, the options and the library's source
(``dgl_rbgt/**/*.py``) are the same as when it ran (a key kept in the run directory); otherwise it
runs again, and the earlier finished run moves to ``runs/replaced/`` rather than being deleted.
Runs under different ``--set`` options live in different folders, so processes that share
``--out`` with other options (say ``--set dataset.name=texas`` to try a recipe on a graph it was
not tuned on) never replace each other's runs; such a run is labelled with the dataset it ran on
and quotes no published number (the recipe's is for its own dataset).

    tools/in-venv python tools/accuracy.py recipes/rba/rbtransformer_cora.yaml recipes/rba/rbtransformer_citeseer.yaml \\
        --variant rba:model.attention=rba --variant sgformer:model.attention=sgformer --seeds 0 1 2 3 4

Prints a table last and writes bench-results/accuracy/<name>.csv (one row per run) and
<name>-summary.csv (mean, std, published value where the recipe header states one).

``--protocol`` runs every recipe under its dataset's own evaluation protocol instead of
``--seeds``: run i (0..``--runs``-1, default 10) uses training seed i and, for datasets with fixed
splits (heterophilous), ``dataset.split=i``; for datasets whose split is drawn from a seed (Photo,
CS, Computers, Physics), ``dataset.seed=i``; for every other dataset (cora and citeseer with
SGFormer's random split, whose split seed the recipe fixes; OGB's official splits) only the
training seed changes. With several recipes the last table puts every model family side by side,
one row per dataset (also written as <name>-table.csv).

``--paired-with LABEL`` also compares every other variant with variant LABEL seed by seed (same
recipe, same seed, so the split and initial draws match): the mean difference in validation
metric and validation loss +- its standard error, printed and written to <name>-paired.csv. This
is how a setting is chosen on validation alone, e.g.

    tools/in-venv python tools/accuracy.py recipes/rba/rbtransformer_tolokers.yaml \
        --variant off:model.attn_gate=false --variant on:model.attn_gate=true --paired-with off
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dgl_rbgt.errors import UserError
from dgl_rbgt.train.protocol import PROTOCOL_RUNS
from dgl_rbgt.train.protocol import protocol_runs as dataset_protocol

ROOT = Path(__file__).resolve().parents[1]


def protocol_runs(recipe: Path, runs: int = PROTOCOL_RUNS,
                  overrides: list[str] = ()) -> tuple[str, list[tuple[int, list[str]]]]:
    """The dataset's own protocol for a recipe after ``overrides`` (``--set``): a split chosen by
    ``--set`` (Actor's ``dataset.params={split_type: fixed}``) decides the protocol, as it decides
    the runs (:func:`dgl_rbgt.train.protocol.protocol_runs`)."""
    from dgl_rbgt.config import load_recipe

    return dataset_protocol(load_recipe(recipe, overrides).dataset, runs)


def recipe_identity(recipe: Path, overrides: list[str] = ()) -> tuple[str, str]:
    """(dataset name, model name) of a recipe after ``overrides``, for the side-by-side table."""
    from dgl_rbgt.config import load_recipe

    r = load_recipe(recipe, overrides)
    return r.dataset.name, r.model.name


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``label:key=value,key=value`` -> (label, [--set options]). Commas inside brackets belong to
    the value, so a list can be given: ``deep:model.layers=6,neighbour_tables.ks=[12,5,5,5,5,5]``."""
    label, _, sets = text.partition(":")
    options, depth, start = [], 0, 0
    for i, char in enumerate(sets + ","):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            options.append(sets[start:i])
            start = i + 1
    if depth != 0:  # an unclosed bracket would swallow every later setting
        raise ValueError(f"--variant {text!r}: unbalanced brackets; expected label:key=value[,key=value]")
    return label, [s for s in options if s]


#: File in a run directory holding the key of the recipe text and options that made it.
KEY_FILE = "accuracy-key.txt"


def source_digest(package: Path = ROOT / "dgl_rbgt") -> bytes:
    """Digest of the library's Python sources: a run made by other code is not reused."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.digest()


def run_key(recipe: Path, cmd: list[str], source: bytes = b"") -> str:
    """Digest of the recipe file's text, the command's options (not the run directory) and the
    library's source (``source``, from :func:`source_digest`)."""
    options = cmd[cmd.index("--no-progress"):]
    return hashlib.sha256(recipe.read_bytes() + "\0".join(options).encode() + source).hexdigest()


def finished(run_dir: Path, key: str) -> bool:
    """A run to reuse: it finished, from the same recipe text and options."""
    key_file = run_dir / KEY_FILE
    return (run_dir / "summary.json").is_file() and key_file.is_file() and key_file.read_text() == key


def set_aside(run_dir: Path) -> None:
    """Clear ``run_dir`` for a new run. A finished run made by other code, recipe text or options
    moves to ``<runs>/replaced/`` (its results are kept); an unfinished one is removed."""
    if not run_dir.exists():
        return
    if not (run_dir / "summary.json").is_file():
        shutil.rmtree(run_dir)
        return
    kept = run_dir.parent / "replaced" / f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    kept.parent.mkdir(exist_ok=True)
    run_dir.rename(kept)
    print(f"{run_dir.name}: made by other code, recipe text or options; kept at {kept}", flush=True)


def published(recipe: Path, overrides: list[str] = ()) -> str:
    """The 'Published: ...' number from a recipe's header comment, if any; none when ``overrides``
    (``--set``) run the recipe on another dataset than the one that number is for."""
    if overrides and recipe_identity(recipe, overrides)[0] != recipe_identity(recipe)[0]:
        return ""
    m = re.search(r"Published:\s*([0-9.]+)", recipe.read_text())
    return m.group(1) if m else ""


def paired_differences(rows: list[dict], baseline: str) -> list[dict]:
    """Per recipe and variant, ``variant - baseline`` over the seeds both have: validation metric
    (points) and validation loss, each as mean and standard error (NaN with fewer than 2 seeds)."""
    base = {(r["recipe"], r["seed"]): r for r in rows if r["variant"] == baseline}
    groups: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for r in rows:
        if r["variant"] != baseline and (r["recipe"], r["seed"]) in base:
            groups.setdefault((r["recipe"], r["variant"]), []).append((r, base[r["recipe"], r["seed"]]))
    out = []
    for (recipe, variant), pairs in groups.items():
        row = {"recipe": recipe, "variant": variant, "baseline": baseline, "seeds": len(pairs)}
        for name, scale in (("val", 100.0), ("val_loss", 1.0)):
            diffs = [scale * (a[name] - b[name]) for a, b in pairs]
            row[f"{name}_diff"] = statistics.mean(diffs)
            row[f"{name}_diff_se"] = (statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1
                                      else math.nan)
        out.append(row)
    return out


def side_by_side(summary: list[dict], identity: dict[str, tuple[str, str]], path: Path) -> None:
    """Print and write one row per dataset, one column per model (and variant): test mean +- std."""
    table: dict[str, dict[str, str]] = {}
    columns: list[str] = []
    for s in summary:
        dataset, model = identity[s["recipe"]]
        column = model if s["variant"] == "default" else f"{model} ({s['variant']})"
        if column not in columns:
            columns.append(column)
        table.setdefault(dataset, {"dataset": dataset, "metric": s["metric"], "protocol": s["protocol"]})
        table[dataset][column] = f"{s['test_mean']:.2f} ± {s['test_std']:.2f}"
        if s["published"]:  # the best number any of the dataset's recipes quotes
            table[dataset]["best published"] = max(table[dataset].get("best published", ""), s["published"],
                                                   key=lambda v: float(v) if v else -1.0)
    fields = ["dataset", "metric", "protocol", *columns, "best published"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(table.values())
    print("\n| " + " | ".join(fields) + " |\n|" + "---|" * len(fields))
    for row in table.values():
        print("| " + " | ".join(row.get(k, "") for k in fields) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipes", nargs="+", type=Path)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--protocol", action="store_true",
                    help="run each dataset's own protocol (fixed splits, seeded splits or seeds) instead of --seeds")
    ap.add_argument("--runs", type=int, default=PROTOCOL_RUNS, help="runs of --protocol (default 10)")
    ap.add_argument("--run-ids", nargs="+", type=int, metavar="I",
                    help="only these runs of --protocol, in this order (to share the runs between processes "
                         "with the same --out; the table then covers these runs)")
    ap.add_argument("--variant", action="append", default=[],
                    help="label:key=value[,key=value] (repeatable; a list value keeps its commas: ks=[12,5]); "
                         "default: the recipe as is")
    ap.add_argument("--set", action="append", default=[], help="override applied to every run")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "accuracy")
    ap.add_argument("--name", default="accuracy")
    ap.add_argument("--paired-with", metavar="LABEL",
                    help="also print each variant's seed-by-seed validation difference from variant LABEL")
    args = ap.parse_args(argv)

    try:
        variants = [parse_variant(v) for v in args.variant] or [("default", [])]
    except ValueError as err:
        ap.error(str(err))
    if args.paired_with is not None and args.paired_with not in {label for label, _ in variants}:
        ap.error(f"--paired-with {args.paired_with!r} is not one of the variants' labels "
                 f"({', '.join(label for label, _ in variants)})")
    args.out.mkdir(parents=True, exist_ok=True)
    runs_root = args.out / "runs"
    # Runs under other --set options get their own folders: processes that share --out with
    # different options (another dataset, another split) never replace each other's runs.
    options = "-" + hashlib.sha256("\0".join(args.set).encode()).hexdigest()[:8] if args.set else ""
    rows = []
    protocols = {}
    quoted = {}  # recipe -> its published number, where it applies to the runs
    identities = {}  # recipe stem -> (dataset, model) after --set, for the side-by-side table
    source = source_digest()
    for recipe in args.recipes:
        if not recipe.is_file():
            ap.error(f"recipe file not found: {recipe}")
        try:
            if args.protocol:
                protocols[recipe.stem], runs = protocol_runs(recipe, args.runs, args.set)
            quoted[recipe] = published(recipe, args.set)
            identities[recipe.stem] = recipe_identity(recipe, args.set)
        except (UserError, ValueError, OSError) as exc:  # an unreadable or invalid recipe, an unknown dataset
            ap.error(str(exc))
        if args.protocol:
            by_id = dict(runs)
            ids = args.run_ids if args.run_ids is not None else list(by_id)
            unknown = [i for i in ids if i not in by_id]
            if unknown:
                ap.error(f"--run-ids {unknown} are not runs of the protocol (0 to {args.runs - 1})")
            runs = [(f"r{i}", i, by_id[i]) for i in ids]
        else:
            runs = [(f"s{seed}", seed, [f"seed={seed}"]) for seed in args.seeds]
        for label, sets in variants:
            for tag, seed, run_sets in runs:
                run_dir = runs_root / f"{recipe.stem}-{label}-{tag}{options}"
                cmd = [sys.executable, "-m", "dgl_rbgt", "train", str(recipe), "--run-dir", str(run_dir),
                       "--no-progress"]
                for s in run_sets + sets + args.set:
                    cmd += ["--set", s]
                key = run_key(recipe, cmd, source)
                if not finished(run_dir, key):
                    set_aside(run_dir)
                    t0 = time.time()
                    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy())
                    if proc.returncode != 0:
                        print(f"FAILED {recipe.stem} {label} {tag}: {proc.stderr.strip().splitlines()[-1:]}")
                        continue
                    (run_dir / KEY_FILE).write_text(key)
                    print(f"{recipe.stem:28s} {label:10s} {tag}: {proc.stdout.strip()[:120]} "
                          f"({time.time() - t0:.0f}s)", flush=True)
                s = json.loads((run_dir / "summary.json").read_text())
                rows.append({"recipe": recipe.stem, "variant": label, "seed": seed, "metric": s["metric"],
                             "test": s["test_metric"], "val": s["val_metric"],
                             "val_loss": s.get("val_loss", math.nan), "best_epoch": s["best_epoch"],
                             "epoch_seconds": s["median_epoch_seconds"], "peak_memory_mb": s["peak_memory_mb"],
                             "published": quoted[recipe]})

    with open(args.out / f"{args.name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["recipe"])
        w.writeheader()
        w.writerows(rows)
    summary = []
    for recipe in args.recipes:
        for label, _ in variants:
            sel = [r for r in rows if r["recipe"] == recipe.stem and r["variant"] == label]
            if not sel:
                continue
            tests = [100 * r["test"] for r in sel]
            summary.append({
                "recipe": recipe.stem, "variant": label, "metric": sel[0]["metric"], "runs": len(sel),
                "protocol": protocols.get(recipe.stem, "seeds " + " ".join(map(str, args.seeds))),
                "test_mean": statistics.mean(tests), "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                "val_mean": statistics.mean(100 * r["val"] for r in sel),
                "val_loss_mean": statistics.mean(r["val_loss"] for r in sel),
                "published": sel[0]["published"],
                "epoch_seconds": statistics.median(r["epoch_seconds"] for r in sel),
                "peak_memory_mb": max(r["peak_memory_mb"] for r in sel)})
    with open(args.out / f"{args.name}-summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]) if summary else ["recipe"])
        w.writeheader()
        w.writerows(summary)
    print(f"\n{'recipe':28s} {'variant':10s} {'metric':9s} {'runs':>4s} {'test (mean +- std)':>20s} "
          f"{'published':>9s} {'val':>6s} {'val loss':>8s} {'s/epoch':>8s} {'peak MB':>8s}")
    for s in summary:
        print(f"{s['recipe']:28s} {s['variant']:10s} {s['metric']:9s} {s['runs']:4d} "
              f"{s['test_mean']:12.2f} +- {s['test_std']:5.2f} {s['published']:>9s} "
              f"{s['val_mean']:6.2f} {s['val_loss_mean']:8.4f} "
              f"{s['epoch_seconds']:8.3f} {s['peak_memory_mb']:8.0f}")
    if len(args.recipes) > 1 and summary:
        side_by_side(summary, identities, args.out / f"{args.name}-table.csv")
    if args.paired_with is not None:
        paired = paired_differences(rows, args.paired_with)
        with open(args.out / f"{args.name}-paired.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(paired[0]) if paired else ["recipe"])
            w.writeheader()
            w.writerows(paired)
        print(f"\nseed by seed against {args.paired_with!r} (mean difference +- standard error)")
        print(f"{'recipe':28s} {'variant':10s} {'seeds':>5s} {'val (points)':>18s} {'val loss':>20s}")
        for p in paired:
            print(f"{p['recipe']:28s} {p['variant']:10s} {p['seeds']:5d} "
                  f"{p['val_diff']:+8.2f} +- {p['val_diff_se']:5.2f} {p['val_loss_diff']:+9.4f} +- {p['val_loss_diff_se']:6.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
