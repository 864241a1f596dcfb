"""tools/accuracy.py: the seed-by-seed comparison that settings are chosen with."""
import importlib.util
import math
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[1] / "tools" / "accuracy.py"
_spec = importlib.util.spec_from_file_location("accuracy_tool", _path)
accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(accuracy)


def _row(recipe, variant, seed, val, val_loss):
    return {"recipe": recipe, "variant": variant, "seed": seed, "val": val, "val_loss": val_loss}


def test_paired_differences_match_seeds_and_give_the_standard_error():
    rows = [_row("a", "off", 0, 0.50, 1.0), _row("a", "off", 1, 0.60, 2.0), _row("a", "off", 2, 0.70, 3.0),
            _row("a", "on", 0, 0.52, 0.9), _row("a", "on", 1, 0.61, 1.9), _row("a", "on", 2, 0.74, 3.1),
            _row("a", "on", 3, 0.99, 0.0),  # no baseline run for seed 3: left out
            _row("b", "on", 0, 0.10, 1.0)]  # no baseline for recipe b at all
    (p,) = accuracy.paired_differences(rows, "off")
    assert (p["recipe"], p["variant"], p["seeds"]) == ("a", "on", 3)
    diffs = [2.0, 1.0, 4.0]  # points
    assert p["val_diff"] == pytest.approx(7.0 / 3)
    mean = 7.0 / 3
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2) / math.sqrt(3)
    assert p["val_diff_se"] == pytest.approx(se)
    assert p["val_loss_diff"] == pytest.approx((-0.1 - 0.1 + 0.1) / 3)


def test_paired_with_an_unknown_label_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        accuracy.main([str(tmp_path / "r.yaml"), "--variant", "on:model.attn_gate=true",
                       "--paired-with", "off", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--paired-with 'off' is not one of the variants' labels (on)" in capsys.readouterr().err
