"""Benchmark ``sparse_features``: one full-graph training step of each model on Coauthor CS with the
first layer's products dense and sparse (CPU).

CS has 18,333 nodes and 6,805 bag-of-words columns, 0.9% non-zero. Every model is built from its
recipe (the recipe's width and depth), once with ``model.sparse_features=false`` and once with
``true``, with the same initial weights; a step is forward, cross-entropy on the training nodes,
backward and an Adam update. The two variants alternate within each round; the table shows the
median over the timed rounds (the first round is a warm-up), the ratio dense / sparse and the
largest difference between the two models' logits in evaluation mode (the same function up to
float rounding).

    DGL_RBGT_DATA=../shared/data tools/in-venv python tools/bench_sparse_features.py
    DGL_RBGT_DATA=../shared/data tools/in-venv python tools/bench_sparse_features.py --rounds 3 --threads 2

Writes ``bench-results/sparse-features/bench_sparse_features.csv`` (one row per timed step) and
``summary.csv`` (the table).
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = (
    "recipes/baselines/sage_cs.yaml",
    "recipes/baselines/gat_cs.yaml",
    "recipes/gps/gps_cs.yaml",
    "recipes/rba/rbtransformer_cs.yaml",
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES))
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up round)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "sparse-features")
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from dgl_rbgt.config import load_recipe
    from dgl_rbgt.train.builders import build_model, prepare_dataset

    torch.set_num_threads(args.threads)
    rows, table = [], []
    for path in args.recipes:
        # Each recipe's own graph and features (its transforms: normalised features, self-loops).
        recipes = {s: load_recipe(ROOT / path, [f"model.sparse_features={str(s).lower()}"]) for s in (False, True)}
        dataset, g = prepare_dataset(recipes[False])
        feat, labels = g.ndata["feat"], g.ndata["label"]
        train = g.ndata["train_mask"].nonzero().squeeze(1)
        if not table:
            density = float((feat != 0).float().mean())
            print(f"{dataset.name}: {g.num_nodes():,} nodes, {feat.shape[1]:,} columns, {100 * density:.2f}% "
                  f"non-zero, {args.threads} thread(s)")
        models = {}
        for sparse, recipe in recipes.items():
            torch.manual_seed(0)
            models[sparse] = build_model(recipe, feat.shape[1], dataset.num_classes)
        models[True].load_state_dict(models[False].state_dict())
        with torch.no_grad():
            diff = float((models[False].eval()(g, feat) - models[True].eval()(g, feat)).abs().max())
        optims = {s: torch.optim.Adam(m.parameters(), lr=1e-3) for s, m in models.items()}
        times = {False: [], True: []}
        for r in range(args.rounds + 1):
            for sparse in ((False, True) if r % 2 == 0 else (True, False)):
                model, opt = models[sparse].train(), optims[sparse]
                start = time.perf_counter()
                loss = F.cross_entropy(model(g, feat)[train], labels[train])
                opt.zero_grad()
                loss.backward()
                opt.step()
                seconds = time.perf_counter() - start
                if r:
                    times[sparse].append(seconds)
                    rows.append({"recipe": recipe.name, "sparse_features": sparse, "round": r, "seconds": seconds})
        dense_s, sparse_s = statistics.median(times[False]), statistics.median(times[True])
        table.append({"recipe": recipe.name, "model": recipe.model.name, "hidden": recipe.model.hidden,
                      "dense_s": round(dense_s, 4), "sparse_s": round(sparse_s, 4),
                      "ratio": round(dense_s / sparse_s, 2), "max_logit_diff": f"{diff:.1e}"})
        print(f"  {recipe.name}: dense {dense_s:.3f} s, sparse {sparse_s:.3f} s", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in (("bench_sparse_features.csv", rows), ("summary.csv", table)):
        with open(args.out / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(data[0]))
            writer.writeheader()
            writer.writerows(data)
    print()
    print(f"{'recipe':<20} {'model':<14} {'hidden':>6} {'dense s':>8} {'sparse s':>9} {'ratio':>6} {'max |diff|':>10}")
    for t in table:
        print(f"{t['recipe']:<20} {t['model']:<14} {t['hidden']:>6} {t['dense_s']:>8.3f} {t['sparse_s']:>9.3f} "
              f"{t['ratio']:>6.2f} {t['max_logit_diff']:>10}")
    print(f"\nwrote {args.out / 'summary.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
