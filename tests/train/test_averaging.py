"""The weight average (train.ema_decay) against a float64 loop over the steps, and bad values; how
the training loop evaluates, saves and resumes it: tests/train/test_loop.py."""
import pytest
import torch
from pydantic import ValidationError

from dgl_rbgt.config import TrainSection
from dgl_rbgt.train.averaging import WeightAverage


def test_the_average_follows_the_recurrence_over_parameters_and_batch_norm_statistics():
    """avg_1 = w_1, avg_t = d avg_(t-1) + (1 - d) w_t for every parameter and float buffer, checked
    against a float64 loop over random weights; the model's own weights are back after ``applied``."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4)).double()
    decay = 0.7
    average = WeightAverage(model, decay)
    reference = None
    for _ in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn_like(p))
        model.train()(torch.randn(8, 5, dtype=torch.float64))  # moves the running statistics
        average.update()
        live = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        reference = live if reference is None else {k: decay * reference[k] + (1 - decay) * live[k] for k in live}
    own = {k: v.clone() for k, v in model.state_dict().items()}
    with average.applied() as averaged:
        assert averaged is model
        for k, v in reference.items():
            torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-12, atol=1e-12)
    for k, v in model.state_dict().items():
        assert torch.equal(v, own[k]), k


def test_applied_restores_the_weights_when_evaluation_fails():
    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, 0.9)
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update()
    with torch.no_grad():
        model.weight.add_(1.0)
    own = model.weight.detach().clone()
    with pytest.raises(RuntimeError, match="boom"):
        with average.applied():
            raise RuntimeError("boom")
    assert torch.equal(model.weight, own)


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5, -0.1, 1, True, "0.9"])
def test_a_decay_outside_the_open_unit_interval_is_refused(decay):
    with pytest.raises(ValueError, match="decay must be a float in \\(0, 1\\)"):
        WeightAverage(torch.nn.Linear(2, 2), decay)


@pytest.mark.parametrize("decay", [0.0, 1.0, 2.0, float("nan")])
def test_the_recipe_key_names_itself_on_bad_values(decay):
    with pytest.raises(ValidationError, match="ema_decay"):
        TrainSection(ema_decay=decay)

