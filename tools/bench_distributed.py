#!/usr/bin/env python
"""Benchmark DistDGL layouts on one box, for GCN, RBTransformer and Spexphormer stage 2.

Layouts: 1 host x 2 trainers (loopback) and ``H`` hosts x 1 trainer for every ``--hosts H``
(network + mount namespaces, tests/support/netns.py; needs root). The graph is the CSBM
generator at ``--nodes`` nodes. For each model and layout the script partitions once (timed; the
partitioner's peak memory comes from its report) and launches ``--repeats`` times, alternating the
layouts, then reports the median epoch time (rank 0's epochs), the median evaluation time, test
accuracy and the peak resident memory of every process (servers and trainers, read by the
launcher's guard), next to the baseline of a process that only imports the stack, and the memory
of the fullest host (:class:`HostMemory`: its processes' private memory plus their shared pages
once, sampled every half second; a server shares its partition with its host's trainers through
shared memory, which each one's RSS counts in full). ``--single`` also trains the
same recipe on one machine without DistDGL, for the accuracy and memory it is compared with
(``host_vs_single``: the fullest host's peak over the single machine's peak).

Models (``--models``):

* ``gcn``: neighbour sampling with ``--fanouts``;
* ``rbtransformer``: SGFormer's random node batches of ``--batch-size`` nodes per trainer;
* ``spexphormer``: stage 2 over the stored neighbour tables (``partition`` trains stage 1 and
  stores the scores; the trainers redraw the tables every epoch).

    tools/in-venv python tools/bench_distributed.py --nodes 200000 --epochs 3 --repeats 3   # ~5 min
    tools/in-venv python tools/bench_distributed.py --nodes 200000 --models rbtransformer spexphormer --hosts 2 4

Prints a table last and writes ``bench-results/distributed/bench_distributed.csv``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def recipe(args, name: str, model: str) -> dict:
    data = {
        "name": name,
        "seed": 0,
        "dataset": {"name": "csbm", "params": {"num_nodes": args.nodes, "num_classes": 5, "avg_degree": args.avg_degree,
                                               "homophily": 0.8, "feature_dim": args.feature_dim, "signal": 1.0,
                                               "train_frac": args.train_frac, "val_frac": args.val_frac}},
        "train": {"batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size, "epochs": args.epochs,
                  "lr": 0.01, "threads": 1,
                  "eval_every": args.epochs},  # evaluate once (the last epoch): the table is about training
        "output": {"root": "runs", "plot": False},
    }
    if model == "gcn":
        data["model"] = {"name": "gcn", "hidden": args.hidden, "layers": len(args.fanouts), "dropout": 0.5}
        data["train"].update(batching="neighbor", fanouts=args.fanouts)
    elif model == "rbtransformer":
        data["model"] = {"name": "rbtransformer", "hidden": args.hidden, "num_heads": 1, "group_size": 256,
                         "dropout": 0.2}
        data["train"].update(batching="node_batch")
    else:
        data["transforms"] = [{"name": "expander", "degree": 3}, {"name": "self_loops"}]
        data["stage1"] = {"model": {"hidden": 4, "num_heads": 1, "layers": 2},
                          "train": {"epochs": args.stage1_epochs, "lr": 0.01, "threads": 1}}
        data["model"] = {"name": "spexphormer", "hidden": args.hidden, "num_heads": 2, "layers": 2, "dropout": 0.2}
        data["neighbour_tables"] = {"ks": [5, 5], "resample_every": 1, "eval_repeats": 1}
        data["train"].update(batching="neighbour_tables")
    return data


def reusable(data: dict, work: Path) -> bool:
    """Whether ``work`` holds finished partitions made from the same inputs as recipe ``data``."""
    from dgl_rbgt.config import parse_distributed, parse_recipe
    from dgl_rbgt.distributed.partition import check_partitions
    from dgl_rbgt.errors import UserError

    recipe = parse_recipe({k: v for k, v in data.items() if k != "distributed"})
    try:
        check_partitions(recipe, parse_distributed(data["distributed"]), work / "partitions" / data["name"])
    except UserError:
        return False
    return True


def baseline_rss_mb(workdir: Path) -> float:
    """Peak RSS of a process that imports the trainer's stack and does nothing else."""
    from dgl_rbgt.distributed.supervisor import Launcher, Proc

    proc = Proc("127.0.0.1", "baseline", 0, [sys.executable, "-c", "import dgl_rbgt.distributed.trainer, dgl, torch"],
                workdir=str(workdir))
    Launcher([proc], out=open(os.devnull, "w")).run()
    return (proc.peak_rss_kb or 0) / 1024


class HostMemory:
    """Samples, every half second while a launch runs, the memory each emulated host holds, and
    keeps each host's peak over time. Processes are found by their launch spec in the command
    line and told apart by their network namespace. A host's memory is the private memory of its
    DistDGL processes (resident minus shared pages, ``/proc/PID/statm``) plus the largest shared
    set among them: the server's partition is shared memory that its trainers map, so their
    shared pages are (mostly) the server's, counted once. ``statm`` is read in constant time;
    the exact proportional set size (``smaps_rollup``) costs 0.1 s per read of a 6 GB process,
    which at this rate would take most of the two cores the benchmark runs on."""

    def __init__(self, spec: str):
        import threading

        self.spec, self.peaks, self._stop = spec, {}, threading.Event()
        self._page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "HostMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            private: dict[str, dict[str, float]] = {}  # host -> role -> private MB
            shared: dict[str, float] = {}
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    role = ("trainer" if b"dgl_rbgt.distributed.trainer" in cmd
                            else "server" if b"dgl_rbgt.distributed.server" in cmd else None)
                    if role is None or not any(self.spec.encode() in a for a in cmd):
                        continue
                    host = os.readlink(f"/proc/{pid}/ns/net")
                    _, resident, share = (int(x) for x in Path(f"/proc/{pid}/statm").read_text().split()[:3])
                except (OSError, ValueError):
                    continue  # ended meanwhile
                roles = private.setdefault(host, {})
                roles[role] = roles.get(role, 0.0) + (resident - share) * self._page_mb
                shared[host] = max(shared.get(host, 0.0), share * self._page_mb)
            for host, roles in private.items():
                parts = {**roles, "shared": shared[host]}
                if sum(parts.values()) > sum(self.peaks.get(host, {}).values()):
                    self.peaks[host] = parts  # what the host held at its peak so far

    def peak_mb(self) -> float:
        """The fullest host's peak (MB)."""
        return round(max((sum(p.values()) for p in self.peaks.values()), default=0.0), 1)

    def peak_parts_mb(self) -> dict[str, float]:
        """What the fullest host held at its peak (MB): its servers' and trainers' private memory
        and the largest shared set."""
        parts = max(self.peaks.values(), key=lambda p: sum(p.values()), default={})
        return {k: round(v, 1) for k, v in parts.items()}


def host_peaks(procs: list[dict]) -> list[float]:
    """Memory per host (MB): the sum of its processes' peak proportional set sizes. A server
    shares its partition with the trainers of its host through shared memory, which the resident
    set size of each counts in full; PSS splits shared pages between them. A sum of peaks is an
    upper bound of the host's peak (they need not coincide)."""
    hosts: dict[str, float] = {}
    for p in procs:
        hosts[p["host"]] = hosts.get(p["host"], 0.0) + (p.get("peak_pss_mb") or p["peak_rss_mb"])
    return [round(v, 1) for v in hosts.values()]


def run_cli(argv: list[str], cwd: Path, log: Path, timeout: float, env: dict[str, str] | None = None) -> int:
    with open(log, "a") as out:
        done = subprocess.run([sys.executable, "-m", "dgl_rbgt", *argv], cwd=cwd, stdout=out,
                              stderr=subprocess.STDOUT, timeout=timeout, start_new_session=True,
                              env=None if env is None else {**os.environ, **env})
    return done.returncode


def bench_model(args, model: str, layouts, hosts, work: Path, log: Path, free, base: float) -> list[dict]:
    """Partition and launch every layout for one model; one row per layout."""
    files = {}
    # Spexphormer: stage 1 runs once, in the first partitioning (unless --stage1-scores names an
    # earlier run's); the rest reuse its scores
    scores = Path(args.stage1_scores).resolve() if args.stage1_scores else None
    for layout, num_hosts, trainers in layouts:
        name = f"bench_{model}_{num_hosts}x{trainers}"
        data = recipe(args, name, model)
        if args.global_batch:  # DDP averages the trainers' gradients: the same steps as one machine's batch
            data["train"]["batch_size"] = max(1, args.batch_size // (num_hosts * trainers))
        if scores is not None:
            data["stage1"]["scores"] = str(scores)
        if num_hosts == 1:
            data["distributed"] = {"hosts": [{"address": "127.0.0.1"}], "trainers_per_host": trainers,
                                   "port": free(), "master_port": free()}
        else:
            data["distributed"] = {"hosts": hosts.host_entries()[:num_hosts], "trainers_per_host": 1}
        data["distributed"]["partition_method"] = args.partition_method
        if args.malloc_mmap_threshold_mb is not None:
            data["distributed"]["malloc_mmap_threshold_mb"] = args.malloc_mmap_threshold_mb
        if num_hosts > 1:  # emulated hosts share this machine's memory: one partition load at a time
            data["distributed"]["server_start_interval"] = args.server_start_interval
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        t0 = time.perf_counter()
        reused = args.reuse_partitions and reusable(data, work)
        if reused:
            print(f"{model}: reusing the partitions for {layout}", flush=True)
        else:
            print(f"{model}: partitioning for {layout} ({args.nodes} nodes) ...", flush=True)
            if run_cli(["partition", str(path)], work, log, args.timeout) != 0:
                raise SystemExit(f"partition failed; see {log}")
        report = json.loads((work / "partitions" / name / "rbgt_partition.json").read_text())
        files[layout] = (path, report, report["seconds"]["total"] if reused else time.perf_counter() - t0)
        if model == "spexphormer" and scores is None:
            scores = (work / "partitions" / name / "scores.pt").resolve()
    single = None
    if args.single:
        path = files[layouts[0][0]][0]
        print(f"{model}: training on one machine without DistDGL ...", flush=True)
        run_dir = work / f"single-{model}"
        shutil.rmtree(run_dir, ignore_errors=True)
        extra = ["--set", f"stage1.scores={scores}"] if scores is not None else []
        extra += ["--set", f"train.batch_size={args.batch_size}"]  # the layout's recipe may split it
        # the allocator the launcher gives the hosts' processes, so the comparison is like for like
        env = None
        if args.malloc_mmap_threshold_mb is not None:
            from dgl_rbgt.distributed.launcher import malloc_tunables
            env = {"GLIBC_TUNABLES": malloc_tunables(args.malloc_mmap_threshold_mb, os.environ.get("GLIBC_TUNABLES"))}
        if run_cli(["train", str(path), "--run-dir", str(run_dir), "--no-progress", "--set", "train.threads=2", *extra],
                   work, log, args.timeout, env=env) != 0:
            raise SystemExit(f"single-machine training failed; see {log}")
        single = json.loads((run_dir / "summary.json").read_text())
    results: dict[str, list[dict]] = {layout: [] for layout, *_ in layouts}
    order = [layout for layout, *_ in layouts]
    for rep in range(args.repeats):
        for layout in (order if rep % 2 == 0 else order[::-1]):
            path, report, _ = files[layout]
            run_dir = work / f"run-{path.stem}-{rep}"
            print(f"{model}: launching {layout} (repeat {rep + 1}/{args.repeats}) ...", flush=True)
            t0 = time.perf_counter()
            with HostMemory(f"{run_dir.name}/launch.json") as host_memory:
                rc = run_cli(["launch", str(path), "--run-dir", str(run_dir)], work, log, args.timeout)
            wall = time.perf_counter() - t0
            if rc != 0:
                raise SystemExit(f"launch failed ({rc}); see {log}")
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
                "host_mb": host_peaks(procs),
                "host_sampled_mb": host_memory.peak_mb(),
                "host_parts_mb": host_memory.peak_parts_mb(),
            })
    rows = []
    for layout in order:
        path, report, part_wall = files[layout]
        rs = results[layout]
        rows.append({
            "model": model, "layout": layout, "nodes": args.nodes, "edges": report["num_edges"],
            "partition_s": report["seconds"]["partition"], "partition_total_s": round(part_wall, 1),
            "partition_peak_mb": report["peak_rss_mb"],
            "stage1_peak_mb": report.get("stage1_peak_rss_mb"),  # Spexphormer: its own process, before
            "edge_cut_pct": round(100 * report["edge_cut_fraction"], 1),
            "epoch_s_median": round(statistics.median(r["epoch_s"] for r in rs), 3),
            "epoch_s_min": round(min(min(r["epoch_s_all"]) for r in rs), 3),
            "epoch_s_max": round(max(max(r["epoch_s_all"]) for r in rs), 3),
            "eval_s_median": round(statistics.median(r["eval_s"] for r in rs), 3),
            "launch_wall_s": round(statistics.median(r["wall_s"] for r in rs), 1),
            "test_acc": round(statistics.median(r["test_acc"] for r in rs), 4),
            "server_peak_mb": max(max(r["server_mb"]) for r in rs),
            "trainer_peak_mb": max(max(r["trainer_mb"]) for r in rs),
            "host_peak_mb": max(max(r["host_mb"]) for r in rs),
            "host_sampled_peak_mb": max(r["host_sampled_mb"] for r in rs),
            **{f"at_host_peak_{k}_mb": v for k, v in max(rs, key=lambda r: r["host_sampled_mb"])["host_parts_mb"].items()},
            "baseline_mb": round(base, 1),
            "single_test_acc": None if single is None else round(single["test_metric"], 4),
            "single_peak_mb": None if single is None else round(single["peak_memory_mb"], 1),
            "single_epoch_s": None if single is None else single.get("median_epoch_seconds"),
            "host_vs_single": None if single is None else round(max(r["host_sampled_mb"] for r in rs)
                                                                / single["peak_memory_mb"], 2),
            "repeats": args.repeats, "epochs": args.epochs, "batch_size": args.batch_size,
            "global_batch": args.global_batch, "malloc_mmap_threshold_mb": args.malloc_mmap_threshold_mb,
            "fanouts": " ".join(map(str, args.fanouts)) if model == "gcn" else "", "cpus": os.cpu_count(),
        })
    return rows


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
    ap.add_argument("--global-batch", action="store_true",
                    help="--batch-size is the global batch: each of T trainers takes batch/T nodes, so a "
                         "distributed epoch takes the single machine's number of optimiser steps (default: "
                         "per trainer, as RBA's attention groups need)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["gcn"], choices=["gcn", "rbtransformer", "spexphormer"])
    ap.add_argument("--hosts", type=int, nargs="*", default=[2],
                    help="emulated host counts to run with 1 trainer each (besides 1 host x 2 trainers)")
    ap.add_argument("--partition-method", default="metis", choices=["metis", "random"],
                    help="random needs far less memory than METIS (about 3.5 GB per million nodes at 4 parts)")
    ap.add_argument("--loopback", action=argparse.BooleanOptionalAction, default=True,
                    help="also run 1 host x 2 trainers on loopback (--no-loopback: emulated hosts only)")
    ap.add_argument("--stage1-epochs", type=int, default=20, help="Spexphormer's stage 1 (run by partition)")
    ap.add_argument("--stage1-scores", default=None,
                    help="Spexphormer: the scores.pt of an earlier partitioning of the same graph (skips stage 1)")
    ap.add_argument("--single", action="store_true", help="also train each recipe on one machine, without DistDGL")
    ap.add_argument("--reuse-partitions", action="store_true",
                    help="launch on the partitions of an earlier run in --out when they match the recipe")
    ap.add_argument("--server-start-interval", type=float, default=0.0,
                    help="seconds between server starts on emulated hosts (distributed.server_start_interval): "
                         "at 10M nodes four servers loading their parts at once exceed 24 GB")
    ap.add_argument("--malloc-mmap-threshold-mb", type=int, default=None,
                    help="distributed.malloc_mmap_threshold_mb for the launched processes; --single's run gets "
                         "the same GLIBC_TUNABLES (default: glibc's allocator as it is)")
    ap.add_argument("--repeats", type=int, default=1, help="launches per layout (alternated)")
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "distributed"))
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per partition or launch")
    args = ap.parse_args()
    if args.malloc_mmap_threshold_mb is not None and args.malloc_mmap_threshold_mb < 1:
        ap.error(f"--malloc-mmap-threshold-mb must be at least 1, got {args.malloc_mmap_threshold_mb}")

    sys.path.insert(0, str(ROOT / "tests" / "support"))  # the namespaces are test scaffolding
    from netns import EmulatedHosts, namespaces_available

    out = Path(args.out).resolve()  # the CLI runs with the work folder as its cwd
    work = out / f"work-{args.nodes}"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench.log"
    ok, why = namespaces_available()
    layouts = ([("1 host x 2 trainers", 1, 2)] if args.loopback else []) + \
        ([(f"{h} hosts x 1 trainer", h, 1) for h in args.hosts] if ok else [])
    if not layouts:
        raise SystemExit("nothing to run: --no-loopback and no emulated hosts")
    if not ok:
        print(f"emulated hosts skipped: {why}")
    import socket

    def free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    rows = []
    base = baseline_rss_mb(work)
    hosts = EmulatedHosts(max(args.hosts), shm_size="16g").__enter__() if ok and args.hosts else None
    try:
        for model in args.models:
            rows += bench_model(args, model, layouts, hosts, work, log, free, base)
    finally:
        if hosts is not None:
            hosts.close()
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "bench_distributed.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        writer.writeheader()
        writer.writerows(rows)
    cols = ["model", "layout", "partition_s", "partition_peak_mb", "edge_cut_pct", "epoch_s_median", "epoch_s_min",
            "epoch_s_max", "eval_s_median", "server_peak_mb", "trainer_peak_mb", "host_peak_mb", "host_sampled_peak_mb",
            "baseline_mb",
            "test_acc", "single_test_acc", "single_peak_mb", "host_vs_single"]
    width = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    threshold = "adaptive" if args.malloc_mmap_threshold_mb is None else f"{args.malloc_mmap_threshold_mb} MB"
    print(f"\nDistDGL on one box ({os.cpu_count()} cores, 1 thread per process): {args.nodes} nodes, "
          f"{rows[0]['edges']} edges, batch {args.batch_size} {'in all' if args.global_batch else 'per trainer'} "
          f"(GCN fanouts {args.fanouts}), "
          f"{args.epochs} epochs x {args.repeats} launch(es), glibc mmap threshold {threshold}; "
          f"server/trainer: peak RSS per process, host: sum of "
          f"its processes' peak PSS, host sampled: peak over time of the fullest host's private + shared (MB)")
    print("  ".join(c.ljust(w) for c, w in zip(cols, width)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, width)))
    for r in rows:
        parts = ", ".join(f"{k[len('at_host_peak_'):-3]} {v}" for k, v in r.items() if k.startswith("at_host_peak_"))
        if parts:
            print(f"{r['model']}, {r['layout']}: at the fullest host's peak, private memory by role and the shared set "
                  f"(MB): {parts}")
    print(f"CSV: {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
