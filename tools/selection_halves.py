"""Compare model-selection rules using the validation set only (split-half check).

Picking the epoch of best validation accuracy over a long, noisy plateau favours the epoch where
the noise was kindest, so a higher best-validation number need not mean a better model. This
tool asks, without looking at test labels, which rule picks better epochs: it trains a recipe
for every epoch (no early stopping) and keeps, per epoch, each validation node's correctness and
loss. Offline it splits the validation nodes at random into halves A and B, picks the epoch on A
by each rule and scores that epoch's accuracy on B, averaged over many random halvings. It never
reads test labels. Rules: ``accuracy`` (first epoch of highest accuracy, the trainer's
``select_by: metric``), ``loss`` (lowest cross-entropy, ``select_by: loss``), and accuracy
smoothed over a trailing or centred window of epochs.

    DGL_RBGT_DATA=../shared/data tools/in-venv python tools/selection_halves.py \\
        recipes/rba/rbtransformer_cora.yaml --seeds 0 1 2 3 4 --set model.attention=rba

Prints a table (each rule's held-out accuracy and its paired difference from ``accuracy``) and
writes bench-results/selection/<name>.csv (one row per seed and rule) and each seed's record as
<name>_seed<k>_<digest of recipe text and options>.npy (read back instead of training with --reuse).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dgl_rbgt.config import load_recipe
from dgl_rbgt.train import loop, pipeline


def _window_mean(curve: np.ndarray, before: int, after: int) -> np.ndarray:
    """Mean of each epoch's value with up to ``before`` epochs before it and ``after`` after it."""
    c = np.concatenate([[0.0], np.cumsum(curve)])
    idx = np.arange(len(curve))
    lo = np.maximum(idx - before, 0)
    hi = np.minimum(idx + after + 1, len(curve))
    return (c[hi] - c[lo]) / (hi - lo)


def _trailing_mean(curve: np.ndarray, window: int) -> np.ndarray:
    """Mean of each epoch's value and the window - 1 before it (fewer at the start)."""
    return _window_mean(curve, window - 1, 0)


def _centred_mean(curve: np.ndarray, window: int) -> np.ndarray:
    """Mean over the window centred on each epoch (clipped at both ends)."""
    return _window_mean(curve, window // 2, window // 2)


# rule name -> (row of the record it reads: 0 correctness / 1 loss, curve -> chosen epoch)
RULES = {
    "accuracy": (0, lambda acc: int(np.argmax(acc))),
    "loss": (1, lambda loss: int(np.argmin(loss))),
    **{f"accuracy_trailing{w}": (0, lambda acc, w=w: int(np.argmax(_trailing_mean(acc, w)))) for w in (5, 10, 20)},
    **{f"accuracy_centred{w}": (0, lambda acc, w=w: int(np.argmax(_centred_mean(acc, w)))) for w in (5, 11, 21)},
}


def record_validation(recipe_path: str, seed: int, overrides: list[str]) -> np.ndarray:
    """Train every epoch; returns (epochs, 2, n_val): per-node correctness and loss on validation."""
    recipe = load_recipe(recipe_path, [*overrides, f"seed={seed}", "train.patience=null",
                                       "output.plot=false", "output.checkpoint_every=1000000"])
    rows = []
    gather = loop.Trainer.gather_logits

    def recording_gather(self, nodes):  # the Trainer's one evaluation pass, read on the way out
        ids, logits = gather(self, nodes)
        pos = torch.full((len(self.labels),), -1, dtype=torch.long, device=ids.device)
        pos[ids] = torch.arange(len(ids), device=ids.device)
        val = self.splits["val"]
        lg, y = logits[pos[val]].float(), self.labels[val]
        rows.append(torch.stack([(lg.argmax(-1) == y).double(),
                                 F.cross_entropy(lg, y, reduction="none").double()]).cpu().numpy())
        return ids, logits

    loop.Trainer.gather_logits = recording_gather
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pipeline.run_recipe(recipe, run_dir=Path(tmp) / "run", progress=False)
    finally:
        loop.Trainer.gather_logits = gather
    return np.stack(rows)


def held_out_scores(record: np.ndarray, halvings: int, rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    """Per rule: (mean held-out-half accuracy, median chosen epoch) over random halvings, both ways."""
    n = record.shape[2]
    scores: dict[str, list[float]] = {r: [] for r in RULES}
    epochs: dict[str, list[int]] = {r: [] for r in RULES}
    for _ in range(halvings):
        perm = rng.permutation(n)
        for a, b in ((perm[: n // 2], perm[n // 2:]), (perm[n // 2:], perm[: n // 2])):
            for rule, (row, choose) in RULES.items():
                e = choose(record[:, row, a].mean(1))
                scores[rule].append(float(record[e, 0, b].mean()))
                epochs[rule].append(e)
    return {r: (float(np.mean(scores[r])), float(np.median(epochs[r]))) for r in RULES}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--set", action="append", default=[], help="override applied to every run")
    p.add_argument("--halvings", type=int, default=200)
    p.add_argument("--out", default="bench-results/selection")
    p.add_argument("--name", default="selection")
    p.add_argument("--reuse", action="store_true",
                   help="read a seed's record saved by an earlier run of the same recipe text and options")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    table = []
    overrides = ["train.threads=1", *args.set]
    # records are saved per recipe text and overrides (a changed recipe trains again) and seed
    key = hashlib.sha256(Path(args.recipe).read_bytes() + "\0".join(overrides).encode()).hexdigest()[:12]
    for seed in args.seeds:
        cached = out / f"{args.name}_seed{seed}_{key}.npy"
        if args.reuse and cached.exists():
            record = np.load(cached)  # a plain float array: no pickle
        else:
            record = record_validation(args.recipe, seed, overrides)
            np.save(cached, record)
        scores = held_out_scores(record, args.halvings, rng)
        for rule, (acc, epoch) in scores.items():
            table.append({"seed": seed, "rule": rule, "held_out_accuracy": acc, "median_epoch": epoch})
        print(f"seed {seed}: " + "  ".join(f"{r} {100 * a:.2f} (epoch {e:.0f})" for r, (a, e) in scores.items()),
              flush=True)
    with open(out / f"{args.name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    base = {r["seed"]: 100 * r["held_out_accuracy"] for r in table if r["rule"] == "accuracy"}
    print(f"\n{'rule':20s} {'held-out half accuracy':>23s} {'minus accuracy rule (± s.e.)':>30s}   per seed")
    for rule in RULES:
        accs = {r["seed"]: 100 * r["held_out_accuracy"] for r in table if r["rule"] == rule}
        diff = np.array([accs[s] - base[s] for s in args.seeds])
        se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        print(f"{rule:20s} {np.mean(list(accs.values())):23.2f} {diff.mean():+22.2f} ± {se:.2f}   "
              + " ".join(f"{a:.2f}" for a in accs.values()))
    print(f"wrote {out / (args.name + '.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
