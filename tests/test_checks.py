"""The shared argument checks: the finite-value test and its memo of large checked tensors."""
import math

import pytest
import torch

from dgl_rbgt._checks import _MEMO_MIN_NUMEL, all_finite, check_feat


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_all_finite_finds_one_bad_value(dtype, bad):
    x = torch.randn(1000, 7).to(dtype)
    assert all_finite(x)
    x[123, 4] = bad
    assert not all_finite(x)


def test_all_finite_overflowing_sum_is_not_an_error():
    # The float16 sum overflows to inf although every value is finite: the exact test decides.
    x = torch.full((100,), 60000.0, dtype=torch.float16)
    assert all_finite(x)


def test_memo_sees_in_place_changes_of_a_large_tensor():
    x = torch.randn(_MEMO_MIN_NUMEL + 1)
    assert all_finite(x) and all_finite(x)  # the second call is answered from the memo
    x[7] = math.nan  # bumps the version counter
    assert not all_finite(x)
    with pytest.raises(ValueError, match="feat contains NaN"):
        check_feat(x.view(-1, 1), "feat")
    view = x[:10]
    view.zero_()  # a view shares the version counter
    assert all_finite(x)


def test_memo_does_not_outlive_its_tensor():
    from dgl_rbgt import _checks

    x = torch.randn(_MEMO_MIN_NUMEL)
    all_finite(x)
    key = id(x)
    assert key in _checks._FINITE_MEMO
    del x
    assert key not in _checks._FINITE_MEMO


def test_inference_tensors_are_checked_every_time():
    with torch.inference_mode():
        x = torch.randn(_MEMO_MIN_NUMEL)
        assert all_finite(x)
        x[0] = math.nan
        assert not all_finite(x)
