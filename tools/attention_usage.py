"""How much does a trained RBTransformer's global attention actually mix nodes?

For each finished run directory (``recipe.yaml`` + ``best.pt``) the tool rebuilds the model,
feeds it the run's graph in evaluation mode, catches the input of the first attention layer and
reports:

* ``mix``: ``||attn(x) - v|| / ||v||`` over all nodes, where ``v`` is each node's own value
  projection. 0 means the layer returns every node's own value: it attends to nothing else.
* for softmax attention (``rba``, ``full``): the attention weights' entropy divided by its
  maximum ``log(group size)`` (1 = uniform over the group, the layer then returns the group mean
  of ``v``) and the mean over nodes of the largest weight.

SGFormer's attention divides ``Q`` and ``K`` by their Frobenius norms and adds ``N * v_i`` to the
numerator and ``N`` to the denominator, so its global term weighs about ``1/N`` against the
node's own value whatever the weights are; ``mix`` measures what that leaves.

    DGL_RBGT_DATA=../shared/data tools/in-venv python tools/attention_usage.py \\
        bench-results/accuracy-rba/runs/rbtransformer_cora-rba-s0 bench-results/accuracy-rba/runs/rbtransformer_cora-sgformer-s0

Prints a table and writes bench-results/attention_usage/<name>.csv.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import torch

from dgl_rbgt.nn import RBAConv
from dgl_rbgt.config import load_recipe
from dgl_rbgt.train import builders
from dgl_rbgt.train.checkpoint import load_checkpoint


def attention_usage(conv: torch.nn.Module, graph, x: torch.Tensor) -> dict[str, float]:
    """``mix`` (and, for softmax attention, ``entropy_ratio`` and ``max_weight``) of one layer."""
    n = x.shape[0]
    with torch.no_grad():
        v = conv.fc_v(x).view(n, conv._num_heads, conv._out_feats)
        if isinstance(conv, RBAConv):
            out, att = conv(graph, x, get_attention=True)
            weights, members = att.weights, att.members
            if weights.dim() == 4:  # eval_mode="mean": out is the mean; weights of the first grouping
                weights, members = weights[0], members[0]
            valid = (members >= 0).unsqueeze(1)  # padding slots of smaller groups
            size = valid.sum(-1).clamp_min(2).float()  # (N, 1)
            p = weights.clamp_min(1e-30)
            entropy = -(torch.where(valid, p * p.log(), torch.zeros_like(p))).sum(-1)  # (N, H)
            extra = {"entropy_ratio": float((entropy / size.log()).mean()),
                     "max_weight": float(weights.max(-1).values.mean())}
        else:
            out = conv(graph, x)
            extra = {"entropy_ratio": math.nan, "max_weight": math.nan}
        mix = float((out - v).norm() / v.norm())
    return {"mix": mix, **extra}


def first_attention_input(model, graph, feat: torch.Tensor) -> torch.Tensor:
    """The tensor the model feeds its first attention layer, in evaluation mode."""
    caught = {}

    def keep(_module, args):
        caught["x"] = args[1]  # forward(graph, feat); returning None leaves the call as it is

    hook = model.attns[0].register_forward_pre_hook(keep)
    try:
        with torch.no_grad():
            model(graph, feat)
    finally:
        hook.remove()
    return caught["x"]


def measure(run_dir: Path) -> dict:
    recipe = load_recipe(run_dir / "recipe.yaml")
    if recipe.model.name != "rbtransformer" or recipe.model.attention == "none":
        kind = recipe.model.name if recipe.model.name != "rbtransformer" else "rbtransformer without attention"
        raise ValueError(f"{run_dir}: needs an rbtransformer run with global attention, got {kind}")
    dataset, graph = builders.prepare_dataset(recipe)
    model = builders.build_model(recipe, graph.ndata["feat"].shape[1], dataset.num_classes)
    model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    model.eval()
    x = first_attention_input(model, graph, graph.ndata["feat"])
    return {"run": run_dir.name, "dataset": recipe.dataset.name, "attention": recipe.model.attention,
            "nodes": graph.num_nodes(), **attention_usage(model.attns[0], graph, x)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories with recipe.yaml and best.pt")
    parser.add_argument("--out", type=Path, default=Path("bench-results/attention_usage"))
    parser.add_argument("--name", default="attention_usage")
    args = parser.parse_args(argv)
    for d in args.runs:
        if not (d / "recipe.yaml").is_file() or not (d / "best.pt").is_file():
            parser.error(f"{d}: not a finished run directory (needs recipe.yaml and best.pt)")
    try:
        rows = [measure(d) for d in args.runs]
    except ValueError as exc:
        parser.error(str(exc))
    print(f"{'run':40s} {'attention':9s} {'nodes':>7s} {'mix':>8s} {'entropy/max':>11s} {'max weight':>10s}")
    for r in rows:
        print(f"{r['run']:40s} {r['attention']:9s} {r['nodes']:7d} {r['mix']:8.4f} "
              f"{r['entropy_ratio']:11.4f} {r['max_weight']:10.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.name}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
