"""The trainer's pure pieces: padding keeps DDP in step, evaluation batches equal one machine's."""
import pytest
import torch

from dgl_rbgt.distributed.trainer import Replicated, eval_plan, pad_to


def test_pad_to_repeats_own_nodes_only():
    gen = torch.Generator().manual_seed(0)
    nodes = torch.tensor([5, 9, 11])
    out = pad_to(nodes, 8, gen)
    assert len(out) == 8 and torch.equal(out[:3], nodes)
    assert set(out.tolist()) <= set(nodes.tolist())
    counts = torch.bincount(out)[nodes]
    assert int(counts.max() - counts.min()) <= 1  # padding spreads over the nodes, no node twice more
    assert torch.equal(pad_to(nodes, 3, gen), nodes)
    with pytest.raises(ValueError, match="cannot pad 3 nodes down to 2"):
        pad_to(nodes, 2, gen)
    with pytest.raises(ValueError, match="cannot pad an empty node list"):
        pad_to(nodes[:0], 2, gen)


@pytest.mark.parametrize("world, batch", [(1, 4), (2, 4), (3, 5), (4, 100), (2, 1)])
def test_eval_plan_reproduces_single_machine_batches(world, batch):
    n = 23
    keys = torch.randperm(n) * 10  # original ids (the single-machine order)
    ids = torch.randperm(1000)[:n]  # DistGraph ids: another numbering
    codes = torch.randint(0, 3, (n,))
    single = ids[torch.argsort(keys)].split(batch)  # what one machine would run, batch by batch
    seen = []
    for rank in range(world):
        nodes, sorted_ids, sorted_codes = eval_plan(ids, keys, codes, rank, world, batch)
        mine = nodes.split(batch) if len(nodes) else ()  # what the rank's loader cuts
        assert [b.tolist() for b in mine] == [b.tolist() for b in single[rank::world]]
        seen += nodes.tolist()
        assert torch.equal(sorted_ids, torch.sort(ids).values)
        lookup = dict(zip(ids.tolist(), codes.tolist()))
        assert [lookup[i] for i in sorted_ids.tolist()] == sorted_codes.tolist()
    assert sorted(seen) == sorted(ids.tolist())  # every labelled node evaluated exactly once


def test_replicated_state_dict_has_no_prefix(tmp_path):
    import torch.distributed as tdist

    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = torch.nn.Linear(3, 2)
        wrapped = Replicated(model)
        assert set(wrapped.state_dict()) == {"weight", "bias"}
        state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
        wrapped.load_state_dict(state)
        assert float(model.weight.abs().sum()) == 0.0
    finally:
        tdist.destroy_process_group()
