"""dlcourse.losses against torch.nn.functional (float64, ATOL = RTOL = 1e-10 from tests/helpers.py:
each loss is a handful of float64 operations per class)."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse.losses import cross_entropy, cross_entropy_with_logits, softmax, square_loss
from helpers import DEVICES, assert_matches_torch

T = [0.0, 1.0, 0.0, 0.0]
Y = [0.25, 0.3, 0.4, 0.05]


def test_deck_example():
    # by hand: 0.25^2 + 0.7^2 + 0.4^2 + 0.05^2 = 0.0625 + 0.49 + 0.16 + 0.0025
    assert square_loss(Y, T).item() == pytest.approx(0.715, abs=1e-12)
    assert cross_entropy(Y, T).item() == pytest.approx(-math.log(0.3), abs=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("device", DEVICES)
def test_match_torch_values_and_gradients(reduction, device):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64).to(device).requires_grad_()
    labels = torch.randint(4, (5,), generator=g).to(device)
    t = F.one_hot(labels, 4).double()
    soft = softmax(torch.randn(5, 4, generator=g, dtype=torch.float64)).to(device)
    for target in (labels, soft):
        ours = cross_entropy_with_logits(z, target, reduction)
        theirs = F.cross_entropy(z, target, reduction=reduction)
        assert_matches_torch(ours, theirs, what=f"cross_entropy_with_logits ({reduction})")
        g_ours, = torch.autograd.grad(ours.sum(), z)
        g_theirs, = torch.autograd.grad(theirs.sum(), z)
        assert_matches_torch(g_ours, g_theirs, what="gradient w.r.t. logits")
    y = softmax(z)
    assert_matches_torch(y, torch.softmax(z, -1), what="softmax")
    assert_matches_torch(cross_entropy(y, t, reduction), F.cross_entropy(z, labels, reduction=reduction),
                         what=f"cross_entropy of probabilities ({reduction})")
    per_example = F.mse_loss(y, t, reduction="none").sum(-1)
    expected = {"none": per_example, "sum": per_example.sum(), "mean": per_example.mean()}[reduction]
    assert_matches_torch(square_loss(y, t, reduction), expected, what=f"square_loss ({reduction})")


def test_sum_matches_mse_loss_sum():
    assert_matches_torch(square_loss(torch.tensor(Y), torch.tensor(T), "sum").double(),
                         F.mse_loss(torch.tensor(Y), torch.tensor(T), reduction="sum").double())


def test_zero_probability_where_target_is_zero_is_fine():
    assert cross_entropy([0.0, 1.0], [0.0, 1.0]).item() == 0.0
    assert math.isinf(cross_entropy([0.0, 1.0], [1.0, 0.0]).item())


def test_large_logits_stay_finite():
    z = torch.tensor([[1000.0, 0.0, -1000.0]], dtype=torch.float64)
    assert cross_entropy_with_logits(z, torch.tensor([2])).item() == pytest.approx(2000.0)


def test_errors():
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\]"):
        cross_entropy([1.5, -0.5], [1.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        square_loss([0.5, 0.5], [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="reduction must be one of"):
        square_loss(Y, T, reduction="avg")
    with pytest.raises(ValueError, match="class indices must be in \\[0, 3\\]"):
        cross_entropy_with_logits(torch.zeros(2, 4), torch.tensor([0, 4]))


prob_vectors = st.lists(st.floats(0.01, 1.0, allow_nan=False), min_size=2, max_size=6).map(
    lambda v: torch.tensor(v, dtype=torch.float64) / sum(v))


@settings(deadline=None, max_examples=50)
@given(y=prob_vectors, k=st.integers(0, 5))
def test_properties_one_hot(y, k):
    k = k % len(y)
    t = F.one_hot(torch.tensor(k), len(y)).double()
    ce, sq = cross_entropy(y, t).item(), square_loss(y, t).item()
    assert ce == pytest.approx(-math.log(y[k].item()))  # only the true class counts
    assert ce >= 0 and 0 <= sq <= 2  # |t - y|^2 <= |t|^2 + |y|^2 <= 2 for probability vectors
    # the gradient of CE through softmax is y - t: bounded, never vanishing while y_k < 1
    z = torch.log(y).requires_grad_()
    cross_entropy_with_logits(z, torch.tensor(k)).backward()
    assert_matches_torch(z.grad, y - t, atol=1e-12, rtol=1e-9, what="d CE / d z = softmax(z) - t")
