"""DistDGL node batches evaluate a large graph in exactly the single machine's parts."""
import dgl
import pytest
import torch

from dgl_rbgt.batching import NodeBatches
from dgl_rbgt.distributed.batching import DistNodeBatches
from dgl_rbgt.distributed.trainer import eval_plan


class _LocalDistNodeBatches(DistNodeBatches):
    """DistNodeBatches over an in-process graph: in-edges come from the graph itself, not a server."""

    def _in_neighbours(self, nodes):
        src, dst = self.graph.in_edges(nodes)
        return src, dst


def _edge_set(sub, nodes):
    u, v = sub.edges()
    return set(zip(nodes[u].tolist(), nodes[v].tolist()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_large_graph_parts_equal_single_machine_parts(dtype):
    """... with features stored in float32 or half precision (the model gets float32 either way)."""
    torch.manual_seed(0)
    n, world, eval_bs = 230, 3, 40
    g = dgl.rand_graph(n, 1500)
    g.ndata["feat"] = torch.randn(n, 5).to(dtype)
    g.ndata["label"] = torch.randint(0, 3, (n,))
    split = torch.randint(-1, 3, (n,))  # -1: in no split
    for i, key in enumerate(("train_mask", "val_mask", "test_mask")):
        g.ndata[key] = split == i
    single = NodeBatches(g, batch_size=64, eval_batch_size=eval_bs, eval_full_graph_nodes=100)
    expected = list(single.eval_batches(torch.arange(n)))
    # DistGraph ids: another numbering; the original ids are the single machine's
    dist_of_orig = torch.randperm(n)
    dg = dgl.graph((dist_of_orig[g.edges()[0]], dist_of_orig[g.edges()[1]]), num_nodes=n)
    for key in ("feat", "label", "train_mask", "val_mask", "test_mask"):
        dg.ndata[key] = torch.empty_like(g.ndata[key])
        dg.ndata[key][dist_of_orig] = g.ndata[key]
    shares = torch.randperm(n).tensor_split(world)  # every trainer's own nodes, in DistGraph ids
    orig_of_dist = torch.argsort(dist_of_orig)
    got = {}
    for rank in range(world):
        parts, _, _ = eval_plan(torch.cat(shares), orig_of_dist[torch.cat(shares)], torch.zeros(n, dtype=torch.int64),
                                rank, world, eval_bs)
        batching = _LocalDistNodeBatches(dg, "cpu", rank=rank, world=world, batch_size=64, seed=0,
                                         local_nodes=shares[rank], eval_batch_size=eval_bs, eval_parts=parts)
        for i, batch in enumerate(batching.eval_batches()):  # this rank's parts: i-th is part rank + i * world
            call = []
            out = batch.run(lambda s, f: call.append((s, f)) or f)
            assert out.dtype == torch.float32
            assert torch.equal(out, dg.ndata["feat"][batch.output_nodes].float())  # every node of the part is an output
            got[rank + i * world] = (orig_of_dist[batch.output_nodes], *call[0], batch)
    assert sorted(got) == list(range(len(expected)))
    for k, want in enumerate(expected):
        nodes, sub, feat, batch = got[k]
        assert torch.equal(nodes, want.output_nodes)  # the same nodes, in the same order
        single_call = []
        want.run(lambda s, f: single_call.append((s, f)) or f)
        single_sub, single_feat = single_call[0]
        assert torch.equal(feat, single_feat)
        assert _edge_set(sub, nodes) == _edge_set(single_sub, want.output_nodes)  # the induced subgraph alone
        assert torch.equal(batch.labels, g.ndata["label"][nodes])
        assert torch.equal(batch.splits.to(torch.int64), split[nodes])  # the batch carries its splits
