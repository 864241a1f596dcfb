"""Spexphormer's neighbour tables in the partitions: after partitioning they name the same
neighbours as the single-machine draws (ids rewritten into DistGraph ids), and the recipe checks
refuse what a distributed run cannot do."""
import dgl
import pytest
import torch

from dgl_rbgt.distributed.batching import DistTableBatching, equal_chunks
from dgl_rbgt.config import check_recipe_for_distributed, parse_distributed
from dgl_rbgt.distributed.partition import check_partitions, partition
from dgl_rbgt.distributed.tables import SCORES_KEY, ChunkedResampler, TableResampler, partition_scores, table_key
from dgl_rbgt.errors import RecipeError, UserError
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
    dist = parse_distributed({"hosts": [{"address": "10.0.0.1"}, {"address": "10.0.0.2"}],
                              "partition_method": "random", "partition_dir": str(tmp_path / "parts")})
    report = partition(recipe, dist)
    assert report["tables"] == {"layers": 2, "eval_draws": 2, "resample_every": 2}
    assert report["stage1_peak_rss_mb"] > 100  # the child's own peak (it imports torch and DGL)
    assert check_partitions(recipe, dist)["tables"] == report["tables"]
    scores = torch.load(tmp_path / "parts" / "scores.pt", weights_only=True)["scores"]
    assert scores.shape[0] == 2 and (tmp_path / "parts" / "stage1" / "best.pt").is_file()

    seed_everything(recipe.seed)
    dataset, graph = prepare_dataset(recipe)  # the graph the scores belong to, original ids
    # stage 1 ran in a child process: the same scores as in this one
    assert torch.equal(partition_scores(recipe, dataset, graph, tmp_path / "here"), scores)
    expected = {("train", 0): sparsify(graph, scores, [4, 3], generator=torch.Generator().manual_seed(
        epoch_seed(recipe.seed, 0)))}
    expected.update({("eval", i): sparsify(graph, scores, [4, 3], generator=torch.Generator().manual_seed(i))
                     for i in range(2)})

    seen = seen_edges = 0
    for p in range(2):
        g, feats, efeats, *_ = dgl.distributed.load_partition(str(tmp_path / "parts" / report["part_config"]), p)
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
        assert not any(table_key("train", 1, 0, "table") in k for k in feats)  # one stored training draw
        # the scores travel as edge data: the partition's own edges, each with its layers' scores
        (key,) = [k for k in efeats if k.endswith("/" + SCORES_KEY)]
        inner = torch.nonzero(g.edata["inner_edge"].bool()).squeeze(1)
        inner = inner[torch.argsort(g.edata[dgl.EID][inner])]  # stored rows: own edges by DistGraph id
        u, v = (new_to_orig[g.ndata[dgl.NID][e]] for e in g.find_edges(inner))
        stored = torch.cat([torch.stack([u, v], 1).double(), efeats[key].double()], 1)  # (u, v, scores)
        eids = torch.nonzero(torch.isin(graph.edges()[1], orig)).squeeze(1)  # in-edges of the own nodes
        wu, wv = graph.find_edges(eids)
        want = torch.cat([torch.stack([wu, wv], 1).double(), scores[:, eids].t().double()], 1)
        assert torch.equal(_rows_sorted(stored), _rows_sorted(want))
        seen += len(orig)
        seen_edges += len(efeats[key])
    assert seen == N and seen_edges == graph.num_edges()

    # stage 1 named by the recipe: no child process, the same partitions
    again = spex_recipe(resample_every=2, stage1={**recipe.stage1.model_dump(mode="json"),
                                                  "scores": str(tmp_path / "parts" / "scores.pt")})
    dist2 = parse_distributed({**dist.model_dump(mode="json"), "partition_dir": str(tmp_path / "parts2")})
    assert partition(again, dist2)["stage1_peak_rss_mb"] is None
    for p in range(2):
        _, feats, *_ = dgl.distributed.load_partition(str(tmp_path / "parts" / report["part_config"]), p)
        _, feats2, *_ = dgl.distributed.load_partition(str(tmp_path / "parts2" / report["part_config"]), p)
        assert feats.keys() == feats2.keys() and all(torch.equal(feats[k], feats2[k]) for k in feats)


def test_stage1_error_in_its_child_process_is_raised_by_partition(tmp_path, monkeypatch):
    monkeypatch.setenv("DGL_RBGT_DATA", str(tmp_path / "no-data"))  # the child reads the environment
    recipe = spex_recipe(dataset={"name": "cora"})
    dist = parse_distributed({"hosts": [{"address": "10.0.0.1"}, {"address": "10.0.0.2"}],
                              "partition_method": "random", "partition_dir": str(tmp_path / "parts")})
    with pytest.raises(UserError, match="no-data"):
        partition(recipe, dist)
    assert not (tmp_path / "parts" / "rbgt_partition.json").exists()


def _rows_sorted(t):
    """Rows of ``t`` in lexicographic order (multi-edges: same (u, v), told apart by their scores)."""
    for col in reversed(range(t.shape[1])):
        t = t[torch.argsort(t[:, col], stable=True)]
    return t


def test_every_resample_epoch_is_accepted_and_table_draws_is_gone():
    dist = parse_distributed({"hosts": [{"address": "127.0.0.1"}]})
    check_recipe_for_distributed(spex_recipe(resample_every=1), dist)  # redrawn by the trainers
    check_recipe_for_distributed(spex_recipe(resample_every=0), dist)  # one fixed draw
    with pytest.raises(RecipeError, match="table_draws"):
        parse_distributed({"hosts": [{"address": "127.0.0.1"}], "table_draws": 2})


def test_full_graph_training_is_refused():
    recipe = parse_recipe({"name": "f", "dataset": {"name": "csbm"}, "model": {"name": "gcn"}})
    with pytest.raises(RecipeError, match=r"train.batching: 'full' .*neighbor .*node_batch .*neighbour_tables"):
        check_recipe_for_distributed(recipe, parse_distributed({"hosts": [{"address": "127.0.0.1"}]}))


def test_equal_chunks_give_every_trainer_the_same_batch_count():
    parts = equal_chunks(torch.arange(10), 4)
    assert [len(p) for p in parts] == [3, 3, 2, 2] and torch.equal(torch.cat(parts), torch.arange(10))
    with pytest.raises(ValueError, match="cannot cut 2 nodes into 3"):
        equal_chunks(torch.arange(2), 3)


class FakeResampler:
    def __init__(self):
        self.calls = []

    def redraw(self, graph, epoch):
        self.calls.append(epoch)


@pytest.mark.parametrize("every,start,expected", [
    (2, 0, [2, 4, 6]),  # epochs 0..7: epoch 0 uses the stored draw, then one redraw per 2 epochs
    (1, 0, [1, 2, 3, 4, 5, 6, 7]),
    (3, 5, [3, 6]),  # resumed at epoch 5: the draw of epoch 3 first
    (0, 0, []),  # one fixed draw
])
def test_trainers_redraw_every_resample_epochs(monkeypatch, every, start, expected):
    import torch.distributed as tdist

    barriers = []
    monkeypatch.setattr(tdist, "barrier", lambda: barriers.append(1))
    nt = DistTableBatching.__new__(DistTableBatching)
    nt.resample_every, nt.drawn_for, nt.resampler, nt.graph = every, 0, FakeResampler(), None
    for epoch in range(start, 8):
        nt._redraw_if_due(epoch)
    assert nt.resampler.calls == expected and len(barriers) == 2 * len(expected)  # before and after writing


def local_fetch(graph, scores, asked=None):
    """A ChunkedResampler's fetch over a local graph: the in-edges of a chunk, in a shuffled order
    (as edges arrive from several servers); records the chunks asked for in ``asked``."""
    from dgl_rbgt.conventions import ETYPE

    src, dst = graph.edges()

    def fetch(chunk):
        if asked is not None:
            asked.append(chunk)
        eids = torch.nonzero(torch.isin(dst, chunk)).squeeze(1)
        eids = eids[torch.randperm(len(eids))]
        etypes = graph.edata[ETYPE][eids] if ETYPE in graph.edata else None
        return src[eids], dst[eids], scores[:, eids], etypes, eids

    return fetch


def resampler_split(graph, scores, ks, method, parts=2, seed=0, chunk_nodes=7):
    """The nodes split over `parts` trainers, each with its own resampler (as the trainers build
    them), redrawing a few nodes at a time."""
    return [ChunkedResampler(nodes, local_fetch(graph, scores), ks, method, seed, rank, chunk_nodes=chunk_nodes)
            for rank, nodes in enumerate(torch.arange(graph.num_nodes()).tensor_split(parts))]


def joined_draw(resamplers, epoch):
    draws = [rows for r in resamplers for rows in r.draw_chunks(epoch)]
    return [{part: torch.cat([d[layer][part] for d in draws]) for part in ("table", "etype", "valid")}
            for layer in range(len(draws[0]))]


def test_chunked_redraw_fetches_one_chunk_at_a_time_and_repeats():
    g, scores = spex_graph()
    asked = []
    r = ChunkedResampler(torch.arange(10, 60), local_fetch(g, scores, asked), [3, 2], "reservoir", 0, 1,
                         chunk_nodes=16)
    rows = [[{k: v.clone() for k, v in layer.items()} for layer in chunk] for chunk in r.draw_chunks(epoch=5)]
    assert [c.tolist() for c in asked] == [c.tolist() for c in torch.arange(10, 60).split(16)]
    again = list(r.draw_chunks(epoch=5))  # the edges arrive in another order: the same rows
    for a, b in zip(rows, again):
        for la, lb in zip(a, b):
            assert all(torch.equal(la[k], lb[k]) for k in ("table", "etype", "valid"))
    other = list(r.draw_chunks(epoch=6))
    assert not all(torch.equal(a[0]["table"], b[0]["table"]) for a, b in zip(rows, other))
    src, dst = g.edges()
    for chunk, chunk_rows in zip(torch.arange(10, 60).split(16), rows):
        for layer in chunk_rows:  # every valid entry is an in-neighbour of its node
            for node, row, ok in zip(chunk.tolist(), layer["table"], layer["valid"].bool()):
                assert set(row[ok].tolist()) <= set(src[dst == node].tolist())
    with pytest.raises(ValueError, match="chunk_nodes"):
        ChunkedResampler(torch.arange(3), local_fetch(g, scores), 2, "reservoir", 0, 0, chunk_nodes=0)
    with pytest.raises(TypeError, match=r"nodes must be a 1-D int64 or int32 tensor of ids, got torch.float32"):
        ChunkedResampler(torch.zeros(3), local_fetch(g, scores), 2, "reservoir", 0, 0)


def spex_graph(n=60, seed=0):
    from dgl_rbgt.transforms.edge_types import add_self_loops

    torch.manual_seed(seed)
    g = add_self_loops(dgl.to_simple(dgl.rand_graph(n, 5 * n)))
    return g, torch.rand(2, g.num_edges()) ** 3  # uneven scores: the law is visible


def test_redrawn_topk_rows_are_the_single_machine_rows():
    g, scores = spex_graph()
    nb = sparsify(g, scores, [3, 2], method="topk", generator=torch.Generator().manual_seed(0))
    rows = joined_draw(resampler_split(g, scores, [3, 2], "topk", parts=3), epoch=4)
    full = g.in_degrees() >= 3  # deficient nodes fill up at random; the others are deterministic
    for layer in range(2):
        assert torch.equal(rows[layer]["table"][full].sort(1).values, nb.tables[layer][full].sort(1).values)
        assert torch.equal(rows[layer]["valid"].bool(), nb.valid[layer])
        # edge types follow the kept edges (self-loops have their own code)
        assert torch.equal(rows[layer]["etype"][full].long().sort(1).values, nb.etypes[layer][full].sort(1).values)


def test_redraws_do_not_depend_on_the_order_edges_arrive_in():
    from dgl_rbgt.conventions import ETYPE

    g, scores = spex_graph()
    src, dst = g.edges()
    nodes = torch.arange(g.num_nodes())
    eids = torch.arange(g.num_edges())
    perm = torch.randperm(g.num_edges(), generator=torch.Generator().manual_seed(3))
    draws = [TableResampler(nodes, src[p], dst[p], scores[:, p], g.edata[ETYPE][p], [3, 2], "reservoir", 0, 0,
                            edge_ids=eids[p]).draw(epoch=2) for p in (torch.arange(g.num_edges()), perm)]
    for a, b in zip(*draws):
        assert all(torch.equal(a[part], b[part]) for part in ("table", "etype", "valid"))


@pytest.mark.parametrize("change, error, message", [
    ({"nodes": [0, 1]}, TypeError, r"nodes must be a 1-D int64 or int32 tensor of ids, got list"),
    ({"src": torch.zeros(4)}, TypeError, r"src must be a 1-D int64 or int32 tensor of ids, got torch.float32"),
    ({"dst": torch.tensor([0, 1])}, ValueError, r"one entry per edge \(4 in src\), got dst 2"),
    ({"edge_ids": torch.arange(3)}, ValueError, r"one entry per edge \(4 in src\), got dst 4, edge_ids 3"),
    ({"scores": torch.ones(4)}, ValueError, r"scores must be \(L, 4\).*got \(4,\)"),
    ({"dst": torch.tensor([0, 0, 1, 9])}, ValueError, r"dst must hold only ids from nodes"),
    ({"scores": -torch.ones(1, 4)}, ValueError, r"scores"),  # the Sparsifier's own check
])
def test_resampler_inputs_are_checked(change, error, message):
    args = {"nodes": torch.tensor([0, 1]), "src": torch.tensor([0, 1, 2, 0]), "dst": torch.tensor([0, 0, 1, 1]),
            "scores": torch.ones(1, 4), "etypes": None, "ks": 2, "method": "reservoir", "seed": 0, "rank": 0,
            "edge_ids": torch.arange(4)}
    with pytest.raises(error, match=message):
        TableResampler(**{**args, **change})


def test_redrawn_rows_follow_the_single_machine_law():
    """Per (node, source) inclusion frequencies over many epochs: the trainers' redraws against the
    single-machine Sparsifier over as many seeds; both estimate the same probabilities."""
    g, scores = spex_graph(n=40)
    ks, draws = [3, 2], 600
    resamplers = resampler_split(g, scores, ks, "reservoir")
    n = g.num_nodes()
    ours = [torch.zeros(n, n) for _ in ks]
    theirs = [torch.zeros(n, n) for _ in ks]
    for e in range(draws):
        rows = joined_draw(resamplers, e)
        nb = sparsify(g, scores, ks, generator=torch.Generator().manual_seed(10_000 + e))
        for layer, k in enumerate(ks):
            node = torch.arange(n).repeat_interleave(k)
            ours[layer].index_put_((node, rows[layer]["table"].reshape(-1)), torch.ones(n * k), accumulate=True)
            theirs[layer].index_put_((node, nb.tables[layer].reshape(-1)), torch.ones(n * k), accumulate=True)
    for layer in range(len(ks)):
        p, q = ours[layer] / draws, theirs[layer] / draws
        # two independent estimates of one probability: difference sd <= sqrt(2 * 0.25 / draws) = 0.029
        assert (p - q).abs().max() < 5 * (0.5 / draws) ** 0.5, layer
        assert torch.allclose(p.sum(1), torch.full((n,), float(ks[layer])))  # k entries per row
    # and a redraw is not a copy: seeds differ per epoch and per trainer
    a, b = joined_draw(resamplers, 0), joined_draw(resamplers, 1)
    assert not torch.equal(a[0]["table"], b[0]["table"])


def test_table_key_names_what_it_expects():
    assert table_key("eval", 1, 0, "valid") == "rbgt_eval1_l0_valid"
    with pytest.raises(ValueError, match=r"kind must be one of \('train', 'eval'\).*'test'"):
        table_key("test", 0, 0, "table")
    with pytest.raises(ValueError, match=r"part one of \('table', 'etype', 'valid'\).*'rows'"):
        table_key("train", 0, 0, "rows")
