"""Every user mistake gets one line and exit status 2 (issue: "tried as a new user would").

Each case is a class of mistake; the CLI runs in this process (fast) and must never end in a
traceback, whatever part of the library finds the problem.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from dgl_rbgt.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = "recipes/quickstart.yaml"
TINY = ["--set", "dataset.params.num_nodes=300", "--set", "train.epochs=2", "--set", "train.warmup_epochs=0",
        "--no-progress"]


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def one_line(proc, pattern):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(pattern, lines[0]), lines[0]


GCN, GAT = "recipes/baselines/gcn_cora.yaml", "recipes/baselines/gat_cora.yaml"


@pytest.mark.parametrize("recipe, overrides, pattern", [
    (QUICK, ["model.hidden=0"], r"model\.hidden: must be >= 1, got 0"),
    (GCN, ["model.hidden=0"], r"model\.hidden: must be >= 1, got 0"),
    (GCN, ["model.layers=0"], r"model\.layers: must be >= 1, got 0"),  # used to train one layer silently
    (GAT, ["model.hidden=0"], r"model\.hidden: must be >= 1"),
    (GAT, ["model.num_heads=-1"], r"model\.num_heads: must be >= 1, got -1"),
    (QUICK, ["seed=-1"], r"seed: Input should be greater than or equal to 0"),
    (QUICK, [f"seed={2**70}"], r"seed: Input should be less than or equal to 4294967295"),
    (GCN, ["model.hidden=0", "model.dropout=1.5"], r"model\.hidden: must be >= 1.*model\.dropout: must be in \[0, 1\)"),
    (QUICK, ["transforms=[{name: expander, degree: 0}]"], r"transforms\.0\.degree: must be >= 1"),
])
def test_model_arguments_are_checked_with_the_recipe(capsys, tmp_path, recipe, overrides, pattern):
    sets = sum((["--set", o] for o in overrides), [])
    proc = run_cli(capsys, "train", recipe, "--run-dir", str(tmp_path / "run"), *sets, *TINY)
    one_line(proc, pattern)
    assert not (tmp_path / "run").exists()  # refused before any work


def test_exphormer_without_typed_edges_is_refused_before_work(capsys, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: t\ndataset: {name: csbm}\nmodel: {name: exphormer}\n")
    proc = run_cli(capsys, "train", str(path), "--run-dir", str(tmp_path / "run"), *TINY)
    one_line(proc, r"attends over typed edges .*expander")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["train:\n  lr: 1e-3\n  weight_decay: 5E-4\n", "train:\n  lr: +1e-2\n"])
def test_numbers_as_people_write_them(tmp_path, text):
    from dgl_rbgt.config import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("name: t\ndataset: {name: cora}\nmodel: {name: gcn, dropout: 5e-1}\n" + text)
    recipe = load_recipe(path, ["train.min_lr_ratio=1e-2"])
    assert isinstance(recipe.train.lr, float) and recipe.train.lr in (1e-3, 1e-2)
    assert recipe.model.dropout == 0.5 and recipe.train.min_lr_ratio == 0.01
    assert load_recipe(path, ["train.lr=5e-4"]).train.lr == 5e-4


def test_binary_recipe_file(capsys, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(bytes(range(256)))
    one_line(run_cli(capsys, "train", str(path)), r"not a text file")


def test_output_root_under_a_regular_file(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli(capsys, "train", QUICK, "--set", f"output.root={blocker}/runs", *TINY)
    one_line(proc, r"cannot create the run directory .*check output\.root")


def test_run_dir_that_is_a_file(capsys, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep")
    one_line(run_cli(capsys, "train", QUICK, "--run-dir", str(target), *TINY), r"--run-dir .* is not a folder")
    assert target.read_text() == "keep"


def test_checkpoint_missing_entries(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(["train", QUICK, "--run-dir", str(run), *TINY]) == 0
    capsys.readouterr()
    torch.save({"format": 1, "epoch": 1}, run / "checkpoint.pt")
    one_line(run_cli(capsys, "train", QUICK, "--run-dir", str(run), "--resume", *TINY),
             r"checkpoint .* lacks")


def test_generated_graph_too_large(capsys):
    proc = run_cli(capsys, "train", QUICK, *TINY, "--set", "dataset.params.num_nodes=10000000000000")
    one_line(proc, r"dataset: num_nodes=10000000000000 .* GB of memory are available")


def test_unsafe_checkpoint_message_never_suggests_the_unsafe_load(capsys, tmp_path):
    import collections

    run = tmp_path / "run"
    assert main(["train", QUICK, "--run-dir", str(run), *TINY]) == 0
    capsys.readouterr()
    torch.save({"format": 1, "evil": collections.OrderedDict, "x": object}, run / "checkpoint.pt")
    proc = run_cli(capsys, "train", QUICK, "--run-dir", str(run), "--resume", *TINY)
    one_line(proc, r"checkpoint .* is unreadable \(it holds objects other than tensors")
    assert "weights_only" not in proc.stderr


def test_failed_run_leaves_its_reason_in_the_run_dir(capsys, tmp_path, monkeypatch):
    from dgl_rbgt.errors import TrainingDiverged
    from dgl_rbgt.train import loop

    def diverge(self, loss):
        raise TrainingDiverged("training diverged in epoch 0: test")

    monkeypatch.setattr(loop.Trainer, "_check_finite", diverge)
    run = tmp_path / "run"
    proc = run_cli(capsys, "train", QUICK, "--run-dir", str(run), *TINY)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "dgl-rbgt: error: training diverged in epoch 0: test"
    assert (run / "error.txt").read_text() == "TrainingDiverged: training diverged in epoch 0: test\n"
    assert "run failed: TrainingDiverged: training diverged" in (run / "train.log").read_text()


def test_run_stopped_before_its_first_checkpoint_can_restart(capsys, tmp_path, monkeypatch):
    from dgl_rbgt.train import loop

    def interrupted(self, resume=False):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    fit = loop.Trainer.fit
    for again in ([], ["--resume"]):  # both ways of going on with the same folder
        monkeypatch.setattr(loop.Trainer, "fit", interrupted)
        assert main(["train", QUICK, "--run-dir", str(run), *TINY]) == 130
        assert (run / "error.txt").read_text() == "interrupted\n" and not (run / "checkpoint.pt").exists()
        monkeypatch.setattr(loop.Trainer, "fit", fit)
        assert main(["train", QUICK, "--run-dir", str(run), *again, *TINY]) == 0  # from epoch 0
        assert (run / "checkpoint.pt").is_file() and not (run / "error.txt").exists()
        assert "run failed: interrupted" in (run / "train.log").read_text()  # the history stays
        shutil.rmtree(run)
    capsys.readouterr()


def test_resume_may_extend_epochs_and_patience_only(capsys, tmp_path):
    import json

    run = tmp_path / "run"
    assert main(["train", QUICK, "--run-dir", str(run), *TINY]) == 0
    assert main(["train", QUICK, "--run-dir", str(run), "--resume", *TINY, "--set", "train.epochs=3",
                 "--set", "train.patience=5"]) == 0
    capsys.readouterr()
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 3
    assert "epochs: 3" in (run / "recipe.yaml").read_text()
    proc = run_cli(capsys, "train", QUICK, "--run-dir", str(run), "--resume", *TINY, "--set", "train.epochs=3",
                   "--set", "train.lr=0.5")
    one_line(proc, r"differs from .* in train\.lr; a resumed run may change only train\.epochs, train\.patience")


@pytest.mark.parametrize("lr", ["1000000.0", "1.0e+30", "1e300"])
def test_divergence_stops_the_run_before_the_step_lands(capsys, tmp_path, lr):
    """Every way a step can go non-finite: an overflowing gradient norm, a finite step to huge
    weights whose activations then overflow, a step that overflows the weights themselves."""
    run = tmp_path / "run"
    proc = run_cli(capsys, "train", QUICK, "--run-dir", str(run), *TINY, "--set", f"train.lr={lr}",
                   "--set", "train.epochs=4")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert re.match(r"dgl-rbgt: error: training diverged in epoch \d+: .*Lower train\.lr", last), last
    assert (run / "error.txt").read_text().startswith("TrainingDiverged: training diverged")


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_non_finite_rates_are_refused_by_the_recipe(capsys, value):
    one_line(run_cli(capsys, "train", QUICK, *TINY, "--set", f"train.lr={value}"), r"train\.lr: ")


def test_planetoid_pickle_with_a_forbidden_global(capsys, tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    root = tmp_path / "data"
    (root / "planetoid").mkdir(parents=True)
    shared = Path(__import__("os").environ["DGL_RBGT_DATA"]) / "planetoid"
    for f in shared.glob("ind.cora.*"):
        (root / "planetoid" / f.name).write_bytes(f.read_bytes())
    (root / "planetoid" / "ind.cora.x").write_bytes(pickle.dumps(Evil()))
    proc = run_cli(capsys, "train", "recipes/baselines/gcn_cora.yaml", "--set", f"dataset.root={root}",
                   "--set", "train.epochs=2", "--no-progress")
    one_line(proc, r"forbidden global 'builtins\.print' in pickle .*ind\.cora\.x")
    assert "this must never run" not in proc.stdout


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["train", "missing.yaml"], ["train", "BAD"]])
def test_quick_answers_import_neither_torch_nor_dgl(tmp_path, args):
    """--version, --help, a missing recipe and bad YAML answer before torch and DGL load (seconds)."""
    import sys

    (tmp_path / "BAD").write_text("name: x\ndataset: {name: cora\n")
    code = ("import sys\nfrom dgl_rbgt.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('loaded:', 'torch' in sys.modules or 'dgl' in sys.modules)" % (args,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "loaded: False", out.stdout + out.stderr
