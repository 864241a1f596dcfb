"""Progress of long steps: stage times in the log (INFO only for slow stages), and a time estimate
for the epochs left in every epoch's log line."""
import logging

from dgl_rbgt.config import parse_recipe
from dgl_rbgt.train.pipeline import run_recipe
from dgl_rbgt.utils.progress import Stages, format_seconds, remaining_seconds


def test_slow_stages_are_logged_at_info_quick_ones_at_debug(caplog, monkeypatch):
    caplog.set_level(logging.DEBUG, logger="dgl_rbgt")
    stages = Stages("prepare x", ["quick", "slow"], progress=False)
    with stages.stage("quick"):
        pass
    monkeypatch.setattr(Stages, "LOG_AFTER", 0.0)  # every stage counts as slow from here on
    with stages.stage("slow"):
        pass
    stages.close()
    levels = {r.getMessage().split(": ", 1)[1]: r.levelno for r in caplog.records}
    assert levels["quick done in 0.0 s"] == logging.DEBUG
    assert levels["slow done in 0.0 s"] == logging.INFO
    assert levels["2 stages in 0.0 s"] == logging.INFO


def test_estimates_use_the_median_and_read_well():
    assert remaining_seconds([], 5) == 0.0 and remaining_seconds([3.0], 0) == 0.0
    assert remaining_seconds([30.0, 1.0, 2.0, 3.0], 10) == 25.0  # median 2.5: the slow first epoch is ignored
    assert [format_seconds(s) for s in (0.25, 59.94, 60, 3599, 3600)] == \
        ["0.2 s", "59.9 s", "1 min 00 s", "59 min 59 s", "1 h 00 min"]


def test_every_epoch_line_but_the_last_estimates_the_time_left(tmp_path):
    recipe = parse_recipe({"name": "p", "dataset": {"name": "csbm", "params": {"num_nodes": 300}},
                           "model": {"name": "gcn", "hidden": 8}, "train": {"epochs": 4, "threads": 1},
                           "output": {"plot": False}})
    run_recipe(recipe, run_dir=tmp_path / "run", progress=False)
    lines = [l for l in (tmp_path / "run" / "train.log").read_text().splitlines() if " epoch " in l]
    assert len(lines) == 4
    assert all("left at most" in l for l in lines[:3]) and "left" not in lines[3]


def test_epochs_between_evaluations_log_no_metrics(tmp_path):
    recipe = parse_recipe({"name": "p", "dataset": {"name": "csbm", "params": {"num_nodes": 300}},
                           "model": {"name": "gcn", "hidden": 8},
                           "train": {"epochs": 5, "threads": 1, "eval_every": 2}, "output": {"plot": False}})
    run_recipe(recipe, run_dir=tmp_path / "run", progress=False)
    lines = [l for l in (tmp_path / "run" / "train.log").read_text().splitlines() if " epoch " in l]
    evaluated = [" val " in l for l in lines]
    assert evaluated == [True, False, True, False, True]  # epochs 0, 2 and the last
    assert not any("nan" in l for l in lines)
