"""tools/selection_halves.py: it records every epoch per validation node, and its rules score as defined."""
import importlib.util
from pathlib import Path

import numpy as np
import yaml

from dgl_rbgt.train import loop

_path = Path(__file__).resolve().parents[1] / "tools" / "selection_halves.py"
_spec = importlib.util.spec_from_file_location("selection_halves", _path)
selection_halves = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(selection_halves)


def test_records_every_epoch_per_validation_node(tmp_path):
    recipe = {"name": "tiny", "dataset": {"name": "csbm", "params": {"num_nodes": 300, "num_classes": 3,
                                                                    "avg_degree": 6.0, "feature_dim": 8}},
              "model": {"name": "gcn", "hidden": 8}, "train": {"epochs": 4, "lr": 0.01, "patience": 1}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    gather = loop.Trainer.gather_logits
    record = selection_halves.record_validation(str(path), 0, [])
    assert loop.Trainer.gather_logits is gather  # the patch is undone
    n_val = 75  # csbm: a quarter of the 300 nodes for validation
    assert record.shape[0] == 4  # every epoch despite patience 1: early stopping is off
    assert record.shape[1] == 2 and abs(record.shape[2] - n_val) <= 1
    assert set(np.unique(record[:, 0])) <= {0.0, 1.0}
    assert (record[:, 1] >= 0).all()
    # a wrong prediction costs at least log 2 (its true class has probability at most 1/2)
    assert (record[:, 1][record[:, 0] == 0] >= np.log(2) - 1e-9).all()


def test_rules_pick_their_epoch_and_score_it_on_the_other_half():
    # epoch 0: all correct, high loss; epoch 1: half correct, low loss; epoch 2: none correct
    n = 10
    record = np.zeros((3, 2, n))
    record[0, 0], record[0, 1] = 1.0, 2.0
    record[1, 0, ::2], record[1, 1] = 1.0, 0.1
    record[2, 1] = 5.0
    scores = selection_halves.held_out_scores(record, halvings=5, rng=np.random.default_rng(0))
    assert scores["accuracy"] == (1.0, 0.0)
    assert scores["loss"][1] == 1.0
    assert 0.0 < scores["loss"][0] < 1.0


def test_window_means_match_a_plain_loop():
    curve = np.random.default_rng(1).random(13)
    for w in (1, 4, 5, 20):
        trailing = [curve[max(0, e - w + 1):e + 1].mean() for e in range(13)]
        centred = [curve[max(0, e - w // 2):e + w // 2 + 1].mean() for e in range(13)]
        np.testing.assert_allclose(selection_halves._trailing_mean(curve, w), trailing, rtol=1e-12)
        np.testing.assert_allclose(selection_halves._centred_mean(curve, w), centred, rtol=1e-12)


def test_main_reuses_saved_records(tmp_path, capsys):
    record = np.zeros((4, 2, 20))
    record[2, 0] = 1.0  # epoch 2 right everywhere, and of lowest loss
    record[:, 1] = np.array([3.0, 2.0, 0.5, 1.0])[:, None]
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\n")  # never parsed: the saved record is read instead
    key = selection_halves.hashlib.sha256(recipe.read_bytes() + b"train.threads=1").hexdigest()[:12]
    np.save(tmp_path / f"x_seed0_{key}.npy", record)
    assert selection_halves.main([str(recipe), "--seeds", "0", "--reuse", "--out", str(tmp_path),
                                  "--name", "x", "--halvings", "3"]) == 0
    rows = (tmp_path / "x.csv").read_text().splitlines()
    assert len(rows) == 1 + len(selection_halves.RULES)
    assert "0,accuracy,1.0,2.0" in rows and "0,loss,1.0,2.0" in rows  # held-out accuracy 1 at epoch 2
