"""Shared test helpers: compare our functions with PyTorch's in float64.

Tolerances: float64 results of the same arithmetic in a different order differ by a few
ulps; ATOL = RTOL = 1e-10 leaves room for sums of a few thousand terms and nothing more.
"""
import numpy as np
import pytest
import torch

ATOL = 1e-10
RTOL = 1e-10

# Parametrize device-aware tests with DEVICES: the CUDA case runs where a GPU is visible
# and is reported as skipped elsewhere.
DEVICES = [
    pytest.param(torch.device("cpu"), id="cpu"),
    pytest.param(torch.device("cuda"), id="cuda",
                 marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")),
]


def assert_matches_torch(ours: torch.Tensor, theirs: torch.Tensor, atol: float = ATOL, rtol: float = RTOL,
                         what: str = "result") -> None:
    """Fail with a readable message unless `ours` equals `theirs` in shape, device and value."""
    assert isinstance(ours, torch.Tensor), f"{what}: expected a tensor, got {type(ours).__name__}"
    assert tuple(ours.shape) == tuple(theirs.shape), (
        f"{what}: shape {tuple(ours.shape)} differs from torch's {tuple(theirs.shape)}")
    assert ours.device == theirs.device, f"{what}: on {ours.device}, torch's result is on {theirs.device}"
    a, b = ours.detach().cpu().double().numpy(), theirs.detach().cpu().double().numpy()
    close = np.isclose(a, b, atol=atol, rtol=rtol)
    if not close.all():
        first = tuple(int(i) for i in np.argwhere(~close)[0])
        raise AssertionError(f"{what}: {int((~close).sum())} of {close.size} entries differ from torch; "
                             f"first at {first}: ours {a[first]!r}, torch {b[first]!r} (atol={atol}, rtol={rtol})")

