"""Recipe -> run for every model: each trains a couple of epochs on a tiny generated graph."""
import json

import pytest
import torch

from dgl_rbgt.errors import CheckpointError, RecipeError
from dgl_rbgt.config.registry import MODELS
from dgl_rbgt.config import parse_recipe
from dgl_rbgt.train.pipeline import run_recipe

TINY = {"name": "csbm", "params": {"num_nodes": 300, "num_classes": 3, "avg_degree": 6.0, "feature_dim": 8}}
TRAIN = {"epochs": 3, "lr": 0.01}
CASES = {
    "gcn": ({"name": "gcn", "hidden": 8}, [], {}),
    "sage": ({"name": "sage", "hidden": 8, "residual": "identity", "norm": "layer", "head": "linear"}, [],
             {"batching": "neighbor", "fanouts": [4, 4], "batch_size": 64}),
    "gat": ({"name": "gat", "hidden": 4, "num_heads": 2}, [], {"batching": "neighbor", "fanouts": [4, 4], "batch_size": 64}),
    "rbtransformer": ({"name": "rbtransformer", "hidden": 8, "group_size": 32}, [], {"batching": "node_batch", "batch_size": 128}),
    "exphormer": ({"name": "exphormer", "hidden": 8, "layers": 2}, [{"name": "expander", "degree": 2}], {}),
    "gps": ({"name": "gps", "hidden": 8, "num_heads": 2, "group_size": 32}, [], {"batching": "node_batch", "batch_size": 128}),
    "spexphormer": ({"name": "spexphormer", "hidden": 8, "layers": 2},
                    [{"name": "expander", "degree": 2}, {"name": "self_loops"}],
                    {"batching": "neighbour_tables", "batch_size": 64}),
}


def recipe_for(model_name, **extra):
    model, transforms, train = CASES[model_name]
    data = {"name": f"t_{model_name}", "dataset": TINY, "transforms": transforms, "model": model,
            "train": {**TRAIN, **train}}
    if model_name == "spexphormer":
        data["neighbour_tables"] = {"ks": [3, 2]}
        data["stage1"] = {"model": {"hidden": 4, "layers": 2}, "train": {"epochs": 2}}
    data.update(extra)
    return parse_recipe(data)


def test_every_model_has_a_case():
    assert set(CASES) == set(MODELS)


@pytest.mark.parametrize("model_name", sorted(CASES))
def test_recipe_runs(tmp_path, model_name):
    result = run_recipe(recipe_for(model_name), run_dir=tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and 0 <= summary["test_metric"] <= 1
    assert result.summary["test_metric"] == summary["test_metric"]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in result.history)


def test_two_stage_writes_scores_and_resumes_without_stage1(tmp_path):
    recipe = recipe_for("spexphormer")
    first = run_recipe(recipe, run_dir=tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "scores.pt").is_file() and (tmp_path / "run" / "stage1" / "best.pt").is_file()
    assert first.summary["stage1"]["epochs_run"] == 2
    stage1_mtime = (tmp_path / "run" / "stage1" / "checkpoint.pt").stat().st_mtime
    again = run_recipe(recipe, run_dir=tmp_path / "run", resume=True, progress=False)
    assert (tmp_path / "run" / "stage1" / "checkpoint.pt").stat().st_mtime == stage1_mtime  # not retrained
    assert again.summary["test_metric"] == first.summary["test_metric"]

    # reuse the scores in a new run: stage 1 skipped
    reuse = recipe_for("spexphormer", stage1={"model": {"hidden": 4, "layers": 2},
                                              "scores": str(tmp_path / "run" / "scores.pt")})
    run_recipe(reuse, run_dir=tmp_path / "reuse", progress=False)
    assert not (tmp_path / "reuse" / "stage1").exists()


def test_two_stage_rejects_scores_of_another_graph(tmp_path):
    torch.save({"format": 1, "scores": torch.rand(2, 10)}, tmp_path / "scores.pt")
    recipe = recipe_for("spexphormer", stage1={"model": {"hidden": 4, "layers": 2}, "scores": str(tmp_path / "scores.pt")})
    with pytest.raises(RecipeError, match=r"stage1\.scores: .*shape \(2, 10\)"):
        run_recipe(recipe, run_dir=tmp_path / "run", progress=False)


def test_two_stage_recipe_checks():
    with pytest.raises(RecipeError, match=r"stage1\.model\.layers \(3\) must equal model\.layers \(2\)"):
        recipe_for("spexphormer", stage1={"model": {"layers": 3}})
    with pytest.raises(RecipeError, match=r"needs a neighbour_tables section"):
        recipe_for("spexphormer", neighbour_tables=None)
    with pytest.raises(RecipeError, match=r"neighbour_tables\.ks has 3 entries"):
        recipe_for("spexphormer", neighbour_tables={"ks": [1, 2, 3]})
    with pytest.raises(RecipeError, match=r"stage1: only used with"):
        recipe_for("gcn", stage1={})
    with pytest.raises(RecipeError, match=r"does not support train\.batching='full'"):
        recipe_for("spexphormer", train={"epochs": 2})


def test_two_stage_with_a_mini_batched_stage1(tmp_path):
    """stage1.train.batching: neighbor trains the estimator on sampled neighbourhoods and reads the
    scores layer by layer; they are a distribution over every node's in-edges, and the run repeats."""
    stage1 = {"model": {"hidden": 4, "layers": 2},
              "train": {"epochs": 2, "batching": "neighbor", "fanouts": [4, 4], "batch_size": 64}}
    results = [run_recipe(recipe_for("spexphormer", stage1=stage1), run_dir=tmp_path / f"run{i}", progress=False)
               for i in range(2)]
    assert results[0].summary["stage1"]["epochs_run"] == 2
    scores = [torch.load(tmp_path / f"run{i}" / "scores.pt", weights_only=True)["scores"] for i in range(2)]
    assert torch.equal(scores[0], scores[1])
    assert results[0].summary["test_metric"] == results[1].summary["test_metric"]
    s = scores[0]
    assert s.shape[0] == 2 and bool((s >= 0).all())
    assert bool(((s > 0).sum(0) > 0).all())  # every edge was scored


def test_stage1_sparse_formats_do_not_stay_on_the_graph_for_stage2(tmp_path, monkeypatch):
    """Stage 1's sampler and layer-wise scores make DGL build the CSC (16 bytes per edge); it is
    built on stage 1's own view of the graph and goes with it."""
    from dgl_rbgt.train import two_stage

    seen = []
    real = two_stage.build_batching
    monkeypatch.setattr(two_stage, "build_batching", lambda recipe, graph, *a, **kw: seen.append(graph.formats())
                        or real(recipe, graph, *a, **kw))
    stage1 = {"model": {"hidden": 4, "layers": 2},
              "train": {"epochs": 1, "batching": "neighbor", "fanouts": [4, 4], "batch_size": 64}}
    run_recipe(recipe_for("spexphormer", stage1=stage1), run_dir=tmp_path / "run", progress=False)
    assert seen and "csc" not in seen[0]["created"]


def test_mini_batched_stage1_recipe_checks():
    bad = {"model": {"hidden": 4, "layers": 2}, "train": {"epochs": 2, "batching": "node_batch", "batch_size": 64}}
    with pytest.raises(RecipeError, match=r"stage1\.train\.batching: the estimator trains with one of \['full', 'neighbor'\]"):
        recipe_for("spexphormer", stage1=bad)
    bad = {"model": {"hidden": 4, "layers": 2},
           "train": {"epochs": 2, "batching": "neighbor", "fanouts": [4], "batch_size": 64}}
    with pytest.raises(RecipeError, match=r"stage1\.train\.fanouts has 1 entries but the estimator has 2 layers"):
        recipe_for("spexphormer", stage1=bad)


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint.pt"):
        run_recipe(recipe_for("gcn"), run_dir=tmp_path, resume=True, progress=False)


def test_prepare_dataset_keeps_only_the_transformed_graph(monkeypatch):
    """The loaded graph is freed once the transforms have consumed it: at 10M nodes it is 1.6 GB
    that nothing after the transforms reads."""
    import gc
    import weakref

    from dgl_rbgt.config import registry
    from dgl_rbgt.train.builders import prepare_dataset
    from dgl_rbgt.transforms import AddSelfLoops

    seen = []

    class Watched(AddSelfLoops):
        def __call__(self, g):
            seen.append(weakref.ref(g))
            return super().__call__(g)

    monkeypatch.setitem(registry.TRANSFORMS, "self_loops", Watched)
    recipe = parse_recipe({"name": "t", "dataset": {"name": "csbm", "params": {"num_nodes": 200}},
                           "transforms": [{"name": "self_loops"}], "model": {"name": "gcn"}})
    dataset, graph = prepare_dataset(recipe)
    gc.collect()
    assert dataset.graph is graph and graph.num_edges() > 0
    assert (dataset.num_classes, dataset.metric, dataset.source) == (5, "accuracy", "generated")
    assert len(seen) == 1 and seen[0]() is None  # the loaded graph is gone


def test_training_flushes_denormals_and_restores_the_callers_setting(tmp_path, monkeypatch):
    """A run flushes denormals to zero: arithmetic on them is 10-100x slower, and a gated attention
    branch that training turns down fills the backward pass with them (a tolokers epoch went from
    0.27 to 3.5 s). The caller's setting comes back afterwards, as a library call should leave it."""
    from dgl_rbgt.train import pipeline
    from dgl_rbgt.train.loop import denormals_flushed

    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    during = []
    train = pipeline._train
    monkeypatch.setattr(pipeline, "_train", lambda *a, **k: during.append(denormals_flushed()) or train(*a, **k))
    for before in (False, True):
        torch.set_flush_denormal(before)
        assert denormals_flushed() is before
        run_recipe(recipe_for("gcn"), run_dir=tmp_path / f"run{before}", progress=False)
        assert during[-1] is True and denormals_flushed() is before
    torch.set_flush_denormal(False)
