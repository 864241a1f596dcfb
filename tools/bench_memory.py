#!/usr/bin/env python
"""Benchmark the recurrent memory transformer: diagonal vs sequential schedule vs RBA alone.

Run by hand (not in CI), e.g. on 2 threads (the targets below):

    tools/in-venv python tools/bench_memory.py --threads 2 --sizes 100000 --layers 4 8 \\
        --segment-sizes 64 1024 --memory-tokens 16 --modes train

A stack of L post-norm transformer layers, d = 64 split over H = 4 heads, FFN 2d, on N random
node tokens, in segments of p nodes with m memory tokens per layer (one recurrent pass). Variants:

* ``diagonal``    ``memory_recurrence(..., schedule="diagonal")``: S + L - 1 batched steps.
* ``sequential``  the same weights, ``schedule="sequential"``: S * L steps (the definition).
* ``rba``         the same L layers without memory: attention inside random groups of p
                  (``dgl_rbgt.nn.random_batch_attention``), every layer on all N nodes at once.
* ``compiled``    ``diagonal`` with the core's cell (``_cell_batch``) compiled by
                  ``torch.compile`` (Inductor; needs a C++ compiler on a CPU). Not in the default
                  sweep: the compilation (about 30 s per cell shape) runs in an untimed warm-up.

``--chains C`` runs each memory variant with the nodes cut into C independent recurrences that
step together (``memory_recurrence(..., chains=C)``: ceil(S / C) + L - 1 diagonal steps of C times
the cells); RBA does not depend on it.

Modes: ``train`` times forward + backward of a random linear functional of the output (autograd);
``infer`` times a forward under ``torch.no_grad()``. The memory-model workers load
``dgl_rbgt/nn/functional/memory.py`` by file path and import nothing but torch (the worker checks
that DGL was never imported), so they run on a machine with only torch, e.g. a GPU box
(``--device cuda``). Every configuration runs in a FRESH subprocess; peak memory is ``ru_maxrss``
(CPU) or ``max_memory_allocated`` (CUDA) above the process's baseline taken after imports AND
after allocating the input, the weights and the order. ``work MB`` subtracts the output's own
size (N x d), so in ``infer`` mode it is the working memory the schedule adds; its log-log slope
over N should be ~0 (the no-grad path holds O(L (p + m) d) activations). Times are the median of
``--repeats`` runs after one warm-up, pooled over ``--rounds`` fresh processes; variants alternate
inside each configuration and round. Prints a table last, writes ``results.csv`` and
``memory.png`` under ``--out``, and checks the targets: diagonal
>= 1.3x sequential at L=4, p=64, m=16, N=100k; >= 1.5x at L=8, p=64; >= 0.95x everywhere;
diagonal <= 1.5x RBA at m=16; infer working-memory slope < 0.2.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

D_MODEL, HEADS, FFN_RATIO = 64, 4, 2
VARIANTS = ("diagonal", "sequential", "rba", "compiled")
DEFAULT_VARIANTS = VARIANTS[:3]
CORE = Path(__file__).resolve().parents[1] / "dgl_rbgt" / "nn" / "functional" / "memory.py"


# ----------------------------------------------------------------------------- worker


def _load_core():
    """The torch-only core, loaded by path: importing the package would import DGL."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("memory_core", CORE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _weights(layers: int, m: int, device, grad: bool) -> list:
    """Random stacked weights in the core's MemoryWeights order (memory first)."""
    import torch

    d, f = D_MODEL, FFN_RATIO * D_MODEL
    shapes = [(layers, m, d), (layers, d, 3 * d), (layers, 3 * d), (layers, d, d), (layers, d), (layers, d),
              (layers, d, f), (layers, f), (layers, f, d), (layers, d), (layers, d), (layers, d)]
    return [(torch.randn(s, device=device) * (s[1] ** -0.5 if len(s) == 3 else 0.1)).requires_grad_(grad)
            for s in shapes]


def _rba_stack(x, w, p: int):
    """The same L post-norm layers without memory: RBA inside random groups of p, all N at once."""
    import torch
    import torch.nn.functional as F

    from dgl_rbgt.nn import random_batch_attention

    n, d = x.shape
    h = x
    for l in range(w[1].shape[0]):
        qkv = torch.addmm(w[2][l], h, w[1][l]).view(n, 3, HEADS, d // HEADS)  # (N, 3, H, D)
        att = random_batch_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2], p).reshape(n, d)  # (N, d)
        a = F.layer_norm(torch.addmm(h, att, w[3][l]), (d,), w[4][l], w[5][l])
        ff = torch.addmm(w[9][l], F.gelu(torch.addmm(w[7][l], a, w[6][l])), w[8][l])
        h = F.layer_norm(a + ff, (d,), w[10][l], w[11][l])
    return h


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.variant == "rba":
        import dgl_rbgt.nn  # noqa: F401  (imports DGL; the memory variants must not)
    else:
        core = _load_core()
        assert "dgl" not in sys.modules, "the memory-model worker imported DGL"
        if args.variant == "compiled":
            core._cell_batch = torch.compile(core._cell_batch, dynamic=False)
    torch.manual_seed(args.seed)
    grad = args.mode == "train"
    x = torch.randn(args.n, D_MODEL, device=device, requires_grad=grad)
    w = _weights(args.layers, args.m, device, grad)
    order = torch.randperm(args.n, device=device)
    if args.variant == "rba":
        def run():
            return _rba_stack(x, w, args.p), 0
    else:
        weights = core.MemoryWeights(*w)

        def run():
            schedule = "diagonal" if args.variant == "compiled" else args.variant
            res = core.memory_recurrence(x, weights, HEADS, args.p, order=order, schedule=schedule,
                                         chains=args.chains)
            return res.out, res.num_steps
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    baseline = _peak_mb(device)
    times, steps = [], 0
    for i in range(args.repeats + 1):
        r = torch.randn(args.n, D_MODEL, device=device) if grad else None  # fresh functional, untimed
        t0 = time.perf_counter()
        with torch.set_grad_enabled(grad):
            out, steps = run()
            if grad:
                (out * r).sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        del out, r
        x.grad = None
        for t in w:
            t.grad = None
        if i == 0 and (dt <= args.time_cap or args.variant == "compiled"):
            continue  # warm-up (for ``compiled``, the compilation)
        times.append(dt)
        if i == 0:
            break  # too slow to repeat: report the one run
    print(json.dumps({"times": times, "peak_mb": _peak_mb(device) - baseline, "steps": steps,
                      "out_mb": args.n * D_MODEL * 4 / 2**20}))


# ----------------------------------------------------------------------------- driver


def run_config(args, variant: str, mode: str, n: int, layers: int, p: int, m: int, chains: int = 1) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--variant", variant, "--mode", mode, "--n", str(n),
           "--L", str(layers), "--p", str(p), "--m", str(m), "--C", str(chains), "--repeats", str(args.repeats),
           "--threads", str(args.threads), "--time-cap", str(args.time_cap), "--seed", str(args.seed),
           "--device", args.device]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OUTDATED_IGNORE="1")
    if args.omp_wait_policy != "default":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    row = dict(variant=variant, mode=mode, n=n, L=layers, p=p, m=m if variant != "rba" else "",
               chains=chains if variant != "rba" else "", status="ok")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.config_timeout)
    except subprocess.TimeoutExpired:
        return row | {"status": f"timeout>{args.config_timeout}s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return row | {"status": f"failed rc={proc.returncode}: {tail[0][:80]}"}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return row | dict(times=res["times"], peak_mb=res["peak_mb"], work_mb=res["peak_mb"] - res["out_mb"],
                      steps=res["steps"])


def pool_rounds(rounds: list[dict]) -> dict:
    """One row from a configuration's rounds (fresh processes): times pooled, the largest peak.

    Rounds alternate the variants, so a slow spell of a shared machine lands on all of them
    instead of on whichever variant happened to run then.
    """
    failed = [r for r in rounds if r["status"] != "ok"]
    if failed:
        return failed[0]
    t = [x for r in rounds for x in r["times"]]
    worst = max(rounds, key=lambda r: r["peak_mb"])
    row = {k: v for k, v in worst.items() if k != "times"}
    return row | dict(median_ms=1e3 * statistics.median(t), min_ms=1e3 * min(t), max_ms=1e3 * max(t),
                      runs=len(t))


def loglog_slope(xs, ys) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def arithmetic_ratio(p: int, m: int, d: int = D_MODEL, f: int = FFN_RATIO * D_MODEL) -> float:
    """Multiply-adds per node of one memory layer over one RBA layer (the floor of their time ratio).

    A memory cell runs m + p tokens, each attending over m + p keys, for p nodes; an RBA group runs
    p tokens over p keys. Per token: 4 d^2 (QKV and output maps) + 2 d f (feed-forward) + 2 d k
    (scores and weighted sum over k keys); backward costs the same multiple of both.

    >>> round(arithmetic_ratio(64, 16), 4), round(arithmetic_ratio(256, 16), 4)
    (1.3125, 1.0957)
    """
    per_token = lambda keys: 4 * d * d + 2 * d * f + 2 * d * keys  # noqa: E731
    return (m + p) / p * per_token(m + p) / per_token(p)


def summarise(rows) -> list[str]:
    ok = {(r["variant"], r["mode"], r["n"], r["L"], r["p"], r["m"], r.get("chains", 1 if r["m"] != "" else "")): r
          for r in rows if r["status"] == "ok"}
    lines, worst = [], []
    for (variant, mode, n, layers, p, m, chains), diag in sorted(ok.items(), key=lambda kv: str(kv[0])):
        if variant != "diagonal":
            continue
        seq = ok.get(("sequential", mode, n, layers, p, m, chains))
        rba = ok.get(("rba", mode, n, layers, p, "", ""))
        parts = [f"{mode:5} N={n} L={layers} p={p} m={m}" + (f" chains={chains}:" if chains != 1 else ":")]
        if seq:
            speedup = seq["median_ms"] / diag["median_ms"]
            worst.append(speedup)
            parts.append(f"sequential/diagonal {speedup:.2f}x")
            target = {(4, 64, 16, 100_000): 1.3}.get((layers, p, m, n)) or (1.5 if (layers, p) == (8, 64) else None)
            if mode == "train" and target and chains == 1:  # the targets are for one chain per graph
                parts.append(f"(target >= {target}x: {'met' if speedup >= target else 'MISSED'})")
        compiled = ok.get(("compiled", mode, n, layers, p, m, chains))
        if compiled:
            parts.append(f"compiled/diagonal {compiled['median_ms'] / diag['median_ms']:.2f}x")
        if rba:
            ratio = diag["median_ms"] / rba["median_ms"]
            parts.append(f"diagonal/rba {ratio:.2f}x (arithmetic {arithmetic_ratio(p, m):.2f}x)" + (
                f" (target <= 1.5x: {'met' if ratio <= 1.5 else 'MISSED'})" if m == 16 and mode == "train" else ""))
        lines.append(" ".join(parts))
    if worst:
        lines.append(f"lowest sequential/diagonal speed-up: {min(worst):.2f}x "
                     f"(target >= 0.95x: {'met' if min(worst) >= 0.95 else 'MISSED'})")
    for variant in ("diagonal", "sequential"):
        groups = {}
        for r in ok.values():
            if r["variant"] == variant and r["mode"] == "infer":
                key = (r["L"], r["p"], r["m"], r.get("chains", 1))
                groups.setdefault(key, []).append((r["n"], max(r["work_mb"], 1.0)))
        for key, pts in sorted(groups.items()):
            if len(pts) >= 2:
                pts.sort()
                s = loglog_slope(*zip(*pts))
                chained = f" chains={key[3]}" if key[3] != 1 else ""
                lines.append(f"{variant} infer working-memory slope L={key[0]} p={key[1]} m={key[2]}{chained} over "
                             f"N={pts[0][0]}..{pts[-1][0]}: {s:.2f} (target < 0.2: {'met' if s < 0.2 else 'MISSED'})")
    return lines


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    series = {}
    for r in rows:
        if r["status"] == "ok":
            label = f"{r['variant']} {r['mode']} L={r['L']} p={r['p']}" + (f" m={r['m']}" if r["m"] != "" else "")
            label += f" C={r['chains']}" if r.get("chains", 1) not in (1, "") else ""
            series.setdefault(label, []).append((r["n"], r["median_ms"], max(r["work_mb"], 0.1)))
    for i, (label, pts) in enumerate(sorted(series.items())):
        pts.sort()
        n, t, mem = zip(*pts)
        style = dict(marker="o", color=f"C{i % 10}", linestyle=["-", "--", ":"][i // 10 % 3], label=label)
        axes[0 if " train " in label else 1].plot(n, t, **style)
        axes[2].plot(n, mem, **style)
    titles = ("forward+backward (ms)", "inference (ms)", "peak RSS above baseline minus output (MB)")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (nodes)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"memory transformer, d={D_MODEL}, H={HEADS}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


FIELDS = ["variant", "mode", "n", "L", "p", "m", "chains", "median_ms", "min_ms", "max_ms", "runs", "peak_mb", "work_mb",
          "steps", "status"]


def report(rows, args, out: Path) -> None:
    print(f"\nthreads={args.threads} repeats={args.repeats} rounds={args.rounds} device={args.device} "
          f"OMP_WAIT_POLICY={args.omp_wait_policy} d={D_MODEL} H={HEADS}; CSV and PNG in {out}/")
    print(f"{'mode':>5} {'N':>9} {'L':>2} {'p':>5} {'m':>3} {'C':>3} {'variant':>10} {'median ms':>10} "
          f"{'spread ms':>15} {'peak MB':>8} {'work MB':>8} {'steps':>7}  status")
    for r in rows:
        head = (f"{r['mode']:>5} {r['n']:>9} {r['L']:>2} {r['p']:>5} {str(r['m']) or '-':>3} "
                f"{str(r.get('chains', '')) or '-':>3} {r['variant']:>10}")
        if r["status"] == "ok":
            spread = f"{r['min_ms']:.0f}-{r['max_ms']:.0f}"
            print(f"{head} {r['median_ms']:>10.1f} {spread:>15} {r['peak_mb']:>8.1f} {r['work_mb']:>8.1f} "
                  f"{r['steps']:>7}  ok ({r['runs']} runs)")
        else:
            print(f"{head} {'':>10} {'':>15} {'':>8} {'':>8} {'':>7}  {r['status']}")
    print()
    for line in summarise(rows):
        print(line)


def configs(args):
    """(mode, n, L, p, m, chains) in sweep order; inference-only sizes run in infer mode only."""
    for mode in args.modes:
        sizes = args.sizes + (args.infer_sizes if mode == "infer" else [])
        for n in sizes:
            for layers in args.layers:
                for p in args.segment_sizes:
                    for m in args.memory_tokens:
                        for chains in args.chains:
                            yield mode, n, layers, p, m, chains


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000])
    ap.add_argument("--infer-sizes", type=int, nargs="*", default=[],
                    help="extra N for inference only, e.g. 1000000 10000000")
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--segment-sizes", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--memory-tokens", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--chains", type=int, nargs="+", default=[1],
                    help="independent recurrences per graph for the memory variants (RBA ignores it)")
    ap.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS)
    ap.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="fresh processes per variant and configuration, alternating the variants; "
                         "their times are pooled (use 3 or more on a shared machine)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (memory variants need only torch)")
    ap.add_argument("--out", default="bench-results/memory")
    ap.add_argument("--time-cap", type=float, default=60.0,
                    help="a first run longer than this (s) is reported alone, without repeats")
    ap.add_argument("--omp-wait-policy", default="default", choices=["PASSIVE", "ACTIVE", "default"],
                    help="OMP_WAIT_POLICY for the workers. 'default' leaves it unset, as in a user's "
                         "process (libgomp spins briefly between parallel regions); PASSIVE makes idle "
                         "threads sleep at once, fairer on a shared machine but slow for the memory "
                         "model's many small steps (measured: diagonal 5.8 s vs 4.3 s at N = 100k, "
                         "L = 4, p = 64, 2 threads)")
    ap.add_argument("--config-timeout", type=int, default=900)
    ap.add_argument("--seed", type=int, default=0)
    # Worker mode (one configuration in this fresh process).
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--L", type=int, dest="layers_one", help=argparse.SUPPRESS)
    ap.add_argument("--p", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--m", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--C", type=int, dest="chains_one", default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.worker:
        args.layers, args.chains = args.layers_one, args.chains_one
        worker(args)
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, done_rba = [], set()
    started = time.perf_counter()
    print(f"threads={args.threads} OMP_WAIT_POLICY={args.omp_wait_policy} device={args.device}", flush=True)
    for mode, n, layers, p, m, chains in configs(args):
        variants = [v for v in args.variants if v != "rba" or (mode, n, layers, p) not in done_rba]
        done_rba.add((mode, n, layers, p))  # RBA does not depend on m or chains
        rounds = {v: [] for v in variants}
        for _ in range(args.rounds):
            for variant in variants:  # alternate the variants inside each configuration
                rounds[variant].append(run_config(args, variant, mode, n, layers, p, m, chains))
        for variant in variants:
            row = pool_rounds(rounds[variant])
            rows.append(row)
            msg = (f"{row['median_ms']:.1f} ms [{row['min_ms']:.1f}-{row['max_ms']:.1f}] "
                   f"work {row['work_mb']:.1f} MB, {row['steps']} steps" if row["status"] == "ok" else row["status"])
            print(f"[{time.perf_counter() - started:6.0f}s] {mode} N={n} L={layers} p={p} m={m} C={chains} "
                  f"{variant}: {msg}",
                  flush=True)
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in FIELDS})
    plot(rows, out / "memory.png")
    report(rows, args, out)


if __name__ == "__main__":
    main()
