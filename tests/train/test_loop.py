"""The training loop: learns, repeats exactly by seed, resumes exactly, writes its run dir."""
import json
import math

import dgl
import pytest
import torch

from dgl_rbgt.errors import CheckpointError, TrainingDiverged, UserError
from dgl_rbgt.models import GAT, GCN, GPSTransformer
from dgl_rbgt.config import TrainSection
from dgl_rbgt.batching import FullGraph, NeighborSampling, NodeBatches
from dgl_rbgt.train.checkpoint import save_checkpoint
from dgl_rbgt.train.loop import Trainer
from dgl_rbgt.train.metrics import get_metric
from dgl_rbgt.train.rundir import RunDir

TIMING = {"epoch_seconds", "eval_seconds"}


def toy_graph(n=300, classes=3, seed=0):
    """A homophilous random graph whose labels are learnable from its noisy one-hot features."""
    gen = torch.Generator().manual_seed(seed)
    label = torch.randint(0, classes, (n,), generator=gen)
    # each edge joins two nodes of the same class (so message passing helps, not hurts)
    src = torch.randint(0, n, (n * 4,), generator=gen)
    order = torch.argsort(label)
    counts = torch.bincount(label, minlength=classes)
    offsets = torch.cumsum(counts, 0) - counts
    pick = (torch.rand(len(src), generator=gen) * counts[label[src]]).long()
    dst = order[offsets[label[src]] + pick]
    g = dgl.to_bidirected(dgl.graph((src, dst), num_nodes=n))
    g.ndata["feat"] = torch.nn.functional.one_hot(label, classes).float() + torch.randn(n, classes, generator=gen)
    g.ndata["label"] = label
    perm = torch.randperm(n, generator=gen)
    for i, split in enumerate(("train", "val", "test")):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[perm[i * n // 3:(i + 1) * n // 3]] = True
        g.ndata[f"{split}_mask"] = mask
    return g


def splits(g):
    return {s: torch.nonzero(g.ndata[f"{s}_mask"], as_tuple=True)[0] for s in ("train", "val", "test")}


def make_trainer(g, run_dir=None, epochs=15, batching="full", lr=0.02, model=None, **cfg):
    model = GCN(g.ndata["feat"].shape[1], 3, hidden=16) if model is None else model
    if batching == "full":
        b = FullGraph(g)
    elif batching == "neighbor":
        b = NeighborSampling(g, fanouts=[5, 5], batch_size=64)
    else:
        b = NodeBatches(g, batch_size=100)
    config = TrainSection(epochs=epochs, lr=lr, batching=batching, fanouts=[5, 5] if batching == "neighbor" else None, **cfg)
    return Trainer(model, b, g.ndata["label"], splits(g), get_metric("accuracy"), config,
                   RunDir(run_dir).create() if run_dir else None, seed=3, progress=False)


def strip(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def test_learns_above_chance():
    g = toy_graph()
    result = make_trainer(g, epochs=40).fit()
    assert result.summary["test_metric"] > 0.8  # features alone separate the classes


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("batching", ["full", "neighbor", "node_batch"])
def test_same_seed_same_numbers(batching, two_threads):
    """Also with two threads, where DGL's CPU sampler would otherwise draw per-thread streams."""
    g = toy_graph()
    torch.manual_seed(0)
    a = make_trainer(g, epochs=4, batching=batching)
    torch.manual_seed(0)
    b = make_trainer(g, epochs=4, batching=batching)
    assert strip(a.fit().history) == strip(b.fit().history)


class Crash(Exception):
    pass


@pytest.mark.parametrize("batching", ["full", "neighbor"])
def test_resume_after_crash_equals_uninterrupted(tmp_path, batching):
    g = toy_graph()
    torch.manual_seed(0)
    whole = make_trainer(g, tmp_path / "whole", epochs=10, batching=batching, warmup_epochs=2).fit()

    torch.manual_seed(0)
    crashing = make_trainer(g, tmp_path / "cut", epochs=10, batching=batching, warmup_epochs=2)
    steps = {"n": 0}
    real_step = crashing.train_step

    def step_then_crash(batch):
        steps["n"] += 1
        if steps["n"] > 6 * crashing.batching.num_train_batches(crashing.splits["train"]):
            raise Crash  # dies in epoch 6, after the checkpoint of epoch 5
        return real_step(batch)

    crashing.train_step = step_then_crash
    with pytest.raises(Crash):
        crashing.fit()
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["epoch"] == 5

    torch.manual_seed(123)  # a different init, fully replaced by the checkpoint
    resumed = make_trainer(g, tmp_path / "cut", epochs=10, batching=batching, warmup_epochs=2).fit(resume=True)
    assert strip(resumed.history) == strip(whole.history)
    for key in ("best_epoch", "val_metric", "test_metric", "epochs_run"):
        assert resumed.summary[key] == whole.summary[key]


def test_checkpoint_written_atomically_and_loadable(tmp_path):
    g = toy_graph()
    t = make_trainer(g, tmp_path, epochs=3)
    t.fit()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 3
    assert not list(tmp_path.glob(".*.tmp"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and 0 <= summary["test_metric"] <= 1
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 4


def test_summary_records_the_allocator_settings(tmp_path, monkeypatch):
    g = toy_graph()
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert make_trainer(g, tmp_path / "a", epochs=1).fit().summary["glibc_tunables"] is None
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=16777216")
    make_trainer(g, tmp_path / "b", epochs=1).fit()
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["glibc_tunables"] == "glibc.malloc.mmap_threshold=16777216"


@pytest.mark.parametrize("batching", ["full", "node_batch"])
@pytest.mark.parametrize("eval_mode", ["fixed", "mean"])
def test_how_often_it_evaluates_does_not_change_training(batching, eval_mode):
    """Runs that evaluate every epoch or every third train identically (docs/results_gps.md reads
    both selections from one run): every epoch re-seeds from (seed, epoch), and evaluation (RBA in
    either evaluation mode here) must leave the parameters and the training state as they were."""
    g = toy_graph()
    losses = []
    for every in (1, 3):
        torch.manual_seed(0)
        model = GPSTransformer(3, 3, hidden=8, layers=2, attention="rba", group_size=16, eval_mode=eval_mode,
                               eval_repeats=2, dropout=0.3)
        history = make_trainer(g, epochs=6, batching=batching, model=model, eval_every=every).fit().history
        losses.append([row["train_loss"] for row in history])
    assert losses[0] == losses[1]


def test_early_stopping(tmp_path):
    g = toy_graph()
    t = make_trainer(g, tmp_path, epochs=200, patience=3, lr=1e-12)
    result = t.fit()
    assert result.summary["stopped_early"] and result.summary["epochs_run"] == 4


@pytest.mark.parametrize("select_by", ["metric", "loss"])
def test_best_epoch_follows_select_by(tmp_path, select_by):
    g = toy_graph()
    # lr high enough that validation loss turns up again while accuracy plateaus: the rules disagree
    result = make_trainer(g, tmp_path, epochs=40, lr=0.2, select_by=select_by).fit()
    hist = result.history
    if select_by == "loss":
        expected = min(hist, key=lambda r: r["val_loss"])  # first minimum, as min() keeps the first
    else:
        expected = max(hist, key=lambda r: r["val_metric"])
    summary = result.summary
    assert summary["best_epoch"] == expected["epoch"]
    assert (summary["val_metric"], summary["val_loss"], summary["test_metric"]) == \
        (expected["val_metric"], expected["val_loss"], expected["test_metric"])
    assert summary["selected_by"] == ("validation loss" if select_by == "loss" else "validation accuracy")
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == expected["epoch"]


def test_the_two_rules_pick_different_epochs_on_the_toy_graph(tmp_path):
    # guards the test above against passing only because both rules agree
    g = toy_graph()
    torch.manual_seed(0)
    by_metric = make_trainer(g, tmp_path / "m", epochs=40, lr=0.2, select_by="metric").fit().summary
    torch.manual_seed(0)
    by_loss = make_trainer(g, tmp_path / "l", epochs=40, lr=0.2, select_by="loss").fit().summary
    assert by_metric["best_epoch"] != by_loss["best_epoch"]


def test_patience_counts_on_the_selected_quantity(tmp_path):
    g = toy_graph()
    torch.manual_seed(0)
    history = make_trainer(g, tmp_path / "full", epochs=40, lr=0.2, select_by="loss").fit().history
    losses = [r["val_loss"] for r in history]

    def stall_end(values):  # the epoch after which 3 evaluations in a row did not lower the value
        best, stall = math.inf, 0
        for epoch, v in enumerate(values):
            best, stall = (v, 0) if v < best else (best, stall + 1)
            if stall == 3:
                return epoch
        return None

    stop_after = stall_end(losses)
    assert stop_after is not None and stop_after < 39
    assert stall_end([-r["val_metric"] for r in history]) != stop_after  # counting on accuracy would differ
    torch.manual_seed(0)
    stopped = make_trainer(g, tmp_path / "stop", epochs=40, lr=0.2, select_by="loss", patience=3).fit()
    assert stopped.summary["stopped_early"] and stopped.summary["epochs_run"] == stop_after + 1
    assert [r["val_loss"] for r in stopped.history] == losses[:stop_after + 1]


def test_a_checkpoint_without_a_recorded_loss_resumes_under_select_by_loss(tmp_path):
    # checkpoints written before select_by existed keep no val_loss in their best epoch
    g = toy_graph()
    torch.manual_seed(0)
    make_trainer(g, tmp_path, epochs=3, lr=0.2).fit()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del state["best"]["val_loss"]
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    resumed = make_trainer(g, tmp_path, epochs=6, lr=0.2, select_by="loss").fit(resume=True)
    assert resumed.summary["epochs_run"] == 6
    assert resumed.summary["best_epoch"] >= 3  # the first resumed evaluation beats an unknown loss


def _poison_after(calls, make_bad):
    """A hook that passes its value through ``calls`` times, then returns ``make_bad(value)``."""
    seen = {"n": 0}

    def hook(value):
        seen["n"] += 1
        return make_bad(value) if seen["n"] > calls else value
    return hook


def test_a_non_finite_gradient_stops_training_before_the_step(tmp_path):
    g = toy_graph()
    trainer = make_trainer(g, tmp_path / "run", epochs=10)
    weight = dict(trainer.model.named_parameters())["convs.0.weight"]
    before = {}

    def snapshot_then_nan(grad):
        before.update({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
        return grad * math.nan
    weight.register_hook(_poison_after(3, snapshot_then_nan))
    with pytest.raises(TrainingDiverged, match=r"in epoch 3: the gradient of convs\.0\.weight is not finite") as err:
        trainer.fit()
    assert isinstance(err.value, UserError)  # the CLI prints one line and exits 2
    for name, p in trainer.model.named_parameters():
        assert torch.equal(p, before[name]) and torch.isfinite(p).all(), name
    assert (tmp_path / "run" / "checkpoint.pt").exists()  # epochs 0-2 stay on disk


def test_a_non_finite_loss_stops_training():
    g = toy_graph()
    trainer = make_trainer(g, epochs=10)
    bad = _poison_after(2, lambda logits: logits + math.inf)
    trainer.model.register_forward_hook(lambda m, args, out: bad(out) if m.training else out)
    with pytest.raises(TrainingDiverged, match=r"in epoch 2: the training loss is nan"):
        trainer.fit()


def test_evaluation_and_best_pt_use_the_weight_average(tmp_path):
    """The metrics of every evaluated epoch are those of the averaged weights (recomputed here from
    best.pt), the training itself is unchanged by the average, and best.pt holds the average."""
    g = toy_graph()
    torch.manual_seed(0)
    plain = make_trainer(g, tmp_path / "plain", epochs=8).fit()
    torch.manual_seed(0)
    trainer = make_trainer(g, tmp_path / "ema", epochs=8, ema_decay=0.8)
    averaged = trainer.fit()
    assert [r["train_loss"] for r in averaged.history] == [r["train_loss"] for r in plain.history]
    assert [r["val_metric"] for r in averaged.history] != [r["val_metric"] for r in plain.history]
    best = torch.load(tmp_path / "ema" / "best.pt", weights_only=True)
    trainer.model.load_state_dict(best["model"])
    trainer.average = None  # evaluate best.pt's weights as they are
    assert trainer.evaluate()["val_metric"] == averaged.summary["val_metric"]
    last = torch.load(tmp_path / "ema" / "checkpoint.pt", weights_only=True)  # both, for resuming
    key = next(k for k, v in last["model"].items() if v.is_floating_point())
    assert not torch.equal(last["model"][key], last["weight_average"]["module." + key])


def test_resume_with_the_average_equals_uninterrupted(tmp_path):
    g = toy_graph()
    torch.manual_seed(0)
    whole = make_trainer(g, tmp_path / "whole", epochs=8, ema_decay=0.8).fit()
    torch.manual_seed(0)
    crashing = make_trainer(g, tmp_path / "cut", epochs=8, ema_decay=0.8)
    real_step, steps = crashing.train_step, {"n": 0}

    def step_then_crash(batch):
        steps["n"] += 1
        if steps["n"] > 5:
            raise Crash
        return real_step(batch)

    crashing.train_step = step_then_crash
    with pytest.raises(Crash):
        crashing.fit()
    torch.manual_seed(123)
    resumed = make_trainer(g, tmp_path / "cut", epochs=8, ema_decay=0.8).fit(resume=True)
    assert strip(resumed.history) == strip(whole.history)


def test_resuming_with_the_average_from_a_checkpoint_without_one_is_refused(tmp_path):
    g = toy_graph()
    make_trainer(g, tmp_path, epochs=2).fit()
    with pytest.raises(CheckpointError, match="holds no weight average.*ema_decay 0.8"):
        make_trainer(g, tmp_path, epochs=4, ema_decay=0.8).fit(resume=True)
