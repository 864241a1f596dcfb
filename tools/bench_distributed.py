#!/usr/bin/env python
"""Benchmark DistDGL layouts on one box: 1 host x 2 trainers vs 2 hosts x 1 trainer.

The two "hosts" are network + mount namespaces (tests/support/netns.py; needs root), the
single host is loopback. The graph is the CSBM generator at ``--nodes`` nodes (the target is
2,000,000, by hand: about 16 minutes on two cores; partitioning peaks near 5 GB). For each layout
the script partitions once (timed) and launches ``--repeats`` times, alternating the layouts, then
reports the median epoch time (rank 0's epochs), the median evaluation time, and the peak resident
memory of every process (servers and trainers, read by the launcher's guard), next to the baseline
of a process that only imports the stack.

    tools/in-venv python tools/bench_distributed.py --nodes 200000 --epochs 3 --repeats 3   # ~5 min
    tools/in-venv python tools/bench_distributed.py --nodes 2000000 --epochs 2

Prints a table last and writes ``bench-results/distributed/bench_distributed.csv``.
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def recipe(args, name: str) -> dict:
    return {
        "name": name,
        "seed": 0,
        "dataset": {"name": "csbm", "params": {"num_nodes": args.nodes, "num_classes": 5, "avg_degree": args.avg_degree,
                                               "homophily": 0.8, "feature_dim": args.feature_dim, "signal": 1.0,
                                               "train_frac": args.train_frac, "val_frac": args.val_frac}},
        "model": {"name": "gcn", "hidden": args.hidden, "layers": len(args.fanouts), "dropout": 0.5},
        "train": {"batching": "neighbor", "fanouts": args.fanouts, "batch_size": args.batch_size,
                  "eval_batch_size": args.eval_batch_size, "epochs": args.epochs, "lr": 0.01, "threads": 1,
                  "eval_every": args.epochs},  # evaluate once (the last epoch): the table is about training
        "output": {"root": "runs", "plot": False},
    }


def baseline_rss_mb(workdir: Path) -> float:
    """Peak RSS of a process that imports the trainer's stack and does nothing else."""
    from dgl_rbgt.distributed.supervisor import Launcher, Proc

    proc = Proc("127.0.0.1", "baseline", 0, [sys.executable, "-c", "import dgl_rbgt.distributed.trainer, dgl, torch"],
                workdir=str(workdir))
    Launcher([proc], out=open(os.devnull, "w")).run()
    return (proc.peak_rss_kb or 0) / 1024


def run_cli(argv: list[str], cwd: Path, log: Path, timeout: float) -> int:
    with open(log, "a") as out:
        done = subprocess.run([sys.executable, "-m", "dgl_rbgt", *argv], cwd=cwd, stdout=out,
                              stderr=subprocess.STDOUT, timeout=timeout, start_new_session=True)
    return done.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=200_000)
    ap.add_argument("--avg-degree", type=float, default=10.0)
    ap.add_argument("--feature-dim", type=int, default=32)
    ap.add_argument("--train-frac", type=float, default=0.1, help="fraction of training nodes (sets epoch length)")
    ap.add_argument("--val-frac", type=float, default=0.05,
                    help="fraction of validation nodes (CSBM makes every other node a test node)")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--fanouts", type=int, nargs="+", default=[10, 10])
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--eval-batch-size", type=int, default=8192)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="launches per layout (alternated)")
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "distributed"))
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per partition or launch")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "tests" / "support"))  # the namespaces are test scaffolding
    from netns import EmulatedHosts, namespaces_available

    out = Path(args.out)
    work = out / f"work-{args.nodes}"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench.log"
    ok, why = namespaces_available()
    layouts = ["1 host x 2 trainers"] + (["2 hosts x 1 trainer"] if ok else [])
    if not ok:
        print(f"2 hosts x 1 trainer skipped: {why}")
    import socket

    def free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    rows = []
    base = baseline_rss_mb(work)
    hosts = EmulatedHosts(2, shm_size="16g").__enter__() if ok else None
    try:
        files = {}
        for layout in layouts:
            name = "bench_1x2" if layout.startswith("1 host") else "bench_2x1"
            data = recipe(args, name)
            if hosts is None or name == "bench_1x2":
                port = free()
                data["distributed"] = {"hosts": [{"address": "127.0.0.1"}], "trainers_per_host": 2, "port": port,
                                       "master_port": free()}
            else:
                data["distributed"] = {"hosts": hosts.host_entries(), "trainers_per_host": 1}
            path = work / f"{name}.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            files[layout] = path
            print(f"partitioning for {layout} ({args.nodes} nodes) ...", flush=True)
            t0 = time.perf_counter()
            rc = run_cli(["partition", str(path)], work, log, args.timeout)
            if rc != 0:
                print(f"partition failed ({rc}); see {log}")
                return 1
            report = json.loads((work / "partitions" / name / "rbgt_partition.json").read_text())
            files[layout] = (path, report, time.perf_counter() - t0)
        results: dict[str, list[dict]] = {k: [] for k in layouts}
        for rep in range(args.repeats):
            for layout in (layouts if rep % 2 == 0 else layouts[::-1]):
                path, report, _ = files[layout]
                run_dir = work / f"run-{path.stem}-{rep}"
                print(f"launching {layout} (repeat {rep + 1}/{args.repeats}) ...", flush=True)
                t0 = time.perf_counter()
                rc = run_cli(["launch", str(path), "--run-dir", str(run_dir)], work, log, args.timeout)
                wall = time.perf_counter() - t0
                if rc != 0:
                    print(f"launch failed ({rc}); see {log}")
                    return 1
                summary = json.loads((run_dir / "summary.json").read_text())
                procs = json.loads((run_dir / "processes.json").read_text())
                metrics = list(csv.DictReader(open(run_dir / "metrics.csv")))
                results[layout].append({
                    "epoch_s": summary["median_epoch_seconds"],
                    "epoch_s_all": [float(r["epoch_seconds"]) for r in metrics],
                    "eval_s": summary["median_eval_seconds"],
                    "wall_s": wall,
                    "test_acc": summary["test_metric"],
                    "server_mb": [p["peak_rss_mb"] for p in procs if p["role"] == "server"],
                    "trainer_mb": [p["peak_rss_mb"] for p in procs if p["role"] == "trainer"],
                })
        for layout in layouts:
            path, report, part_wall = files[layout]
            rs = results[layout]
            rows.append({
                "layout": layout, "nodes": args.nodes, "edges": report["num_edges"],
                "partition_s": report["seconds"]["partition"], "partition_total_s": round(part_wall, 1),
                "edge_cut_pct": round(100 * report["edge_cut_fraction"], 1),
                "epoch_s_median": round(statistics.median(r["epoch_s"] for r in rs), 3),
                "epoch_s_min": round(min(min(r["epoch_s_all"]) for r in rs), 3),
                "epoch_s_max": round(max(max(r["epoch_s_all"]) for r in rs), 3),
                "eval_s_median": round(statistics.median(r["eval_s"] for r in rs), 3),
                "launch_wall_s": round(statistics.median(r["wall_s"] for r in rs), 1),
                "test_acc": round(statistics.median(r["test_acc"] for r in rs), 4),
                "server_peak_mb": max(max(r["server_mb"]) for r in rs),
                "trainer_peak_mb": max(max(r["trainer_mb"]) for r in rs),
                "baseline_mb": round(base, 1),
                "repeats": args.repeats, "epochs": args.epochs, "batch_size": args.batch_size,
                "fanouts": " ".join(map(str, args.fanouts)), "cpus": os.cpu_count(),
            })
    finally:
        if hosts is not None:
            hosts.close()
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "bench_distributed.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cols = ["layout", "partition_s", "edge_cut_pct", "epoch_s_median", "epoch_s_min", "epoch_s_max", "eval_s_median",
            "server_peak_mb", "trainer_peak_mb", "baseline_mb", "test_acc"]
    width = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print(f"\nDistDGL on one box ({os.cpu_count()} cores, 1 thread per process): {args.nodes} nodes, "
          f"{rows[0]['edges']} edges, fanouts {args.fanouts}, batch {args.batch_size} per trainer, "
          f"{args.epochs} epochs x {args.repeats} launch(es); memory = peak RSS per process (MB)")
    print("  ".join(c.ljust(w) for c, w in zip(cols, width)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, width)))
    print(f"CSV: {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
