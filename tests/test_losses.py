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


def value_and_grad(loss_fn, z, target, **kwargs):
    z = z.clone().requires_grad_(True)
    loss = loss_fn(z, target, **kwargs)
    loss.sum().backward()
    return loss.detach(), z.grad


@pytest.mark.parametrize("device", DEVICES)
def test_minus_inf_logit_on_another_class_stays_finite_like_torch(device):
    inf = float("inf")
    z = torch.tensor([[1.0, -inf, 2.0], [0.5, 0.2, -inf], [-inf, 3.0, -1.0]], dtype=torch.float64, device=device)
    target = torch.tensor([0, 1, 2], device=device)
    theirs, torch_grad = value_and_grad(F.cross_entropy, z, target)
    ours, grad = value_and_grad(cross_entropy_with_logits, z, target)
    assert torch.isfinite(ours) and torch.isfinite(grad).all()
    assert_matches_torch(ours, theirs, what="loss with -inf logits")
    assert_matches_torch(grad, torch_grad, what="gradient with -inf logits")
    # on the target class a -inf logit means probability 0: an infinite loss, in torch too
    inf_target = torch.tensor([1], device=device)
    assert cross_entropy_with_logits(z[:1], inf_target).item() == F.cross_entropy(z[:1], inf_target).item() == inf


TARGET_DTYPES = [(torch.int64, True), (torch.uint8, True), (torch.int32, False), (torch.int16, False),
                 (torch.int8, False), (torch.bool, False)]


@pytest.mark.parametrize("dtype, accepted", TARGET_DTYPES, ids=[str(d) for d, _ in TARGET_DTYPES])
def test_target_dtypes_accepted_and_rejected_as_in_torch(dtype, accepted):
    z = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 1, 1, 0]).to(dtype)
    if accepted:
        assert_matches_torch(cross_entropy_with_logits(z, target), F.cross_entropy(z, target), what=f"{dtype} target")
        return
    with pytest.raises(RuntimeError):
        F.cross_entropy(z, target)
    with pytest.raises(RuntimeError, match=f"int64 \\(long\\) or torch.uint8.*got {dtype}"):
        cross_entropy_with_logits(z, target)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index, labels", [(-100, [0, -100, 2, -100, 1]), (1, [0, 1, 2, 1, 1]),
                                                  (-100, [-100] * 5), (3, [3, 0, 3, 3, 2])])
def test_ignore_index_like_torch(device, reduction, ignore_index, labels):
    # "mean" divides by the number of examples that count (NaN when none does, as in torch)
    z = torch.randn(5, 3 if ignore_index != 3 else 4, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2)).to(device)
    target = torch.tensor(labels, device=device)
    theirs, torch_grad = value_and_grad(F.cross_entropy, z, target, reduction=reduction, ignore_index=ignore_index)
    ours, grad = value_and_grad(cross_entropy_with_logits, z, target, reduction=reduction, ignore_index=ignore_index)
    assert torch.equal(ours.isnan(), theirs.isnan())
    assert_matches_torch(ours.nan_to_num(), theirs.nan_to_num(), what=f"ignore_index={ignore_index} ({reduction})")
    assert_matches_torch(grad.nan_to_num(), torch_grad.nan_to_num(), what="gradient")
    if reduction == "mean" and labels.count(ignore_index) < len(labels):
        kept = [i for i, t in enumerate(labels) if t != ignore_index]
        assert ours.item() == pytest.approx(cross_entropy_with_logits(z[kept], target[kept]).item(), rel=1e-12)


def test_unbatched_ignored_target_like_torch():
    z = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    for reduction in ("mean", "sum", "none"):
        theirs = F.cross_entropy(z, torch.tensor(-100), reduction=reduction)
        ours = cross_entropy_with_logits(z, torch.tensor(-100), reduction=reduction)
        assert torch.equal(ours.isnan(), theirs.isnan()) and ours.nan_to_num().item() == theirs.nan_to_num().item()


@pytest.mark.parametrize("labels, ignore_index", [([0, 4], -100), ([-1, 0], -100), ([0, -100], 2)])
def test_out_of_bounds_class_is_an_index_error_as_in_torch(labels, ignore_index):
    z, target = torch.zeros(2, 4, dtype=torch.float64), torch.tensor(labels)
    with pytest.raises(IndexError):
        F.cross_entropy(z, target, ignore_index=ignore_index)
    with pytest.raises(IndexError, match=r"out of bounds: class indices must be in \[0, 3\]"):
        cross_entropy_with_logits(z, target, ignore_index=ignore_index)


@pytest.mark.parametrize("ignore_index, accepted", [(-100, True), (-1, True), (0, False), (7, False)])
def test_ignore_index_with_probability_targets_as_in_torch(ignore_index, accepted):
    z = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    t = softmax(torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4)))
    if accepted:
        assert_matches_torch(cross_entropy_with_logits(z, t, ignore_index=ignore_index),
                             F.cross_entropy(z, t, ignore_index=ignore_index))
        return
    with pytest.raises(RuntimeError):
        F.cross_entropy(z, t, ignore_index=ignore_index)
    with pytest.raises(RuntimeError, match="not supported for probability targets"):
        cross_entropy_with_logits(z, t, ignore_index=ignore_index)


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
