#!/usr/bin/env python
"""What glibc's allocator settings cost and save on one training step: time, peak and held memory.

Run by hand (not in CI):

    tools/in-venv python tools/bench_allocator.py --nodes 100000 --threads 1 2 --steps 8

One model (``--recipe``, default the 10M-node RBTransformer scale recipe's model, width 64) trains
on a batch of ``--nodes`` nodes with ``nodes / 10`` random edges and self-loops: the induced
subgraph of a 100k-node random batch of a degree-10, 10M-node graph keeps about 1% of its edges.
Every (allocator, threads) pair runs in a FRESH process, with ``GLIBC_TUNABLES`` set before it
starts (glibc reads it only then):

* ``adaptive``   glibc as it is: the mmap threshold starts at 128 KB and rises (up to 32 MB) to
                 the size of every mapped block that is freed, so a step's activations end up in
                 the heap, where freed blocks are kept and fragment;
* ``fixed``      ``glibc.malloc.mmap_threshold`` at ``--threshold-mb``: every block at least that
                 large is mapped on its own and returned when freed;
* ``fixed+thp``  the same, with ``glibc.malloc.hugetlb=1`` (transparent huge pages for those
                 mappings): what ``distributed.malloc_mmap_threshold_mb`` gives launched processes.

Reported per pair: the median step time over steps 2..n (the first step grows the heap), and,
above the resident set before the first step, the peak resident set during the steps (``VmHWM``)
and the resident set held after the last one. Prints a table last and writes ``allocator.csv`` and ``allocator.png``
under ``--out``.
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
sys.path.insert(0, str(ROOT))
ALLOCATORS = ("adaptive", "fixed", "fixed+thp")


def tunables(allocator: str, threshold_mb: int) -> str | None:
    """``GLIBC_TUNABLES`` for one allocator (None: unset)."""
    from dgl_rbgt.distributed.launcher import malloc_tunables

    if allocator == "adaptive":
        return None
    if allocator == "fixed":
        return f"glibc.malloc.mmap_threshold={threshold_mb * 1024 * 1024}"
    return malloc_tunables(threshold_mb)


# ----------------------------------------------------------------------------- worker

def worker(args) -> dict:
    import dgl
    import torch

    from dgl_rbgt.config.schema import load_recipe
    from dgl_rbgt.train.builders import build_model
    from dgl_rbgt.utils.memory import peak_rss_mb, reset_peak_rss, rss_mb

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.nodes
    model = build_model(load_recipe(args.recipe), args.feature_dim, args.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    src, dst = torch.randint(0, n, (2, n // 10))
    graph = dgl.add_self_loop(dgl.graph((src, dst), num_nodes=n))
    x = torch.randn(n, args.feature_dim)
    y = torch.randint(0, args.num_classes, (n,))
    model.train()
    start = rss_mb()
    seconds, peaks = [], []
    for _ in range(args.steps):
        if not reset_peak_rss():
            raise SystemExit("needs Linux's /proc/self/clear_refs to reset the peak resident set")
        t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(graph, x), y).backward()
        opt.step()
        seconds.append(time.perf_counter() - t0)
        peaks.append(peak_rss_mb() - start)
    return {"step_s": statistics.median(seconds[1:] or seconds), "first_step_s": seconds[0],
            "step_peak_mb": max(peaks), "held_mb": rss_mb() - start}


# ----------------------------------------------------------------------------- driver

def run_one(args, allocator: str, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    value = tunables(allocator, args.threshold_mb)
    if value:
        env["GLIBC_TUNABLES"] = value
    argv = [sys.executable, __file__, "--worker", "--recipe", args.recipe, "--nodes", str(args.nodes),
            "--steps", str(args.steps), "--feature-dim", str(args.feature_dim),
            "--num-classes", str(args.num_classes), "--threads", str(threads)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{allocator}, {threads} thread(s) failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"allocator": allocator, "threads": threads, "nodes": args.nodes,
            **{k: round(v, 3 if k.endswith("_s") else 1) for k, v in result.items()}}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    labels = [f"{r['allocator']}\n{r['threads']} thr" for r in rows]
    axes[0].bar(labels, [r["step_s"] for r in rows])
    axes[0].set_ylabel("step time (s)")
    axes[1].bar(labels, [r["step_peak_mb"] for r in rows], label="peak during a step")
    axes[1].bar(labels, [r["held_mb"] for r in rows], alpha=0.6, label="held after the steps")
    axes[1].set_ylabel("MB above the start")
    axes[1].legend()
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"one training step, {rows[0]['nodes']} nodes")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "scale" / "rbtransformer_csbm10m.yaml"),
                    help="the model to step (its model section; the data are generated)")
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--feature-dim", type=int, default=64)
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--allocators", nargs="+", default=list(ALLOCATORS), choices=ALLOCATORS)
    ap.add_argument("--threshold-mb", type=int, default=16, help="the fixed mmap threshold")
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "allocator"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.threads = args.threads[0]
        print(json.dumps(worker(args)))
        return 0
    if args.steps < 2:
        ap.error("--steps must be at least 2 (the first step is not timed)")
    for name in ("nodes", "feature_dim", "num_classes", "threshold_mb"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if min(args.threads) < 1:
        ap.error(f"--threads must be at least 1, got {min(args.threads)}")
    rows = [run_one(args, allocator, threads) for threads in args.threads for allocator in args.allocators]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "allocator.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "allocator.png")
    base = {r["threads"]: r for r in rows if r["allocator"] == "adaptive"}
    cols = ["allocator", "threads", "step_s", "first_step_s", "step_peak_mb", "held_mb"]
    print(f"\none training step of {Path(args.recipe).name}'s model, {args.nodes} nodes, fixed threshold "
          f"{args.threshold_mb} MB; MB above the resident set before the first step")
    print("  ".join(cols) + "  time / adaptive")
    for r in rows:
        ratio = f"{r['step_s'] / base[r['threads']]['step_s']:.2f}x" if r["threads"] in base else "-"
        print("  ".join(str(r[c]) for c in cols) + f"  {ratio}")
    print(f"CSV: {out / 'allocator.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
