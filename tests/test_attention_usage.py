"""tools/attention_usage.py: its measures are what they claim, and it reads a finished run."""
import importlib.util
import math
from pathlib import Path

import dgl
import pytest
import torch
import yaml

from dgl_rbgt.nn import RBAConv, SGFormerAttention

_path = Path(__file__).resolve().parents[1] / "tools" / "attention_usage.py"
_spec = importlib.util.spec_from_file_location("attention_usage", _path)
attention_usage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(attention_usage)


def test_uniform_softmax_attention_has_full_entropy_and_returns_the_group_mean():
    n, p = 50, 16  # groups 16, 16, 16 and a remainder of 2
    conv = RBAConv(8, 4, num_heads=2, group_size=p).eval()
    with torch.no_grad():
        conv.fc_q.weight.zero_()  # equal logits: uniform weights over each group
    x = torch.randn(n, 8)
    usage = attention_usage.attention_usage(conv, dgl.rand_graph(n, 0), x)
    assert usage["entropy_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert usage["max_weight"] == pytest.approx((48 * (1 / p) + 2 * (1 / 2)) / n, abs=1e-6)
    assert usage["mix"] > 0.5  # the group mean is far from each node's own value


def test_sharp_attention_has_low_entropy():
    conv = RBAConv(8, 8, num_heads=1, group_size=16).eval()
    with torch.no_grad():  # q = k = 50 x: each node's logit with itself dominates
        for fc in (conv.fc_q, conv.fc_k, conv.fc_v):
            fc.weight.copy_(torch.eye(8))
        conv.fc_q.weight.mul_(50.0)
    x = torch.nn.functional.normalize(torch.randn(64, 8), dim=1) * 3
    usage = attention_usage.attention_usage(conv, dgl.rand_graph(64, 0), x)
    assert usage["entropy_ratio"] < 0.2 and usage["max_weight"] > 0.9 and usage["mix"] < 0.2


def test_sgformer_attention_barely_mixes():
    conv = SGFormerAttention(8, 8, num_heads=1, mean_heads=False)
    usage = attention_usage.attention_usage(conv, dgl.rand_graph(2000, 0), torch.randn(2000, 8))
    assert usage["mix"] < 1e-3 and math.isnan(usage["entropy_ratio"])


def test_main_reads_a_finished_run(tmp_path, capsys):
    from dgl_rbgt.config import load_recipe
    from dgl_rbgt.train.pipeline import run_recipe

    recipe = {"name": "tiny", "dataset": {"name": "csbm", "params": {"num_nodes": 200, "num_classes": 3,
                                                                    "avg_degree": 6.0, "feature_dim": 8}},
              "model": {"name": "rbtransformer", "hidden": 8, "group_size": 16, "eval_mode": "mean"},
              "train": {"epochs": 2}, "output": {"plot": False}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run_recipe(load_recipe(path), run_dir=tmp_path / "run", progress=False)
    assert attention_usage.main([str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--name", "t"]) == 0
    printed = capsys.readouterr().out
    assert "run" in printed and "rba" in printed
    rows = (tmp_path / "out" / "t.csv").read_text().splitlines()
    assert rows[0].startswith("run,dataset,attention,nodes,mix") and len(rows) == 2
    with pytest.raises(SystemExit) as exc:
        attention_usage.main([str(tmp_path)])  # not a run directory
    assert exc.value.code == 2
    recipe["model"]["attention"] = "none"
    path.write_text(yaml.safe_dump(recipe))
    run_recipe(load_recipe(path), run_dir=tmp_path / "none", progress=False)
    with pytest.raises(SystemExit) as exc:
        attention_usage.main([str(tmp_path / "none")])
    assert exc.value.code == 2
    assert "rbtransformer without attention" in capsys.readouterr().err
