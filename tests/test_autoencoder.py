"""dlcourse.autoencoder against scikit-learn and SciPy (float64): AUC, ROC, PCA, principal angles;
and what the autoencoders must do (a linear one finds the PCA subspace, denoising, stacking)."""
import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from dlcourse import autoencoder as ae
from helpers import DEVICES


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=2, max_size=40), st.integers(0, 2**31 - 1))
def test_roc_auc_matches_sklearn_with_ties(score_levels, seed):
    labels = np.random.default_rng(seed).integers(0, 2, len(score_levels))
    labels[0], labels[1] = 0, 1  # both classes present
    scores = np.array(score_levels, dtype=float) / 3  # few levels: many ties
    assert ae.roc_auc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_roc_curve_matches_sklearn():
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 60), rng.integers(0, 8, 60).astype(float)
    fpr, tpr = ae.roc_curve(torch.tensor(scores), torch.tensor(labels))
    sk_fpr, sk_tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr.numpy(), sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr.numpy(), sk_tpr, atol=1e-12)
    assert np.trapezoid(tpr.numpy(), fpr.numpy()) == pytest.approx(ae.roc_auc(scores, labels), abs=1e-12)


def test_roc_auc_errors():
    with pytest.raises(ValueError, match="one outlier"):
        ae.roc_auc([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        ae.roc_auc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="0 .normal. or 1"):
        ae.roc_auc([0.1, 0.2], [0, 2])


def test_pca_components_match_sklearn_up_to_sign():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) @ torch.diag(
        torch.tensor([5.0, 4, 3, 2, 1, 0.5], dtype=torch.float64))
    ours = ae.pca_components(x, 3).numpy()
    theirs = PCA(3).fit(x.numpy()).components_.T
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-10)
    np.testing.assert_allclose(np.abs((ours * theirs).sum(axis=0)), 1.0, atol=1e-10)


@pytest.mark.parametrize("k,m", [(1, 1), (3, 3), (2, 4)])
def test_principal_angles_match_scipy(k, m):
    g = torch.Generator().manual_seed(k * 10 + m)
    a, b = (torch.randn(7, n, generator=g, dtype=torch.float64) for n in (k, m))
    np.testing.assert_allclose(ae.principal_angles(a, b).numpy(), np.sort(scipy.linalg.subspace_angles(a.numpy(), b.numpy())),
                               atol=1e-7)
    # the same subspace in another basis: all angles zero
    mix = torch.randn(k, k, generator=g, dtype=torch.float64) + 3 * torch.eye(k, dtype=torch.float64)
    assert ae.principal_angles(a, a @ mix).max() < 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_linear_autoencoder_learns_the_pca_subspace(device, one_thread):
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([3.0, 2.0, 1.5, 0.3, 0.2, 0.1], dtype=torch.float64)
    x = (torch.randn(400, 6, generator=g, dtype=torch.float64) * scales) @ torch.linalg.qr(
        torch.randn(6, 6, generator=g, dtype=torch.float64))[0]
    x = x.to(device)
    torch.manual_seed(0)
    model = ae.Autoencoder(6, 3, linear=True).double().to(device)
    ae.train_autoencoder(model, x, epochs=800, lr=2e-2, batch_size=400, generator=g, progress=False)
    angles = ae.principal_angles(model.decoder[0].weight.detach(), ae.pca_components(x, 3))
    assert angles.max().item() < 0.01, angles
    assert not model.training


def test_reconstruction_errors_are_per_row_and_keep_the_mode():
    model = ae.Autoencoder(4, 2)
    model.train()
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(0))
    scores = ae.reconstruction_errors(model, x)
    with torch.no_grad():
        expected = ((model(x) - x) ** 2).mean(dim=1)
    assert scores.shape == (5,) and torch.allclose(scores, expected) and not scores.requires_grad
    assert model.training
    with pytest.raises(TypeError, match="torch.Tensor"):
        ae.reconstruction_errors(model, x.numpy())


def test_denoising_autoencoder_removes_noise_better_than_the_noise_itself(one_thread):
    g = torch.Generator().manual_seed(1)
    basis = torch.rand(3, 16, generator=g)
    clean = (torch.rand(300, 3, generator=g) @ basis) / 3
    model = ae.Autoencoder(16, 3, hidden=(16,))
    torch.manual_seed(0)
    ae.train_autoencoder(model, clean, epochs=150, lr=1e-2, noise_std=0.1, generator=g, progress=False)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
    with torch.no_grad():
        assert ((model(noisy) - clean) ** 2).mean() < 0.5 * ((noisy - clean) ** 2).mean()


def test_stacked_autoencoder_is_trained_layer_by_layer(one_thread):
    x = torch.rand(64, 8, generator=torch.Generator().manual_seed(2))
    net = ae.train_stacked([8, 6, 4], x, epochs=5, generator=torch.Generator().manual_seed(0), progress=False)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 6), (6, 4), (4, 8)]
    assert net(x).shape == x.shape
    with pytest.raises(ValueError, match="input width 8"):
        ae.train_stacked([5, 3], x)
