"""Benchmark ExphormerConv against dgl.nn.GATConv and dgl.nn.DotGatConv (CPU, by hand).

Forward + backward time and peak memory of one layer at the same width and heads on the same
expander-augmented graph:

* ``photo``: Amazon Photo (7,650 nodes, 238,162 directed edges after symmetrising) + expander
  degree 3 (45,900 edges), read with numpy from ``$DGL_RBGT_DATA/gnn_benchmark/amazon-photo.zip``
  (default ``../shared/data`` beside the checkout);
* ``random-1m``: 1,000,000 nodes, 5M random pairs symmetrised (average degree 10) + expander
  degree 3 (6M edges).

Every (graph, layer) measurement runs in a fresh subprocess: peak memory is its
``ru_maxrss`` after the timed iterations minus its ``ru_maxrss`` after imports, loading the graph
(with all its sparse formats built) and allocating the inputs. Layers are alternated within each
round and the order rotates between rounds; the table shows medians over all timed iterations,
the min-max spread, time per (edge x head) and the ratio to GATConv, for wall-clock time and
for the process's CPU time (steadier when other jobs share the cores; with several threads it
also counts OpenMP spin-waiting). Inputs are fresh random features for every iteration.

    tools/in-venv python tools/bench_exphormer.py                 # both graphs, ~6-9 min
    tools/in-venv python tools/bench_exphormer.py --graphs photo --rounds 3
    tools/in-venv python tools/bench_exphormer.py --expander-nodes 10000000   # transform timing only

Writes ``bench-results/exphormer/bench_exphormer.csv`` (one row per timed iteration) and
``summary.csv`` (the table).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from dgl_rbgt.utils.memory import peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("gat", "dotgat", "exphormer")
# graph name -> timed iterations per subprocess (the 1M graph takes tens of seconds per step)
GRAPHS = {"photo": 5, "random-1m": 1}


def _data_root() -> Path:
    return Path(os.environ.get("DGL_RBGT_DATA", ROOT.parent / "shared" / "data"))


def _photo_edges():
    """Amazon Photo adjacency from the zipped npz (numpy only, no pickle), symmetrised."""
    import numpy as np

    path = _data_root() / "gnn_benchmark" / "amazon-photo.zip"
    with zipfile.ZipFile(path) as zf, zf.open("amazon_electronics_photo.npz") as fh:
        npz = np.load(fh, allow_pickle=False)
        indptr, indices = npz["adj_indptr"], npz["adj_indices"]
        num_nodes = int(npz["adj_shape"][0])
    src = np.repeat(np.arange(num_nodes), np.diff(indptr))
    dst = indices.astype(np.int64)
    pairs = np.unique(np.concatenate([np.stack([src, dst], 1), np.stack([dst, src], 1)]), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]  # no self-loops: the graph part of Exphormer
    return pairs[:, 0], pairs[:, 1], num_nodes


def build_graph(name: str, path: Path) -> dict:
    """Build the augmented graph once, save it for the workers; return its sizes."""
    import dgl
    import torch

    from dgl_rbgt.transforms.expander import AddExpanderEdges

    torch.manual_seed(0)
    if name == "photo":
        src, dst, num_nodes = _photo_edges()
        g = dgl.graph((torch.from_numpy(src), torch.from_numpy(dst)), num_nodes=num_nodes)
    elif name == "random-1m":
        num_nodes, pairs = 1_000_000, 5_000_000
        src = torch.randint(num_nodes, (pairs,))
        dst = torch.randint(num_nodes, (pairs,))
        keep = src != dst
        src, dst = src[keep], dst[keep]
        g = dgl.graph((torch.cat([src, dst]), torch.cat([dst, src])), num_nodes=num_nodes)
    else:
        raise ValueError(f"unknown graph {name!r}; choose from {sorted(GRAPHS)}")
    graph_edges = g.num_edges()
    start = time.perf_counter()
    g = AddExpanderEdges(degree=3, seed=0)(g)
    expander_s = time.perf_counter() - start
    dgl.save_graphs(str(path), [g])
    return {
        "nodes": g.num_nodes(),
        "graph_edges": graph_edges,
        "edges": g.num_edges(),
        "expander_s": expander_s,
    }


def time_expander(num_nodes: int) -> None:
    """Time AddExpanderEdges (degree 3, both methods) on a graph with N nodes and N edges."""
    import dgl
    import torch

    from dgl_rbgt.transforms.expander import AddExpanderEdges

    torch.manual_seed(0)
    g = dgl.rand_graph(num_nodes, num_nodes)
    print(f"AddExpanderEdges on {num_nodes:,} nodes + {num_nodes:,} edges, degree 3, "
          f"{torch.get_num_threads()} threads")
    for method in ("permutation", "hamiltonian"):
        start = time.perf_counter()
        out = AddExpanderEdges(degree=3, method=method, seed=0)(g)
        seconds = time.perf_counter() - start
        print(f"  {method:12s} {seconds:7.2f} s  ({out.num_edges() - g.num_edges():,} expander edges)")
        del out


def worker(args: argparse.Namespace) -> None:
    """One layer on one graph: print a JSON line with the times and the peak memory."""
    import dgl
    import torch

    from dgl_rbgt.nn.exphormer import ExphormerConv

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = dgl.load_graphs(args.graph_file)[0][0]
    g.create_formats_()  # every layer needs CSR/CSC; build them before the baseline
    heads, width = args.heads, args.hidden // args.heads
    if args.layer == "exphormer":
        layer = ExphormerConv(args.hidden, width, heads)
    elif args.layer == "gat":
        layer = dgl.nn.GATConv(args.hidden, width, heads)
    else:
        layer = dgl.nn.DotGatConv(args.hidden, width, heads)
    n = g.num_nodes()
    feats = [torch.randn(n, args.hidden) for _ in range(args.repeats + 1)]
    weight = torch.randn(n, heads, width)
    baseline_kb = peak_rss_mb() * 1024
    with torch.no_grad():
        layer(g, feats[0])  # warm-up: lazy caches (ExphormerConv's typed graph), allocator
    times, cpu_times = [], []
    for feat in feats[1:]:
        feat.requires_grad_(True)  # a middle layer: gradients flow to its input too
        start, start_cpu = time.perf_counter(), time.process_time()
        out = layer(g, feat)  # (N, H, width)
        (out * weight).sum().backward()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
        layer.zero_grad(set_to_none=True)
        del out
    peak_kb = peak_rss_mb() * 1024
    print(json.dumps({"times": times, "cpu_times": cpu_times, "peak_mb": (peak_kb - baseline_kb) / 1024, "baseline_mb": baseline_kb / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", default=",".join(GRAPHS), help="comma-separated: photo, random-1m")
    parser.add_argument("--hidden", type=int, default=64, help="layer width = heads * per-head size")
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="subprocess rounds per layer")
    parser.add_argument("--repeats", type=int, default=None, help="timed iterations per subprocess")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "exphormer"))
    parser.add_argument("--expander-nodes", type=int, default=None,
                        help="only time AddExpanderEdges on a graph with this many nodes")
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--graph-file", help=argparse.SUPPRESS)
    parser.add_argument("--layer", choices=LAYERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.expander_nodes:
        time_expander(args.expander_nodes)
        return

    import torch

    threads = args.threads or torch.get_num_threads()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, summary = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.graphs.split(","):
            path = Path(tmp) / f"{name}.bin"
            info = build_graph(name, path)
            print(
                f"{name}: {info['nodes']:,} nodes, {info['graph_edges']:,} graph + "
                f"{info['edges'] - info['graph_edges']:,} expander edges "
                f"(expander drawn in {info['expander_s']:.2f} s)",
                flush=True,
            )
            repeats = args.repeats or GRAPHS[name]
            samples = {layer: [] for layer in LAYERS}
            cpu_samples = {layer: [] for layer in LAYERS}
            peaks = {layer: [] for layer in LAYERS}
            for rnd in range(args.rounds):
                order = LAYERS[rnd % len(LAYERS):] + LAYERS[: rnd % len(LAYERS)]  # rotate
                for layer in order:
                    cmd = [
                        sys.executable, __file__, "--worker", "--graph-file", str(path),
                        "--layer", layer, "--hidden", str(args.hidden), "--heads", str(args.heads),
                        "--repeats", str(repeats), "--threads", str(threads), "--seed", str(args.seed + rnd),
                    ]
                    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                    if proc.returncode:
                        sys.exit(f"worker failed ({name}, {layer}):\n{proc.stderr[-3000:]}")
                    result = json.loads(proc.stdout.strip().splitlines()[-1])
                    samples[layer] += result["times"]
                    cpu_samples[layer] += result["cpu_times"]
                    peaks[layer].append(result["peak_mb"])
                    for i, (t, cpu) in enumerate(zip(result["times"], result["cpu_times"])):
                        rows.append(
                            dict(graph=name, layer=layer, round=rnd, iteration=i, seconds=t, cpu_seconds=cpu,
                                 peak_mb=result["peak_mb"], nodes=info["nodes"], edges=info["edges"],
                                 hidden=args.hidden, heads=args.heads, threads=threads)
                        )
                    print(f"  round {rnd} {layer:9s} {statistics.median(result['times']):8.3f} s  "
                          f"peak +{result['peak_mb']:8.1f} MB", flush=True)
            gat_time = statistics.median(samples["gat"])
            gat_cpu = statistics.median(cpu_samples["gat"])
            for layer in LAYERS:
                med = statistics.median(samples[layer])
                cpu = statistics.median(cpu_samples[layer])
                summary.append(
                    dict(graph=name, layer=layer, nodes=info["nodes"], edges=info["edges"],
                         median_s=med, min_s=min(samples[layer]), max_s=max(samples[layer]),
                         ns_per_edge_head=med / (info["edges"] * args.heads) * 1e9,
                         ratio_vs_gat=med / gat_time, cpu_s=cpu, cpu_ratio_vs_gat=cpu / gat_cpu,
                         peak_mb=statistics.median(peaks[layer]),
                         samples=len(samples[layer]))
                )
    with open(out_dir / "bench_exphormer.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(out_dir / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    print(f"\nforward+backward, hidden {args.hidden}, {args.heads} heads, {threads} threads, "
          f"{os.cpu_count()} cores; medians over {args.rounds} subprocess rounds")
    header = f"{'graph':10s} {'layer':10s} {'edges':>11s} {'median s':>9s} {'spread s':>15s} " \
             f"{'ns/(edge*head)':>14s} {'vs GAT':>7s} {'CPU s':>8s} {'CPU vs GAT':>10s} {'peak MB':>9s}"
    print(header)
    print("-" * len(header))
    for s in summary:
        print(f"{s['graph']:10s} {s['layer']:10s} {s['edges']:11,d} {s['median_s']:9.3f} "
              f"{s['min_s']:7.3f}-{s['max_s']:<7.3f} {s['ns_per_edge_head']:14.2f} "
              f"{s['ratio_vs_gat']:7.2f} {s['cpu_s']:8.3f} {s['cpu_ratio_vs_gat']:10.2f} {s['peak_mb']:9.1f}")
    print(f"\nCSV: {out_dir / 'bench_exphormer.csv'}, {out_dir / 'summary.csv'}")


if __name__ == "__main__":
    main()
