"""dlcourse.style: the Gram matrix against its formula and torch, and what it forgets (positions)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse import style
from helpers import DEVICES, assert_matches_torch


@pytest.mark.parametrize("device", DEVICES)
def test_gram_matrix_matches_the_formula_and_einsum(device):
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 4, 5, 3, generator=g, dtype=torch.float64).to(device)
    G = style.gram_matrix(f)
    assert_matches_torch(G, torch.einsum("ncij,ndij->ncd", f, f) / 15, what="batched")
    assert_matches_torch(style.gram_matrix(f[1]), G[1], what="unbatched")
    assert_matches_torch(style.gram_matrix_loops(f[0].cpu()), G[0].cpu(), what="loops")


@settings(deadline=None, max_examples=25)
@given(C=st.integers(1, 4), H=st.integers(1, 5), W=st.integers(1, 5), seed=st.integers(0, 1000))
def test_gram_matrix_is_symmetric_psd_and_blind_to_positions(C, H, W, seed):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(C, H, W, generator=g, dtype=torch.float64)
    G = style.gram_matrix(f)
    assert torch.allclose(G, G.T) and torch.linalg.eigvalsh(G).min() > -1e-10
    perm = torch.randperm(H * W, generator=g)
    shuffled = f.flatten(1)[:, perm].view(C, H, W)      # the same values at other positions
    assert torch.allclose(style.gram_matrix(shuffled), G, atol=1e-12)


def test_random_features_see_a_circular_shift_as_the_same_texture():
    g = torch.Generator().manual_seed(1)
    filters = style.random_filters((1, 4, 6), generator=g)
    image = torch.rand(1, 1, 12, 12, generator=g, dtype=torch.float64)
    shifted = torch.roll(image, (3, 5), (2, 3))
    a = style.random_features(image, [w.double() for w in filters])
    b = style.random_features(shifted, [w.double() for w in filters])
    assert style.style_loss(a, b).item() < 1e-20
    assert style.style_loss(a, style.random_features(torch.rand_like(image), [w.double() for w in filters])).item() > 1e-6


def test_synthesize_texture_lowers_the_style_loss():
    g = torch.Generator().manual_seed(2)
    i, j = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    target = (torch.sin((i + j) * torch.pi / 4) > 0).float()
    image, losses = style.synthesize_texture(target, style.random_filters((1, 8), generator=g), steps=60, generator=g)
    assert image.shape == target.shape and losses[-1] < 0.1 * losses[0]
    with pytest.raises(ValueError):
        style.gram_matrix(torch.ones(3))
