"""Spexphormer's neighbour tables in the partitions: after partitioning they name the same
neighbours as the single-machine draws (ids rewritten into DistGraph ids), and the recipe checks
refuse what a distributed run cannot do."""
import dgl
import pytest
import torch

from dgl_rbgt.distributed.batching import DistTableBatching, equal_chunks
from dgl_rbgt.config import check_recipe_for_distributed, parse_distributed
from dgl_rbgt.distributed.partition import check_partitions, partition
from dgl_rbgt.distributed.tables import table_key
from dgl_rbgt.errors import RecipeError
from dgl_rbgt.config import parse_recipe
from dgl_rbgt.train.loop import epoch_seed, seed_everything
from dgl_rbgt.train.pipeline import prepare_dataset
from dgl_rbgt.sampling import sparsify

N = 600


def spex_recipe(resample_every=1, **extra):
    return parse_recipe({
        "name": "ttest", "seed": 4, "dataset": {"name": "csbm", "params": {"num_nodes": N}},
        "transforms": [{"name": "expander", "degree": 2}, {"name": "self_loops"}],
        "stage1": {"model": {"hidden": 4, "num_heads": 1, "layers": 2}, "train": {"epochs": 3}},
        "model": {"name": "spexphormer", "hidden": 8, "num_heads": 2, "layers": 2},
        "neighbour_tables": {"ks": [4, 3], "resample_every": resample_every, "eval_repeats": 2},
        "train": {"batching": "neighbour_tables", "batch_size": 128, "epochs": 6}, **extra})


def test_stored_tables_are_the_single_machine_draws(tmp_path):
    recipe = spex_recipe(resample_every=2)
    dist = parse_distributed({"hosts": [{"address": "10.0.0.1"}, {"address": "10.0.0.2"}], "table_draws": 3,
                              "partition_method": "random", "partition_dir": str(tmp_path / "parts")})
    report = partition(recipe, dist)
    assert report["tables"] == {"layers": 2, "train_draws": 3, "eval_draws": 2, "resample_every": 2}
    assert check_partitions(recipe, dist)["tables"] == report["tables"]
    scores = torch.load(tmp_path / "parts" / "scores.pt", weights_only=True)["scores"]
    assert scores.shape[0] == 2 and (tmp_path / "parts" / "stage1" / "best.pt").is_file()

    seed_everything(recipe.seed)
    _, graph = prepare_dataset(recipe)  # the graph the scores belong to, original ids
    expected = {("train", d): sparsify(graph, scores, [4, 3], generator=torch.Generator().manual_seed(
        epoch_seed(recipe.seed, 2 * d))) for d in range(3)}
    expected.update({("eval", i): sparsify(graph, scores, [4, 3], generator=torch.Generator().manual_seed(i))
                     for i in range(2)})
    assert not torch.equal(expected["train", 0].tables[0], expected["train", 1].tables[0])  # distinct draws

    seen = 0
    for p in range(2):
        g, feats, *_ = dgl.distributed.load_partition(str(tmp_path / "parts" / report["part_config"]), p)
        orig = feats["_N/orig_nid"]  # original ids of this partition's own nodes, in DistGraph-id order
        # DistGraph id -> original id, over all partitions (the tables point into every one)
        new_to_orig = torch.full((N,), -1, dtype=torch.int64)
        for q in range(2):
            gq, fq, *_ = dgl.distributed.load_partition(str(tmp_path / "parts" / report["part_config"]), q)
            new_to_orig[gq.ndata[dgl.NID][gq.ndata["inner_node"].bool()]] = fq["_N/orig_nid"]
        for (kind, d), nb in expected.items():
            for layer in range(2):
                table = feats["_N/" + table_key(kind, d, layer, "table")]
                assert torch.equal(new_to_orig[table], nb.tables[layer][orig]), (kind, d, layer)
                assert torch.equal(feats["_N/" + table_key(kind, d, layer, "etype")].long(), nb.etypes[layer][orig])
                assert torch.equal(feats["_N/" + table_key(kind, d, layer, "valid")].bool(), nb.valid[layer][orig])
        seen += len(orig)
    assert seen == N


def test_resampling_without_stored_draws_is_refused():
    dist = parse_distributed({"hosts": [{"address": "127.0.0.1"}]})
    with pytest.raises(RecipeError, match=r"neighbour_tables.resample_every: 1 .*distributed.table_draws"):
        check_recipe_for_distributed(spex_recipe(resample_every=1), dist)
    check_recipe_for_distributed(spex_recipe(resample_every=0), dist)  # one fixed draw: fine
    check_recipe_for_distributed(spex_recipe(resample_every=1), parse_distributed(
        {"hosts": [{"address": "127.0.0.1"}], "table_draws": 2}))


def test_full_graph_training_is_refused():
    recipe = parse_recipe({"name": "f", "dataset": {"name": "csbm"}, "model": {"name": "gcn"}})
    with pytest.raises(RecipeError, match=r"train.batching: 'full' .*neighbor .*node_batch .*neighbour_tables"):
        check_recipe_for_distributed(recipe, parse_distributed({"hosts": [{"address": "127.0.0.1"}]}))


def test_equal_chunks_give_every_trainer_the_same_batch_count():
    parts = equal_chunks(torch.arange(10), 4)
    assert [len(p) for p in parts] == [3, 3, 2, 2] and torch.equal(torch.cat(parts), torch.arange(10))
    with pytest.raises(ValueError, match="cannot cut 2 nodes into 3"):
        equal_chunks(torch.arange(2), 3)


def test_training_draws_cycle_every_resample_epochs():
    nt = DistTableBatching.__new__(DistTableBatching)
    nt._train, nt.resample_every = [object()] * 3, 2
    assert [nt.draw_of_epoch(e) for e in range(8)] == [0, 0, 1, 1, 2, 2, 0, 0]
    nt.resample_every = 0
    assert {nt.draw_of_epoch(e) for e in range(5)} == {0}


def test_table_key_names_what_it_expects():
    assert table_key("eval", 1, 0, "valid") == "rbgt_eval1_l0_valid"
    with pytest.raises(ValueError, match=r"kind must be one of \('train', 'eval'\).*'test'"):
        table_key("test", 0, 0, "table")
    with pytest.raises(ValueError, match=r"part one of \('table', 'etype', 'valid'\).*'rows'"):
        table_key("train", 0, 0, "rows")
