#!/usr/bin/env python
"""Benchmark Random Batch Attention against its peers: time and peak memory versus N.

Run by hand (not in CI), e.g. on 2 threads:

    tools/in-venv python tools/bench_rba.py --threads 2 \
        --sizes 10000 25000 50000 100000 250000 1000000 --group-sizes 64 256 1024 --repeats 3

One attention layer, d_model = 64 split over H = 4 heads (D = 16 per head), forward + backward of
a random linear functional of the output. Variants:

* ``rba``       RBA's functional core, ``random_batch_attention(q, k, v, p)`` on (N, H, D) leaves.
* ``rba_layer`` ``RBAConv`` (Q/K/V projections) + a 64 -> 64 output ``Linear``: the same weights
                and work as ``nn.MultiheadAttention``.
* ``literal``   the paper's steps done literally: permute, pad to a multiple of p, reshape to
                (G, p, 64), ``nn.MultiheadAttention`` with ``key_padding_mask``, un-pad, un-permute.
* ``sgformer``  SGFormer's linear attention on (N, H, D) leaves.
* ``full``      exact attention, one SDPA over all N (skipped above ``--full-max-n``).
* ``rba_dropout`` (only when named) ``rba`` with attention dropout 0.2.
* ``floor``     the FLOP floor of RBA: the batched matmuls (G,H,p,D)x(G,H,D,p) and
                (G,H,p,p)x(G,H,p,D) forward plus their four backward matmuls, in chunks of groups
                (no softmax, no data movement).

Every configuration runs in a FRESH subprocess; its peak memory is ``ru_maxrss`` minus the same
process's ``ru_maxrss`` after imports. Times are the median of ``--repeats`` runs after one
warm-up run (a run longer than ``--time-cap`` seconds is reported alone). The variants are
alternated inside each (N, p), and ``--rounds`` repeats the whole sweep (runs pooled).
Workers run with ``OMP_WAIT_POLICY=PASSIVE`` by default: on a shared machine with more busy
threads than cores, spinning OpenMP threads made timings 3-10x slower and erratic. Prints a table last, writes ``results.csv`` and ``rba.png`` under
``--out`` and checks the targets: RBA memory slope <= 1.1 (log-log, N >= 25k), rba_layer >= 1.5x
faster than literal at every p, rba >= 10x faster than full at N = 50k, rba within 3x of the
floor at N = 1M, p = 256.
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

from dgl_rbgt.utils.memory import peak_rss_mb

D_MODEL, HEADS = 64, 4
HEAD_DIM = D_MODEL // HEADS
VARIANTS = ("rba", "rba_layer", "literal", "sgformer", "full", "floor")
#: Run only when named in ``--variants``: RBA with attention dropout 0.2 (on CPU, its groups run in
#: chunks that the backward pass recomputes: torch's fused kernel has no dropout).
EXTRA_VARIANTS = ("rba_dropout",)
P_FREE = ("sgformer", "full")  # variants that do not depend on the group size


# ----------------------------------------------------------------------------- worker



def _make_step(variant: str, n: int, p: int):
    """Return (prepare, step): prepare() draws fresh random inputs, step(inputs) runs fwd+bwd."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from dgl_rbgt.nn.functional import full_attention
    from dgl_rbgt.nn.functional import sgformer_attention
    from dgl_rbgt.nn import RBAConv
    from dgl_rbgt.nn.functional import random_batch_attention

    def leaves():
        qkv = [torch.randn(n, HEADS, HEAD_DIM, requires_grad=True) for _ in range(3)]
        return qkv, torch.randn(n, HEADS, HEAD_DIM)

    if variant in ("rba", "rba_dropout", "sgformer", "full"):
        fn = {
            "rba": lambda q, k, v: random_batch_attention(q, k, v, p),
            "rba_dropout": lambda q, k, v: random_batch_attention(q, k, v, p, dropout_p=0.2),
            "sgformer": lambda q, k, v: sgformer_attention(q, k, v),
            "full": lambda q, k, v: full_attention(q, k, v),
        }[variant]

        def step(inputs):
            (q, k, v), r = inputs
            out = fn(q, k, v)  # (N, H, D)
            (out * r).sum().backward()

        return leaves, step

    if variant == "rba_layer":
        import dgl

        graph = dgl.graph(([], []), num_nodes=n)
        conv = RBAConv(D_MODEL, HEAD_DIM, HEADS, p)
        out_proj = nn.Linear(D_MODEL, D_MODEL)

        def prepare():
            return torch.randn(n, D_MODEL, requires_grad=True), torch.randn(n, D_MODEL)

        def step(inputs):
            x, r = inputs
            out = out_proj(conv(graph, x).reshape(n, D_MODEL))  # (N, 64)
            (out * r).sum().backward()

        return prepare, step

    if variant == "literal":
        mha = nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True)
        groups = -(-n // p)
        pad = groups * p - n
        mask = torch.zeros(groups * p, dtype=torch.bool)
        mask[n:] = True  # True = padding, ignored as a key
        mask = mask.view(groups, p)

        def prepare():
            return torch.randn(n, D_MODEL, requires_grad=True), torch.randn(n, D_MODEL)

        def step(inputs):
            x, r = inputs
            perm = torch.randperm(n)
            xp = F.pad(x[perm], (0, 0, 0, pad)).view(groups, p, D_MODEL)  # (G, p, 64)
            out, _ = mha(xp, xp, xp, key_padding_mask=mask, need_weights=False)
            out = out.reshape(groups * p, D_MODEL)[:n][torch.argsort(perm)]  # (N, 64)
            (out * r).sum().backward()

        return prepare, step

    if variant == "floor":
        groups = -(-n // p)
        # Chunks of groups keep the (g, H, p, p) product near 64 MiB; FLOPs are unchanged.
        chunk = max(1, (16 << 20) // (HEADS * p * p))

        def prepare():
            shapes = [(min(chunk, groups - s), HEADS, p, HEAD_DIM) for s in range(0, groups, chunk)]
            return [[torch.randn(sh, requires_grad=True) for _ in range(3)] + [torch.randn(sh)]
                    for sh in shapes]

        def step(inputs):
            for q, k, v, r in inputs:
                s = q @ k.transpose(-1, -2)  # (g, H, p, p)
                out = s @ v  # (g, H, p, D)
                (out * r).sum().backward()  # 4 more matmuls of the same shapes

        return prepare, step

    raise ValueError(f"unknown variant {variant!r}")


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    import dgl  # noqa: F401  (imported before the baseline: part of every variant's import cost)

    import dgl_rbgt.nn  # noqa: F401

    torch.manual_seed(args.seed)
    baseline = peak_rss_mb()
    prepare, step = _make_step(args.variant, args.n, args.p)
    times = []
    for i in range(args.repeats + 1):
        inputs = prepare()  # fresh random inputs per run, never timed
        t0 = time.perf_counter()
        step(inputs)
        dt = time.perf_counter() - t0
        del inputs
        if i == 0:
            if dt > args.time_cap:  # too slow to repeat: report the one run
                times.append(dt)
                break
            continue  # warm-up
        times.append(dt)
    print(json.dumps({"times": times, "peak_mb": peak_rss_mb() - baseline}))


# ----------------------------------------------------------------------------- driver


def run_config(args, variant: str, n: int, p: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--variant", variant, "--n", str(n), "--p", str(p),
           "--repeats", str(args.repeats), "--threads", str(args.threads),
           "--time-cap", str(args.time_cap), "--seed", str(args.seed)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OUTDATED_IGNORE="1")
    if args.omp_wait_policy != "default":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    row = {"variant": variant, "n": n, "p": p if variant not in P_FREE else "", "status": "ok"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.config_timeout)
    except subprocess.TimeoutExpired:
        row["status"] = f"timeout>{args.config_timeout}s"
        return row
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        row["status"] = f"failed rc={proc.returncode}: {tail[0][:80]}"
        return row
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(times=res["times"], peaks=[res["peak_mb"]])
    return with_stats(row)


def with_stats(row: dict) -> dict:
    t = row["times"]
    row.update(median_ms=1e3 * statistics.median(t), min_ms=1e3 * min(t), max_ms=1e3 * max(t),
               runs=len(t), peak_mb=statistics.median(row["peaks"]))
    return row


def merge(old: dict, new: dict) -> dict:
    """Pool the timed runs of several rounds; memory is the median over rounds."""
    if old["status"] != "ok":
        return new
    if new["status"] != "ok":
        return old
    old["times"] += new["times"]
    old["peaks"] += new["peaks"]
    return with_stats(old)


def skip_reason(args, variant: str, n: int, p: int) -> str | None:
    if variant == "full" and n > args.full_max_n:
        return f"skipped: N > --full-max-n {args.full_max_n}"
    # The literal version materialises (G, H, p, p) weights (plus softmax output and grad).
    if variant == "literal" and 3 * 4 * HEADS * n * p / 2**30 > args.literal_max_gb:
        return f"skipped: ~{3 * 4 * HEADS * n * p / 2**30:.0f} GB > --literal-max-gb"
    return None


def loglog_slope(xs, ys) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def summarise(rows, args) -> list[str]:
    ok = {(r["variant"], r["n"], r["p"]): r for r in rows if r["status"] == "ok"}

    def get(variant, n, p):
        return ok.get((variant, n, "" if variant in P_FREE else p))

    lines = []
    for p in args.group_sizes:
        pts = [(n, ok[("rba", n, p)]["peak_mb"]) for n in args.sizes
               if ("rba", n, p) in ok and n >= 25_000 and ok[("rba", n, p)]["peak_mb"] > 0]
        if len(pts) >= 2:
            s = loglog_slope(*zip(*pts))
            lines.append(f"rba peak-memory slope p={p} over N={pts[0][0]}..{pts[-1][0]}: {s:.2f} "
                         f"(target <= 1.1: {'met' if s <= 1.1 else 'MISSED'})")
    for p in args.group_sizes:
        ratios = [(n, get("literal", n, p)["median_ms"] / get("rba_layer", n, p)["median_ms"])
                  for n in args.sizes if get("literal", n, p) and get("rba_layer", n, p)]
        core = [(n, get("literal", n, p)["median_ms"] / get("rba", n, p)["median_ms"])
                for n in args.sizes if get("literal", n, p) and get("rba", n, p)]
        if ratios:
            worst = min(r for _, r in ratios)
            lines.append(f"literal / rba_layer p={p}: " + ", ".join(f"N={n}: {r:.2f}x" for n, r in ratios)
                         + f" (target >= 1.5x: {'met' if worst >= 1.5 else 'MISSED'})"
                         + "; literal / rba core: " + ", ".join(f"{r:.2f}x" for _, r in core))
    for p in args.group_sizes:
        if get("full", 50_000, p) and get("rba", 50_000, p):
            r = get("full", 50_000, p)["median_ms"] / get("rba", 50_000, p)["median_ms"]
            lines.append(f"full / rba at N=50000 p={p}: {r:.1f}x (target >= 10x: {'met' if r >= 10 else 'MISSED'})")
    nmax = max(args.sizes)
    for p in args.group_sizes:
        if get("floor", nmax, p) and get("rba", nmax, p):
            r = get("rba", nmax, p)["median_ms"] / get("floor", nmax, p)["median_ms"]
            tgt = "" if (nmax, p) != (1_000_000, 256) else f" (target <= 3x: {'met' if r <= 3 else 'MISSED'})"
            lines.append(f"rba / floor at N={nmax} p={p}: {r:.2f}x{tgt}")
    return lines


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5))
    series = {}
    for r in rows:
        if r["status"] == "ok":
            label = r["variant"] + (f" p={r['p']}" if r["p"] != "" else "")
            series.setdefault(label, []).append((r["n"], r["median_ms"], r["peak_mb"]))
    for i, (label, pts) in enumerate(sorted(series.items())):
        pts.sort()
        n, t, m = zip(*pts)
        style = dict(marker="o", color=f"C{i % 10}", linestyle="-" if i < 10 else "--", label=label)
        ax_t.plot(n, t, **style)
        if label.split()[0] != "floor":  # the floor runs in chunks: its memory means nothing
            ax_m.plot(n, [max(x, 1e-1) for x in m], **style)
    for ax, ylabel in ((ax_t, "forward+backward time (ms, median)"), (ax_m, "peak RSS above baseline (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (nodes)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7, ncol=2)
    ax_m.legend(fontsize=7, ncol=2)
    fig.suptitle(f"one attention layer, d_model={D_MODEL}, H={HEADS}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+",
                    default=[10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000])
    ap.add_argument("--group-sizes", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS + EXTRA_VARIANTS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench-results/rba")
    ap.add_argument("--full-max-n", type=int, default=50_000, help="largest N for full attention")
    ap.add_argument("--literal-max-gb", type=float, default=6.0,
                    help="skip the literal variant when its (G,H,p,p) tensors exceed this")
    ap.add_argument("--time-cap", type=float, default=20.0,
                    help="a first run longer than this (s) is reported alone, without repeats")
    ap.add_argument("--rounds", type=int, default=1,
                    help="sweep all configurations this many times, alternating; runs are pooled")
    ap.add_argument("--omp-wait-policy", default="PASSIVE", choices=["PASSIVE", "ACTIVE", "default"],
                    help="OMP_WAIT_POLICY for the workers: on a shared, oversubscribed machine "
                         "spinning OpenMP threads make timings 3-10x slower and erratic")
    ap.add_argument("--config-timeout", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--from-csv", help="re-plot and re-summarise an earlier results.csv, run nothing")
    # Worker mode (one configuration in this fresh process).
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--p", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_csv:
        rows = read_csv(args.from_csv)
        args.sizes = sorted({r["n"] for r in rows})
        args.group_sizes = sorted({r["p"] for r in rows if r["p"] != ""})
        plot(rows, out / "rba.png")
        report(rows, args, out)
        return
    results: dict = {}
    started = time.perf_counter()
    print(f"threads={args.threads} OMP_WAIT_POLICY={args.omp_wait_policy} rounds={args.rounds}", flush=True)
    for rnd in range(args.rounds):
        for n in args.sizes:
            for i, p in enumerate(args.group_sizes):
                # Alternate the variants inside each (N, p); p-free ones run once per N.
                for variant in args.variants:
                    if variant in P_FREE and i > 0:
                        continue
                    key = (variant, n, p if variant not in P_FREE else "")
                    reason = skip_reason(args, variant, n, p)
                    if reason:
                        row = {"variant": variant, "n": n, "p": key[2], "status": reason}
                    else:
                        row = run_config(args, variant, n, p)
                    results[key] = merge(results[key], row) if key in results else row
                    msg = (f"{row['median_ms']:.1f} ms [{row['min_ms']:.1f}-{row['max_ms']:.1f}] "
                           f"{row['peak_mb']:.0f} MB" if row["status"] == "ok" else row["status"])
                    print(f"[{time.perf_counter() - started:6.0f}s] round {rnd + 1} N={n} "
                          f"p={row['p'] or '-'} {variant}: {msg}", flush=True)
    rows = list(results.values())

    fields = ["variant", "n", "p", "median_ms", "min_ms", "max_ms", "runs", "peak_mb", "status"]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in fields})
    plot(rows, out / "rba.png")
    report(rows, args, out)


def read_csv(path) -> list[dict]:
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            r["n"] = int(r["n"])
            r["p"] = int(r["p"]) if r["p"] else ""
            if r["status"] == "ok":
                for k in ("median_ms", "min_ms", "max_ms", "peak_mb"):
                    r[k] = float(r[k])
                r["runs"] = int(r["runs"])
            rows.append(r)
    return rows


def report(rows, args, out: Path) -> None:
    print(f"\nthreads={args.threads} repeats={args.repeats} rounds={args.rounds} "
          f"OMP_WAIT_POLICY={args.omp_wait_policy} d_model={D_MODEL} H={HEADS}; CSV and PNG in {out}/")
    print(f"{'N':>9} {'p':>5} {'variant':>10} {'median ms':>10} {'spread ms':>19} {'peak MB':>8}  status")
    for r in rows:
        if r["status"] == "ok":
            spread = f"{r['min_ms']:.0f}-{r['max_ms']:.0f}"
            print(f"{r['n']:>9} {str(r['p']) or '-':>5} {r['variant']:>10} {r['median_ms']:>10.1f} "
                  f"{spread:>19} {r['peak_mb']:>8.0f}  ok ({r['runs']} runs)")
        else:
            print(f"{r['n']:>9} {str(r['p']) or '-':>5} {r['variant']:>10} {'':>10} {'':>19} {'':>8}  {r['status']}")
    print()
    for line in summarise(rows, args):
        print(line)


if __name__ == "__main__":
    main()
