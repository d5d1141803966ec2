"""dlcourse.dropout against torch.nn.functional.dropout, plus statistical checks.

Statistical tests draw n independent Bernoulli entries from a fixed seed, so they are
deterministic; their bounds are nevertheless wide enough that *any* correct
implementation passes with near certainty: we allow Z = 6 standard deviations, and a
normal tail beyond 6 sigma has probability 2e-9 (for n >= 10^5 and keep probabilities in
[0.2, 0.9] the binomial is very close to normal). The same bounds exclude the classic
mistakes by a wide margin, which `test_bounds_reject_classic_mistakes` checks.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse.dropout import (classic_dropout, dropout, dropout_backward, dropout_forward, inference_scale,
                              keep_mask)
from helpers import DEVICES, assert_matches_torch

Z = 6.0
N = 200_000


def generator_for(device, seed):
    return torch.Generator(device=device).manual_seed(seed)


def binomial_halfwidth(q: float, n: int) -> float:
    """Half-width of the Z-sigma interval for a fraction of n Bernoulli(q) draws."""
    return Z * math.sqrt(q * (1 - q) / n)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8])
@pytest.mark.parametrize("shape", [(7,), (4, 5), (2, 3, 6)])
def test_same_mask_as_torch_on_cpu(p, shape):
    # On the CPU torch draws dropout's mask with bernoulli_(1 - p) from the global
    # generator; from the same seed our dropout must give exactly torch's output.
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(123)
    theirs = F.dropout(x, p, training=True)
    ours = dropout(x, p, training=True, generator=torch.Generator().manual_seed(123))
    assert_matches_torch(ours, theirs, atol=0, rtol=0, what=f"dropout p={p}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [0.0, 0.25, 1.0])
def test_eval_and_extreme_p_match_torch(device, p):
    x = torch.randn(3, 4, dtype=torch.float64, device=device)
    assert_matches_torch(dropout(x, p, training=False), F.dropout(x, p, training=False), what="eval mode")
    if p in (0.0, 1.0):  # deterministic in training too: identity and all zeros
        assert_matches_torch(dropout(x, p, training=True), F.dropout(x, p, training=True), what=f"train p={p}")


def same_with_nan(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert torch.equal(ours.isnan(), theirs.isnan()), f"{what}: NaN at other places than torch's"
    assert_matches_torch(ours.nan_to_num(), theirs.nan_to_num(), atol=0, rtol=0, what=what)


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_inf_nan_and_the_autograd_graph_as_in_torch(p):
    # torch computes x * 0 for a dropped entry, so inf and NaN become NaN; p = 1 still
    # returns a tensor in the graph (its gradient is upstream * 0); p = 0 returns x itself
    x = torch.tensor([1.5, float("inf"), float("nan"), -float("inf"), -2.0, 0.25], dtype=torch.float64)
    upstream = torch.tensor([1.0, 2.0, float("inf"), 0.5, float("nan"), 3.0], dtype=torch.float64)
    ours_x, theirs_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    torch.manual_seed(5)
    theirs = F.dropout(theirs_x, p)
    ours, mask = dropout_forward(ours_x, p, generator=torch.Generator().manual_seed(5))
    same_with_nan(ours, theirs, f"dropout p={p}")
    assert (ours.grad_fn is None) == (theirs.grad_fn is None) and ours.requires_grad
    theirs.backward(upstream)
    ours.backward(upstream)
    same_with_nan(ours_x.grad, theirs_x.grad, f"gradient through dropout p={p}")
    same_with_nan(dropout_backward(upstream, mask, p), theirs_x.grad, f"dropout_backward p={p}")
    if p == 0.0:
        assert dropout(ours_x, p) is ours_x and F.dropout(ours_x, p) is ours_x
    assert dropout(ours_x, p, training=False) is ours_x


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [0.2, 0.5, 0.7])
def test_kept_fraction_and_mean(device, p):
    x = torch.ones(N, dtype=torch.float64, device=device)
    out, mask = dropout_forward(x, p, generator=generator_for(device, 0))
    kept = mask.double().mean().item()
    assert abs(kept - (1 - p)) < binomial_halfwidth(1 - p, N), f"kept fraction {kept} for p={p}"
    # out = mask / (1 - p) has mean 1 and variance p / (1 - p) per entry
    mean_halfwidth = Z * math.sqrt(p / (1 - p) / N)
    assert abs(out.mean().item() - 1.0) < mean_halfwidth, f"mean {out.mean().item()} for p={p}"
    assert torch.equal(out != 0, mask)


def test_bounds_reject_classic_mistakes():
    # p read as the keep probability: kept fraction p instead of 1 - p; no rescaling: mean 1 - p.
    for p in (0.2, 0.3, 0.7):
        assert abs(p - (1 - p)) > 10 * binomial_halfwidth(1 - p, N)
        assert abs((1 - p) - 1.0) > 10 * Z * math.sqrt(p / (1 - p) / N)


@pytest.mark.parametrize("device", DEVICES)
def test_backward_matches_autograd(device):
    p = 0.3
    x = torch.randn(5, 6, dtype=torch.float64, device=device, requires_grad=True)
    out, mask = dropout_forward(x, p, generator=generator_for(device, 4))
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    assert_matches_torch(dropout_backward(upstream, mask, p), x.grad, what="dropout_backward")


def test_backward_matches_torch_dropout_grad_on_cpu():
    p = 0.4
    x = torch.randn(50, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(50, dtype=torch.float64)
    torch.manual_seed(9)
    (F.dropout(x, p) * upstream).sum().backward()
    mask = keep_mask(x.detach(), p, torch.Generator().manual_seed(9))
    assert_matches_torch(dropout_backward(upstream, mask, p), x.grad, what="dropout_backward")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [0.2, 0.4, 0.6])
def test_classic_dropout_correction_matches_training_mean(device, p):
    x = torch.tensor([0.4, 0.7, 0.3, 0.3], dtype=torch.float64, device=device)
    reps = N // 4
    train = classic_dropout(x.expand(reps, 4).contiguous(), p, generator=generator_for(device, 2))
    # each column: reps draws of x_i * Bernoulli(1 - p), standard deviation x_i * sqrt(p (1 - p))
    halfwidth = Z * x * math.sqrt(p * (1 - p) / reps)
    inferred = classic_dropout(x, p, training=False)
    assert ((train.mean(dim=0) - inferred).abs() < halfwidth).all()
    # the slides' factor 1 / (1 + p) lies outside the interval, with room to spare
    assert ((train.mean(dim=0) - x / (1 + p)).abs() > 2 * halfwidth).all()
    assert inference_scale(p) == pytest.approx(1 - p)


@settings(deadline=None, max_examples=40)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       p=st.floats(0.0, 0.95, allow_nan=False), seed=st.integers(0, 2**31 - 1))
def test_output_is_zero_or_scaled_input(shape, p, seed):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) + 3.0
    out, mask = dropout_forward(x, p, generator=torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and mask.shape == x.shape and mask.dtype == torch.bool
    assert torch.allclose(out[mask], x[mask] / (1 - p), rtol=1e-12, atol=0)
    assert (out[~mask] == 0).all()


@pytest.mark.parametrize("bad_p", [-0.1, 1.5])
def test_bad_p_is_explained(bad_p):
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got"):
        dropout(torch.ones(3), bad_p)


def test_integer_input_is_explained():
    with pytest.raises(ValueError, match="floating-point"):
        dropout(torch.ones(3, dtype=torch.int64), 0.5)
    with pytest.raises(ValueError, match="mask has shape"):
        dropout_backward(torch.ones(3), torch.ones(4, dtype=torch.bool), 0.5)
