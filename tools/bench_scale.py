"""Memory and time of every stage of a scale recipe at several graph sizes: what is resident, what is
transient, and what grows with N.

    tools/in-venv python tools/bench_scale.py recipes/scale/rbtransformer_csbm10m.yaml \\
        recipes/scale/spexphormer_csbm10m.yaml --sizes 1000000 3000000 10000000

Each (recipe, size) runs in a fresh process (``--set dataset.params.num_nodes=N``), on the recipe's
own builders, through these stages:

- ``data``: load and transforms (generation, expander and self-loop edges);
- ``model``: the model (and a two-stage recipe's estimator) built;
- two-stage recipes only: ``stage1 step`` (full-graph forward, backward and optimizer step, twice;
  with ``stage1.train.batching: neighbor``, ``--steps`` sampled batches), ``stage1 eval`` (one
  forward without gradients; layer by layer when mini-batched), ``stage1 scores`` (the per-layer
  scores, then the estimator's cached graph layout dropped, as the pipeline does);
- ``sampler``: the recipe's batching prepared (Spexphormer: the sampler and its draws);
- ``step``: ``--steps`` training batches (forward, backward, optimizer step);
- ``eval``: one evaluation pass over all nodes, keeping the logits as the training loop does.

Per stage: ``resident`` is the process's resident memory after the stage minus after the imports
(``anon``: its anonymous part, which excludes memory-mapped files such as
``memory_map_features``);
``transient`` the peak during the stage minus the resident memory before it (the kernel's peak
counter is reset between stages); bytes per node and per edge of the stage's resident growth;
seconds. The table ends with the log-log slope over the sizes of each stage's peak. Writes
``scale.csv`` and ``scale.png`` (peak per stage against N) under ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(recipe_path: str, num_nodes: int, steps: int, overrides: list[str] = ()) -> list[dict]:
    """Run the stages in this process; one row per stage."""
    import torch
    import torch.nn.functional as F

    from dgl_rbgt.config import load_recipe
    from dgl_rbgt.train.builders import build_batching, build_estimator, build_model, is_two_stage, prepare_dataset
    from dgl_rbgt.models.spexphormer import INFERENCE_ROWS
    from dgl_rbgt.train.two_stage import stage1_batching, stage1_view
    from dgl_rbgt.utils.memory import peak_rss_mb, reset_peak_rss, rss_mb, rss_parts_mb

    recipe = load_recipe(recipe_path, [*overrides, f"dataset.params.num_nodes={num_nodes}"])
    torch.set_num_threads(recipe.train.threads or torch.get_num_threads())
    torch.manual_seed(recipe.seed)
    base = rss_mb()
    base_anon = rss_parts_mb().get("anon", 0.0)
    rows: list[dict] = []
    sizes = {}

    class Stage:
        def __init__(self, name: str):
            self.name = name

        def __enter__(self):
            self.before = rss_mb()
            reset_peak_rss()
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            if exc[0] is not None:
                return False
            after, peak = rss_mb(), peak_rss_mb()
            grown = (after - self.before) * 2**20
            rows.append({"stage": self.name, "seconds": round(time.perf_counter() - self.start, 2),
                         "resident_mb": round(after - base), "transient_mb": round(max(peak - self.before, 0.0)),
                         "anon_mb": round(rss_parts_mb().get("anon", 0.0) - base_anon),
                         "peak_mb": round(max(peak, after) - base),
                         "grown_bytes_per_node": round(grown / sizes.get("nodes", num_nodes), 1),
                         "grown_bytes_per_edge": round(grown / sizes["edges"], 2) if "edges" in sizes else ""})
            print(f"  {self.name:14s} resident {rows[-1]['resident_mb']:7d} MB  transient "
                  f"{rows[-1]['transient_mb']:6d} MB  {rows[-1]['seconds']:7.1f} s", flush=True)

    with Stage("data"):
        dataset, graph = prepare_dataset(recipe)
        sizes.update(nodes=graph.num_nodes(), edges=graph.num_edges())
    labels, train_mask = graph.ndata["label"], graph.ndata["train_mask"]
    in_feats = graph.ndata["feat"].shape[1]
    with Stage("model"):
        model = build_model(recipe, in_feats, dataset.num_classes)
        estimator = build_estimator(recipe, in_feats, dataset.num_classes) if is_two_stage(recipe) else None
    del dataset  # the graph is all the stages below need
    inputs = {}
    if estimator is not None:
        feat = graph.ndata["feat"]
        g1 = stage1_view(graph)  # as the pipeline does: stage 1's sparse formats go with it
        optimizer = torch.optim.Adam(estimator.parameters(), lr=recipe.stage1.train.lr)
        mini_batched = recipe.stage1.train.batching != "full"
        with Stage("stage1 step"):
            if mini_batched:  # sampled neighbourhoods: `steps` batches
                batches = stage1_batching(recipe, g1, torch.device("cpu")).train_batches(
                    torch.nonzero(train_mask, as_tuple=True)[0], 0)
                losses = (F.cross_entropy(b.run(estimator), labels[b.output_nodes])
                          for b in itertools.islice(batches, steps))
                del batches  # held by the generator alone: it goes with `losses`
            else:  # two full-graph steps: the first one also builds the cached sparse layout
                losses = (F.cross_entropy(estimator(g1, feat)[train_mask], labels[train_mask]) for _ in range(2))
            for loss in losses:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                del loss
            del losses  # and with it the sampler
        with Stage("stage1 eval"), torch.no_grad():
            estimator.eval()
            logits = estimator.layerwise_inference(g1, feat) if mini_batched else estimator(g1, feat)
            del logits
        with Stage("stage1 scores"):
            inputs["scores"] = estimator.attention_scores(g1, feat, rows=INFERENCE_ROWS if mini_batched else None)
            estimator.clear_cache()
        del optimizer, estimator, g1
    with Stage("sampler"):
        batching = build_batching(recipe, graph, torch.device("cpu"), **inputs)
        inputs.clear()
        graph = batching.graph  # as the pipeline does: one copy of the edges when it keeps another format
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.train.lr)
    train_nodes = torch.nonzero(train_mask, as_tuple=True)[0]
    model.train()
    with Stage("step"):
        for i, batch in enumerate(batching.train_batches(train_nodes, 0)):
            if i == steps:
                break
            logits = batch.run(model)
            keep = train_mask[batch.output_nodes]
            loss = F.cross_entropy(logits[keep], labels[batch.output_nodes[keep]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            del logits, loss
    model.eval()
    with Stage("eval"), torch.no_grad():
        outs = [(batch.output_nodes, batch.run(model)) for batch in batching.eval_batches(torch.arange(graph.num_nodes()))]
    del outs
    for row in rows:
        row.update(recipe=recipe.name, nodes=sizes["nodes"], edges=sizes["edges"])
    return rows


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1.0)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / den if den else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="*", help="recipe files (a dataset with a num_nodes parameter)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--steps", type=int, default=5, help="training batches in the step stage")
    parser.add_argument("--out", default="bench-results/scale", help="folder for scale.csv and scale.png")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override for every run, as the CLI's --set (repeatable)")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the tables, CSV and PNG from the per-run JSON files already in --out")
    parser.add_argument("--worker", nargs=3, metavar=("RECIPE", "N", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        recipe, n, out = args.worker
        Path(out).write_text(json.dumps(worker(recipe, int(n), args.steps, args.overrides)))
        return 0
    if args.report_only:
        parts = sorted(Path(args.out).glob("*.json"), key=lambda p: (p.stem.rsplit("-", 1)[0], int(p.stem.rsplit("-", 1)[1])))
        if not parts:
            print(f"bench_scale: no per-run JSON files in {args.out}", file=sys.stderr)
            return 2
        return report([row for p in parts for row in json.loads(p.read_text())], Path(args.out))
    if not args.recipes:
        parser.error("give at least one recipe")
    for recipe in args.recipes:
        if not Path(recipe).is_file():
            print(f"bench_scale: recipe {recipe} not found", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for recipe in args.recipes:
        for n in args.sizes:
            print(f"{recipe} at {n:,} nodes", flush=True)
            part = out / f"{Path(recipe).stem}-{n}.json"
            cmd = [sys.executable, __file__, "--worker", recipe, str(n), str(part), "--steps", str(args.steps),
                   *(f"--set={o}" for o in args.overrides)]
            done = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ))
            if done.returncode != 0:
                print(f"  failed (exit {done.returncode}); see the output above", flush=True)
                continue
            rows += json.loads(part.read_text())
    if not rows:
        return 1
    return report(rows, out)


def report(rows: list[dict], out: Path) -> int:
    """Print the tables and write ``scale.csv`` and ``scale.png`` under ``out``."""
    fields = ["recipe", "nodes", "edges", "stage", "resident_mb", "anon_mb", "transient_mb", "peak_mb", "seconds",
              "grown_bytes_per_node", "grown_bytes_per_edge"]
    with open(out / "scale.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)
    print("\n| recipe | N | E | stage | resident MB | of which anonymous | transient MB | peak MB | s | B/node grown | B/edge grown |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['recipe']} | {r['nodes']:,} | {r['edges']:,} | {r['stage']} | {r['resident_mb']:,} | {r.get('anon_mb', '')} | "
              f"{r['transient_mb']:,} | {r['peak_mb']:,} | {r['seconds']} | {r['grown_bytes_per_node']} | "
              f"{r['grown_bytes_per_edge']} |")
    print("\n| recipe | stage | log-log slope of peak over N |")
    print("|---|---|---|")
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in rows:
        series.setdefault((r["recipe"], r["stage"]), []).append((r["nodes"], r["peak_mb"]))
    for (recipe, stage), pts in series.items():
        if len(pts) > 1:
            print(f"| {recipe} | {stage} | {slope([p[0] for p in pts], [p[1] for p in pts]):.2f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (recipe, stage), pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{recipe}: {stage}")
    ax.set(xscale="log", yscale="log", xlabel="nodes", ylabel="peak resident MB (above imports)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "scale.png", dpi=120)
    print(f"\nwrote {out / 'scale.csv'} and {out / 'scale.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
