"""The command line: user mistakes give one line and exit 2; a real run leaves a full run dir."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dgl_rbgt.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "dataset.params.num_nodes=600", "--set", "train.epochs=6", "--set", "train.warmup_epochs=1",
        "--no-progress"]


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "dgl_rbgt", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=timeout)


def one_line_error(proc, pattern):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("dgl-rbgt: error: ")
    assert re.search(pattern, lines[0]), lines[0]


def in_process(capsys, *args):
    """Run the CLI in this process (fast); returns an object shaped like CompletedProcess."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_train_writes_a_complete_run_dir(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "recipes/quickstart.yaml", "--run-dir", str(run), *TINY]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "s/epoch" in out and "peak memory" in out
    for name in ("recipe.yaml", "train.log", "metrics.csv", "checkpoint.pt", "best.pt", "summary.json", "curves.png"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 6 and summary["median_epoch_seconds"] > 0 and summary["peak_memory_mb"] > 0
    assert "num_nodes: 600" in (run / "recipe.yaml").read_text()  # the resolved recipe, overrides applied
    assert (run / "train.log").read_text().count("epoch ") >= 6


def test_run_dir_is_never_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep")
    proc = in_process(capsys, "train", "recipes/quickstart.yaml", "--run-dir", str(run), *TINY)
    one_line_error(proc, r"--run-dir .* is not empty")
    assert (run / "precious.txt").read_text() == "keep"


@pytest.mark.parametrize("args, pattern", [
    (["train", "recipes/nope.yaml"], r"recipe file not found: recipes/nope\.yaml"),
    (["train", "recipes/quickstart.yaml", "--set", "train.lr=-1"], r"train\.lr: Input should be greater than 0"),
    (["train", "recipes/quickstart.yaml", "--set", "model.widht=3"], r"model\.widht: unknown key"),
    (["train", "recipes/quickstart.yaml", "--set", "dataset.name=coraa"], r"dataset: .*coraa.*cora"),
    (["train", "recipes/quickstart.yaml", "--set", "dataset.params.nodes=5"], r"dataset: .*nodes"),
    (["train", "recipes/quickstart.yaml", "--set", "train.device=cuda:7"], r"train\.device"),
    (["train", "recipes/baselines/gcn_cora.yaml", "--set", "dataset.root=/nonexistent"], r"/nonexistent"),
])
def test_user_mistakes_exit_2_with_one_line(capsys, args, pattern):
    one_line_error(in_process(capsys, *args), pattern)


def test_user_mistake_in_a_real_process():
    """The same through `python -m dgl_rbgt`: exit status 2 and one line, no traceback."""
    one_line_error(cli("train", "recipes/quickstart.yaml", "--set", "train.lr=-1"), r"train\.lr")


def test_resume_refuses_corrupt_checkpoint_and_other_recipes(tmp_path, capsys):
    run = tmp_path / "run"
    assert in_process(capsys, "train", "recipes/quickstart.yaml", "--run-dir", str(run), *TINY).returncode == 0
    one_line_error(in_process(capsys, "train", "recipes/quickstart.yaml", "--run-dir", str(run), "--resume",
                              *TINY, "--set", "train.lr=0.5"), r"differs from this recipe")
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    one_line_error(in_process(capsys, "train", "recipes/quickstart.yaml", "--run-dir", str(run), "--resume", *TINY),
                   r"checkpoint .*checkpoint\.pt is unreadable")
    (run / "checkpoint.pt").write_bytes(b"")
    one_line_error(in_process(capsys, "train", "recipes/quickstart.yaml", "--run-dir", str(run), "--resume", *TINY),
                   r"checkpoint .*checkpoint\.pt is unreadable")
    (run / "checkpoint.pt").unlink()
    one_line_error(in_process(capsys, "train", "recipes/quickstart.yaml", "--run-dir", str(run), "--resume", *TINY),
                   r"no checkpoint\.pt in")


def test_killed_run_resumes_to_the_same_numbers(tmp_path):
    """SIGKILL a real training process mid-run, resume it, and get the uninterrupted run's numbers."""
    # The quickstart's RBTransformer draws a fresh random grouping every forward: the resumed run
    # must draw the same ones.
    args = ["recipes/quickstart.yaml", "--set", "dataset.params.num_nodes=2000", "--set", "train.epochs=20",
            "--set", "model.hidden=16", "--set", "train.warmup_epochs=2", "--set", "train.patience=null",
            "--no-progress"]
    whole = tmp_path / "whole"
    assert cli("train", *args, "--run-dir", str(whole)).returncode == 0

    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "dgl_rbgt", "train", *args, "--run-dir", str(cut)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        if (cut / "checkpoint.pt").is_file():
            state = torch.load(cut / "checkpoint.pt", weights_only=True)
            if state["epoch"] >= 5:
                proc.send_signal(signal.SIGKILL)
                killed_at = state["epoch"]
                break
        time.sleep(0.05)
    proc.wait(30)
    assert killed_at is not None and killed_at < 19, "the run was not killed mid-way"

    assert cli("train", *args, "--run-dir", str(cut), "--resume").returncode == 0
    a = json.loads((whole / "summary.json").read_text())
    b = json.loads((cut / "summary.json").read_text())
    for key in ("best_epoch", "train_metric", "val_metric", "test_metric", "epochs_run"):
        assert a[key] == b[key], key
    strip = lambda text: [line.split(",")[:7] for line in text.splitlines()]  # drop timing columns
    assert strip((whole / "metrics.csv").read_text()) == strip((cut / "metrics.csv").read_text())


def test_datasets_and_info(data_root, capsys):
    proc = in_process(capsys, "datasets")
    assert proc.returncode == 0 and "cora" in proc.stdout and "csbm" in proc.stdout
    assert re.search(r"cora .* yes", proc.stdout)  # found under the data root
    proc = in_process(capsys, "info")
    assert proc.returncode == 0 and "torch" in proc.stdout and "dgl" in proc.stdout and "threads" in proc.stdout


def test_console_script_installed():
    exe = Path(sys.executable).parent / "dgl-rbgt"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout
