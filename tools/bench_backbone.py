"""Benchmark the GPS backbone beside RBTransformer and the tuned classic GNNs at the same width.

Every model gets the same width (``--hidden``) and the same number of message-passing layers
(``--layers``): the tuned GCN and SAGE (learned linear residual, batch norm), the GPS backbone in
the form its recipes use (tuned block, learned ego path, GCN local part, no feed-forward block) with
each global attention in every ``--attention-every``-th layer, and RBTransformer (one attention
layer beside a GCN branch of ``--layers`` layers). A step is one full-graph training step (forward,
cross-entropy on the training nodes, backward, Adam update): for these full-graph models, one
epoch. Each (dataset, model) runs in a fresh process; the table shows the median step and the
median evaluation forward over ``--repeats`` timed runs after one warm-up, and the peak resident
memory of the steps above the process's memory before them (graph, features and model already
loaded), beside the ratio to the first model of the run (the tuned GCN by default).

    DGL_RBGT_DATA=../shared/data tools/in-venv python tools/bench_backbone.py
    DGL_RBGT_DATA=../shared/data tools/in-venv python tools/bench_backbone.py --datasets photo \\
        --hidden 128 --layers 2 --threads 2

``csbm`` is the generated graph (``--csbm-nodes`` nodes, average degree 10, 64 features), the
others are read from the data root as their recipes read them. Writes ``bench_backbone.csv`` and
``bench_backbone.png`` into ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Model name -> the recipe's ``model`` section apart from width and depth.
MODELS = {
    "gcn": {"name": "gcn", "residual": "linear", "norm": "batch", "head": "linear", "dropout": 0.2},
    "sage": {"name": "sage", "residual": "linear", "norm": "batch", "head": "linear", "dropout": 0.2},
    **{f"gps-{attention}": {"name": "gps", "block": "tuned", "ego": True, "local": "gcn", "ffn": False,
                            "norm": "batch", "num_heads": 4, "dropout": 0.2, "attention": attention}
       for attention in ("none", "rba", "sgformer", "memory")},
    **{f"rbt-{attention}": {"name": "rbtransformer", "attention": attention, "dropout": 0.2}
       for attention in ("rba", "sgformer")},
}
DEFAULT_MODELS = ("gcn", "sage", "gps-none", "gps-rba", "gps-sgformer", "rbt-rba", "rbt-sgformer")

#: Dataset name -> the recipe's ``dataset`` section and transforms (as the dataset's recipes).
DATASETS = {
    "minesweeper": ({"name": "minesweeper", "split": 0}, []),
    "tolokers": ({"name": "tolokers", "split": 0}, []),
    "photo": ({"name": "photo", "seed": 0}, [{"name": "normalize_features"}]),
    "cs": ({"name": "cs", "seed": 0}, [{"name": "normalize_features"}]),
    "csbm": ({"name": "csbm", "seed": 0}, []),
}


def model_section(model: str, hidden: int, layers: int, attention_every: int) -> dict:
    """The recipe's ``model`` section for one benchmarked model."""
    section = dict(MODELS[model], hidden=hidden)
    if section["name"] == "rbtransformer":
        section["gnn_layers"] = layers
    else:
        section["layers"] = layers
    if section["name"] == "gps" and section["attention"] != "none":
        section["attention_every"] = attention_every
    return section


def recipe_dict(dataset: str, model: str, hidden: int, layers: int, attention_every: int,
                csbm_nodes: int) -> dict:
    """The whole recipe of one (dataset, model) configuration."""
    section, transforms = DATASETS[dataset]
    section = dict(section)
    if dataset == "csbm":
        section["params"] = {"num_nodes": csbm_nodes, "num_classes": 5, "avg_degree": 10.0,
                             "feature_dim": 64, "homophily": 0.7}
    return {"name": f"bench_{dataset}_{model}", "seed": 0, "dataset": section, "transforms": transforms,
            "model": model_section(model, hidden, layers, attention_every)}


def worker(args) -> None:
    """One configuration, in its own process: print one JSON line."""
    import torch
    import torch.nn.functional as F

    from dgl_rbgt.config import parse_recipe
    from dgl_rbgt.train.builders import build_model, prepare_dataset
    from dgl_rbgt.utils.memory import peak_rss_mb, reset_peak_rss, rss_mb

    torch.set_num_threads(args.threads)
    recipe = parse_recipe(json.loads(args.recipe_json))
    dataset, g = prepare_dataset(recipe)
    feat, labels = g.ndata["feat"], g.ndata["label"]
    train = g.ndata["train_mask"].nonzero().squeeze(1)
    torch.manual_seed(0)
    model = build_model(recipe, feat.shape[1], dataset.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    params = sum(p.numel() for p in model.parameters())

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(g, feat)[train], labels[train]).backward()
        opt.step()

    def evaluate():
        model.eval()
        with torch.no_grad():
            model(g, feat)

    before = rss_mb()
    exact = reset_peak_rss()  # the data stage's peak must not hide the steps' (Linux)
    steps, evals = [], []
    for i in range(args.repeats + 1):
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        evaluate()
        t2 = time.perf_counter()
        if i:  # the first round is a warm-up
            steps.append(t1 - t0)
            evals.append(t2 - t1)
    print(json.dumps({"nodes": g.num_nodes(), "edges": g.num_edges(), "params": params,
                      "step_s": statistics.median(steps), "eval_s": statistics.median(evals),
                      "peak_mb": peak_rss_mb() - before if exact else float("nan")}))


def run_config(args, dataset: str, model: str) -> dict:
    recipe = recipe_dict(dataset, model, args.hidden, args.layers, args.attention_every, args.csbm_nodes)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--recipe-json", json.dumps(recipe),
           "--threads", str(args.threads), "--repeats", str(args.repeats)]
    row = {"dataset": dataset, "model": model, "hidden": args.hidden, "layers": args.layers}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.config_timeout, cwd=ROOT,
                              env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return {**row, "status": f"timeout {args.config_timeout}s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {**row, "status": f"failed: {tail[:120]}"}
    return {**row, **json.loads(lines[-1]), "status": "ok"}


def add_ratios(rows: list[dict]) -> None:
    """Step time and peak memory relative to the first model that ran on the same dataset."""
    reference: dict[str, dict] = {}
    for r in rows:
        if r["status"] != "ok":
            continue
        ref = reference.setdefault(r["dataset"], r)
        r["step_ratio"] = r["step_s"] / ref["step_s"]
        r["peak_ratio"] = r["peak_mb"] / ref["peak_mb"] if ref["peak_mb"] > 0 else float("nan")


def format_table(rows: list[dict]) -> list[str]:
    head = (f"{'dataset':>12} {'model':>13} {'nodes':>9} {'params':>9} {'step ms':>9} {'x first':>8} "
            f"{'eval ms':>9} {'peak MB':>8} {'x first':>8}  status")
    lines = [head]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r['dataset']:>12} {r['model']:>13} {'':>9} {'':>9} {'':>9} {'':>8} {'':>9} "
                         f"{'':>8} {'':>8}  {r['status']}")
            continue
        lines.append(f"{r['dataset']:>12} {r['model']:>13} {r['nodes']:>9,} {r['params']:>9,} "
                     f"{1e3 * r['step_s']:>9.1f} {r['step_ratio']:>7.2f}x {1e3 * r['eval_s']:>9.1f} "
                     f"{r['peak_mb']:>8.0f} {r['peak_ratio']:>7.2f}x  ok")
    return lines


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    datasets = list(dict.fromkeys(r["dataset"] for r in ok))
    models = list(dict.fromkeys(r["model"] for r in ok))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / max(1, len(models))
    for j, model in enumerate(models):
        for ax, key, scale in ((axes[0], "step_s", 1e3), (axes[1], "peak_mb", 1.0)):
            xs = [i + j * width for i, d in enumerate(datasets)
                  if any(r["dataset"] == d and r["model"] == model for r in ok)]
            ys = [scale * r[key] for d in datasets for r in ok if r["dataset"] == d and r["model"] == model]
            ax.bar(xs, ys, width, label=model)
    for ax, title in zip(axes, ("training step (ms)", "peak memory of the steps (MB)")):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(datasets))], datasets)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["minesweeper", "photo", "csbm"], choices=sorted(DATASETS))
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=sorted(MODELS),
                    help="the first one is the reference of the ratio columns")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--attention-every", type=int, default=1)
    ap.add_argument("--csbm-nodes", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config-timeout", type=float, default=1800.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "backbone")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--recipe-json", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    for name in ("hidden", "layers", "attention_every", "csbm_nodes", "repeats", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    print(f"width {args.hidden}, {args.layers} layers, attention every {args.attention_every}, "
          f"{args.threads} thread(s), median of {args.repeats} (after a warm-up)", flush=True)
    rows = []
    for dataset in args.datasets:
        for model in args.models:
            rows.append(run_config(args, dataset, model))
            r = rows[-1]
            done = f"{1e3 * r['step_s']:.1f} ms/step, peak {r['peak_mb']:.0f} MB" if r["status"] == "ok" else r["status"]
            print(f"  {dataset} {model}: {done}", flush=True)
    add_ratios(rows)
    print("\n".join(format_table(rows)))
    args.out.mkdir(parents=True, exist_ok=True)
    fields = ["dataset", "model", "hidden", "layers", "nodes", "edges", "params", "step_s", "step_ratio",
              "eval_s", "peak_mb", "peak_ratio", "status"]
    with open(args.out / "bench_backbone.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    if any(r["status"] == "ok" for r in rows):
        plot(rows, args.out / "bench_backbone.png")
    print(f"CSV and PNG in {args.out}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
