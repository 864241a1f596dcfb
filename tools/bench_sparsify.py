"""Throughput of dgl_rbgt.sampling (edges per second) on random graphs.

    tools/in-venv python tools/bench_sparsify.py                      # 1M, 10M, 50M edges
    tools/in-venv python tools/bench_sparsify.py --sizes 1e6 --repeats 5

For each size a random graph with ``E`` edges and ``E / degree`` nodes (uniform endpoints) and
uniform random scores is drawn once; each method then runs ``repeats`` times, alternating
methods within a repeat (the machine is shared and noisy). ``reservoir_redraw`` is one draw of a
prepared :class:`~dgl_rbgt.sampling.Sparsifier` (what a training loop pays per epoch;
the preparation is timed apart as ``prepare``). ``peak MB`` is the peak resident memory above
the memory before the call (Linux' resettable peak counter). DGL's
``sample_neighbors(prob=..., replace=False)`` runs as a peer for scale only: it samples a
different law and gives nodes with fewer than k candidates fewer entries. Prints a table last
and writes every timing to ``bench-results/sparsify/sparsify.csv``.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import time
from pathlib import Path

import dgl
import torch

from dgl_rbgt.sampling import Sparsifier, sparsify
from dgl_rbgt.utils.memory import peak_rss_mb as peak_mb, reset_peak_rss as reset_peak, rss_mb

METHODS = ("reservoir", "topk", "uniform", "prepare", "reservoir_redraw", "dgl_sample_neighbors")


def random_graph(num_edges: int, degree: int, seed: int) -> tuple[dgl.DGLGraph, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    num_nodes = max(1, num_edges // degree)
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    dst = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    g = dgl.graph((src, dst), num_nodes=num_nodes)
    return g, torch.rand(num_edges, generator=gen)


def run_once(method: str, g: dgl.DGLGraph, scores: torch.Tensor, k: int, seed: int,
             prepared: Sparsifier | None = None) -> tuple[float, float]:
    """Seconds and peak MB (above the RSS before the call) of one call."""
    before = rss_mb()
    reset_peak()
    t0 = time.perf_counter()
    if method == "dgl_sample_neighbors":
        dgl.seed(seed)
        out = dgl.sampling.sample_neighbors(g, torch.arange(g.num_nodes()), k, prob="w", replace=False)
    elif method == "prepare":
        out = Sparsifier(g, scores)
    elif method == "reservoir_redraw":
        out = prepared.draw(k, generator=torch.Generator().manual_seed(seed))
    else:
        out = sparsify(g, scores, k, method=method, generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - t0
    peak = peak_mb() - before
    del out
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7, 5e7], help="edge counts")
    parser.add_argument("--degree", type=int, default=20, help="mean in-degree (sets the node count)")
    parser.add_argument("--k", type=int, default=10, help="entries per node")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/sparsify"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    args.out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} threads"
    print(f"sparsify throughput: k={args.k}, mean in-degree {args.degree}; {machine}", flush=True)

    rows = []
    for size in args.sizes:
        num_edges = int(size)
        g, scores = random_graph(num_edges, args.degree, seed=0)
        g.edata["w"] = scores
        # Warm-up on a small slice of the work (first-call allocations, thread pools).
        run_once(args.methods[0], *random_graph(min(num_edges, 100_000), args.degree, 1), args.k, 0)
        prepared = Sparsifier(g, scores) if "reservoir_redraw" in args.methods else None
        for rep in range(args.repeats):
            for method in args.methods:
                seconds, peak = run_once(method, g, scores, args.k, seed=rep, prepared=prepared)
                rows.append({"edges": num_edges, "nodes": g.num_nodes(), "k": args.k, "method": method,
                             "repeat": rep, "seconds": seconds, "edges_per_second": num_edges / seconds,
                             "peak_mb": peak, "threads": threads})
                print(f"  E={num_edges:>11,d} {method:<22s} rep {rep}: {seconds:8.3f} s, peak {peak:8.0f} MB",
                      flush=True)
        del g, scores, prepared

    path = args.out / "sparsify.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    print(f"\nwrote {path}\n")
    header = (f"{'edges':>12} {'method':<22} {'median s':>9} {'min s':>8} {'max s':>8} {'Medges/s':>9} "
              f"{'peak MB':>8}")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for method in args.methods:
            runs = [r for r in rows if r["edges"] == int(size) and r["method"] == method]
            times = [r["seconds"] for r in runs]
            med = statistics.median(times)
            print(f"{int(size):>12,d} {method:<22} {med:9.3f} {min(times):8.3f} {max(times):8.3f} "
                  f"{int(size) / med / 1e6:9.2f} {max(r['peak_mb'] for r in runs):8.0f}")


if __name__ == "__main__":
    main()
