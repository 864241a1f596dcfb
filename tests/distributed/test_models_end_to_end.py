"""RBTransformer and Spexphormer stage 2 on DistDGL: two hosts in network namespaces (fallback: one
host, two trainers on loopback, as in test_end_to_end.py), each model's shipped local recipe on a
3000-node quickstart graph.

Checks: the run completes and the loss falls; test accuracy close to the single-machine run of the
same recipe (2 points; 6 for Spexphormer, whose trainers redraw their tables with other random
numbers); for Spexphormer, the distributed evaluation equals a single-machine evaluation of the
same weights on the same tables (the evaluation tables stored in the partitions are the
single-machine draws, ids rewritten).
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import statistics
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from dgl_rbgt.config import load_distributed_recipe
from netns import EmulatedHosts, namespaces_available
from dgl_rbgt.distributed.partition import partition

pytestmark = pytest.mark.slow  # whole DistDGL jobs: minutes, not seconds

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
# CSBM's default homophily and signal (easier than the quickstart's) keep seed noise well under
# the 2-point comparison at this size; one thread per process on two cores.
OVERRIDES = ["dataset.params.num_nodes=3000", "dataset.params.homophily=0.8", "dataset.params.signal=1.0",
             "train.epochs=25", "train.patience=null", "train.threads=1", "output.plot=false"]
# RBTransformer: random node batches of 1500 nodes, one per trainer and step, as a single machine's
# two per step (SGFormer's accuracy depends on the batch size: the induced subgraphs keep a
# fraction batch/N of each node's edges).
EXTRA = {"rbtransformer_local": ["train.batch_size=1500", "train.eval_batch_size=3000", "train.epochs=40"],
         # all 1500 training nodes in one step: one batch on one machine, a half per trainer
         # random parts, written one at a time by dgl_rbgt's part_writer: the equality of evaluations
         # below checks them end to end (tables, scores and features read through DistDGL)
         "spexphormer_local": ["train.batch_size=1500", "train.epochs=40", "train.lr=0.01", "stage1.train.epochs=30",
                               "distributed.partition_method=random"]}

# The small, briefly trained Spexphormer learns this graph less well than RBTransformer (stage 1 of
# 15 epochs, k = 5): its sharp check is the equality of evaluations below.
FLOOR = {"rbtransformer_local": 0.9, "spexphormer_local": 0.5}
# Test accuracy, distributed vs single machine, same seed. Spexphormer's trainers redraw the
# training tables every epoch with their own random numbers (same law, other draws), so the two
# runs differ by the noise of the draws: on this 3000-node graph single-machine seeds 0-4 gave
# 67.6, 63.7, 70.7, 66.7 and 76.3 (sd 4.7 points); RBTransformer's batches follow the same law
# with the same seeds.
TOLERANCE = {"rbtransformer_local": 0.02, "spexphormer_local": 0.06}


@pytest.fixture(scope="module")
def hosts():
    ok, why = namespaces_available()
    if os.environ.get("DGL_RBGT_TEST_HOSTS") == "loopback":
        ok, why = False, "DGL_RBGT_TEST_HOSTS=loopback"
    if not ok:
        message = f"distributed model tests run the fallback (one host, two trainers on loopback): {why}"
        print(message)
        warnings.warn(message, UserWarning, stacklevel=1)
        yield None
        return
    with EmulatedHosts(2, shm_size="1g") as emulated:
        yield emulated


def prepared(name: str, hosts, work: Path, free_ports):
    data = yaml.safe_load((ROOT / f"recipes/distributed/{name}.yaml").read_text())
    if hosts is not None:
        data["distributed"].update(hosts=hosts.host_entries(), trainers_per_host=1)
    else:
        port, master = free_ports(2)
        data["distributed"].update(hosts=[{"address": "127.0.0.1"}], trainers_per_host=2, port=port,
                                   master_port=master)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    sets = OVERRIDES + EXTRA[name]
    recipe, dist = load_distributed_recipe(path, sets)
    return path, recipe, dist, sum((["--set", o] for o in sets), [])


@pytest.mark.parametrize("name", ["rbtransformer_local", "spexphormer_local"])
def test_model_trains_distributed_like_one_machine(name, hosts, tmp_path, watched, helpers):
    from dgl_rbgt.train.pipeline import run_recipe

    path, recipe, dist, sets = prepared(name, hosts, tmp_path, helpers.free_ports)
    with contextlib.chdir(tmp_path):
        report = partition(recipe, dist)
        single = run_recipe(recipe, run_dir=tmp_path / "single", progress=False).summary
    run_dir = tmp_path / "run"
    w = watched([PY, "-m", "dgl_rbgt", "launch", str(path), "--run-dir", str(run_dir), *sets],
                cwd=tmp_path, name=f"launch-{name}")
    rc = w.wait(300)
    out = w.output()
    assert rc == 0, out[-6000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["train_loss"]) for r in rows]
    assert len(rows) == recipe.train.epochs and statistics.mean(losses[-3:]) < 0.8 * statistics.mean(losses[:2]), losses
    if name == "spexphormer_local":
        assert_same_evaluation(recipe, report, tmp_path, run_dir, summary)
    one, many = single["test_metric"], summary["test_metric"]
    print(f"{name}: test accuracy single machine {one:.4f}, distributed {many:.4f}")
    assert abs(one - many) <= TOLERANCE[name], (one, many)
    assert many > FLOOR[name]  # well above chance (0.2): it learned
    assert not helpers.alive(w.seen.values())


def assert_same_evaluation(recipe, report, work: Path, run_dir: Path, summary: dict) -> None:
    """The best weights, evaluated on one machine with TableBatching' own evaluation draws, give
    the distributed run's numbers."""
    from dgl_rbgt.train.checkpoint import load_checkpoint
    from dgl_rbgt.train.loop import Trainer, seed_everything
    from dgl_rbgt.train.metrics import get_metric
    from dgl_rbgt.batching import TableBatching
    from dgl_rbgt.train.pipeline import build_model, prepare_dataset, splits_of

    seed_everything(recipe.seed)
    dataset, graph = prepare_dataset(recipe)
    model = build_model(recipe, report["in_feats"], report["num_classes"])
    model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    scores = load_checkpoint(work / "partitions" / recipe.name / "scores.pt")["scores"]
    batching = TableBatching(graph, scores=scores, batch_size=recipe.train.batch_size,
                               eval_batch_size=recipe.train.eval_batch_size, **recipe.neighbour_tables.model_dump())
    trainer = Trainer(model, batching, graph.ndata["label"], splits_of(graph), get_metric(dataset.metric),
                      recipe.train, None, progress=False)
    result = trainer.evaluate()
    for split in ("val", "test"):
        assert result[f"{split}_metric"] == pytest.approx(summary[f"{split}_metric"], abs=1e-6), split
