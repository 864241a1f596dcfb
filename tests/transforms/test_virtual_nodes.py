"""AddVirtualNodes on single and batched graphs."""
import dgl
import pytest
import torch
from dgl.base import DGLError

from dgl_rbgt.transforms.edge_types import EdgeType
from dgl_rbgt.transforms.virtual_nodes import AddVirtualNodes




def member_graph(num_nodes, num_edges):
    g = dgl.rand_graph(num_nodes, num_edges)
    g.ndata["feat"] = torch.randn(num_nodes, 3)
    g.ndata["label"] = torch.randint(4, (num_nodes,))
    g.ndata["train_mask"] = torch.rand(num_nodes) < 0.5
    g.edata["w"] = torch.rand(num_edges)
    return g


@pytest.mark.parametrize("k", [1, 3])
def test_batched_graph_gets_k_virtual_nodes_per_member(k):
    graphs = [member_graph(5, 8), member_graph(1, 0), member_graph(7, 12)]
    bg = dgl.batch(graphs)
    before = [t.clone() for t in bg.edges()]
    out = AddVirtualNodes(k)(bg)
    assert torch.equal(bg.edges()[0], before[0]) and "is_virtual" not in bg.ndata  # input untouched
    assert out.batch_num_nodes().tolist() == [n + k for n in (5, 1, 7)]
    assert out.batch_num_edges().tolist() == [e + 2 * k * n for n, e in ((5, 8), (1, 0), (7, 12))]
    members = dgl.unbatch(out)
    assert len(members) == 3
    for member, orig in zip(members, graphs):
        n, e0 = orig.num_nodes(), orig.num_edges()
        assert member.num_nodes() == n + k
        # real nodes first with their data, then the virtual ones
        assert torch.equal(member.ndata["is_virtual"], torch.arange(n + k) >= n)
        assert torch.equal(member.ndata["feat"][:n], orig.ndata["feat"])
        assert (member.ndata["feat"][n:] == 0).all()
        assert torch.equal(member.ndata["label"][:n], orig.ndata["label"])
        assert (member.ndata["label"][n:] == -1).all()
        assert torch.equal(member.ndata["train_mask"][:n], orig.ndata["train_mask"])
        assert not member.ndata["train_mask"][n:].any()
        src, dst = member.edges()
        # original edges first, unchanged and typed GRAPH
        assert torch.equal(src[:e0], orig.edges()[0]) and torch.equal(dst[:e0], orig.edges()[1])
        assert (member.edata["etype"][:e0] == EdgeType.GRAPH).all()
        assert torch.equal(member.edata["w"][:e0], orig.edata["w"])
        assert (member.edata["w"][e0:] == 0).all()
        # every real node -> every virtual node (VIRTUAL_IN) and back (VIRTUAL_OUT), once
        etype = member.edata["etype"]
        into = etype == EdgeType.VIRTUAL_IN
        out_of = etype == EdgeType.VIRTUAL_OUT
        assert int(into.sum()) == int(out_of.sum()) == k * n
        assert (src[into] < n).all() and (dst[into] >= n).all()
        assert (src[out_of] >= n).all() and (dst[out_of] < n).all()
        pairs_in = set(zip(src[into].tolist(), dst[into].tolist()))
        pairs_out = set(zip(dst[out_of].tolist(), src[out_of].tolist()))
        expected = {(r, v) for r in range(n) for v in range(n, n + k)}
        assert pairs_in == pairs_out == expected


def test_single_graph_degrees():
    g = member_graph(10, 20)
    out = AddVirtualNodes(2)(g)
    assert out.num_nodes() == 12 and out.num_edges() == 20 + 40
    virt = out.ndata["is_virtual"]
    assert (out.in_degrees()[virt] == 10).all() and (out.out_degrees()[virt] == 10).all()
    assert torch.equal(out.in_degrees()[~virt], g.in_degrees() + 2)


def test_existing_codes_are_kept_and_repeated_use_marks_all_virtual_nodes():
    g = member_graph(6, 10)
    once = AddVirtualNodes()(g)
    twice = AddVirtualNodes()(once)
    assert twice.ndata["is_virtual"].sum() == 2
    e1 = once.num_edges()
    assert torch.equal(twice.edata["etype"][:e1], once.edata["etype"])


def test_errors_and_repr():
    with pytest.raises(ValueError, match="num_virtual must be >= 1"):
        AddVirtualNodes(0)
    with pytest.raises(TypeError, match="num_virtual must be an int"):
        AddVirtualNodes(1.0)
    g = member_graph(4, 5)
    g.edata["etype"] = torch.full((5,), 11)
    with pytest.raises(DGLError, match="another meaning"):
        AddVirtualNodes()(g)
    with pytest.raises(DGLError, match="homogeneous"):
        AddVirtualNodes()(dgl.heterograph({("a", "r", "b"): ([0], [1])}))
    assert repr(AddVirtualNodes(2)) == "AddVirtualNodes(num_virtual=2)"
