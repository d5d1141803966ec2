"""dlcourse.gan against torch.nn.functional.binary_cross_entropy_with_logits (float64,
ATOL = RTOL = 1e-10, see helpers.py), at extreme logits, and on the input's device."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse import gan
from helpers import DEVICES, assert_matches_torch


def randn(*shape, device="cpu", seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(device)


def bce(logits, target):
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


# ------------------------------------------------------------------ against torch
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n, m, scale", [(1, 1, 1.0), (7, 3, 2.0), (64, 64, 5.0), (5, 11, 30.0)])
def test_discriminator_loss_is_bce_real_1_plus_bce_fake_0(device, n, m, scale):
    real, fake = randn(n, device=device, scale=scale), randn(m, device=device, seed=1, scale=scale)
    assert_matches_torch(gan.discriminator_loss(real, fake), bce(real, 1) + bce(fake, 0))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1,), (9,), (4, 5)])
def test_generator_losses_match_torch(device, shape):
    fake = randn(*shape, device=device, scale=4.0)
    assert_matches_torch(gan.generator_loss(fake), bce(fake, 1))                        # -log D(G(z))
    assert_matches_torch(gan.generator_loss(fake, saturating=True), -bce(fake, 0))      # log(1 - D(G(z)))
    d = torch.sigmoid(fake)  # moderate logits: the naive formulas are accurate here
    assert_matches_torch(gan.generator_loss(fake), -torch.log(d).mean(), atol=1e-12, rtol=1e-9)
    assert_matches_torch(gan.generator_loss(fake, saturating=True), torch.log1p(-d).mean(), atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_match_torch(device):
    real = randn(6, device=device, scale=3.0).requires_grad_(True)
    fake = randn(5, device=device, seed=1, scale=3.0).requires_grad_(True)
    real_t, fake_t = real.detach().clone().requires_grad_(True), fake.detach().clone().requires_grad_(True)
    gan.discriminator_loss(real, fake).backward()
    (bce(real_t, 1) + bce(fake_t, 0)).backward()
    assert_matches_torch(real.grad, real_t.grad, what="d/d real_logits")
    assert_matches_torch(fake.grad, fake_t.grad, what="d/d fake_logits")


# ---------------------------------------------------------------- extreme logits
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits_are_finite_with_the_right_limits(device, dtype):
    big = torch.tensor([200.0], dtype=dtype, device=device)
    # D sure a real sample is fake (logit -200): -log sigmoid(-200) = 200 + log(1 + e^-200) -> 200
    assert gan.discriminator_loss(-big, -big).item() == pytest.approx(200.0, rel=1e-6)
    assert gan.discriminator_loss(big, -big).item() == pytest.approx(0.0, abs=1e-30)
    assert gan.discriminator_loss(big, big).item() == pytest.approx(200.0, rel=1e-6)
    assert gan.generator_loss(-big).item() == pytest.approx(200.0, rel=1e-6)
    assert gan.generator_loss(big).item() == pytest.approx(0.0, abs=1e-30)
    assert gan.generator_loss(big, saturating=True).item() == pytest.approx(-200.0, rel=1e-6)
    assert gan.generator_loss(-big, saturating=True).item() == pytest.approx(0.0, abs=1e-30)
    # the naive formulas overflow where ours do not
    assert torch.isinf(-torch.log(torch.sigmoid(-big.float()))).all()
    for loss in (gan.discriminator_loss(-big, big), gan.generator_loss(-big), gan.generator_loss(big, saturating=True)):
        assert torch.isfinite(loss).all() and loss.device == big.device and loss.dtype == dtype


@pytest.mark.parametrize("device", DEVICES)
def test_extreme_logits_match_torch_and_have_finite_gradients(device):
    logits = torch.tensor([-1000.0, -200.0, -40.0, 0.0, 40.0, 200.0, 1000.0], dtype=torch.float64, device=device)
    assert_matches_torch(gan.discriminator_loss(logits, logits), bce(logits, 1) + bce(logits, 0))
    assert_matches_torch(gan.generator_loss(logits), bce(logits, 1))
    assert_matches_torch(gan.generator_loss(logits, saturating=True), -bce(logits, 0))
    x = logits.clone().requires_grad_(True)
    gan.generator_loss(x).backward()
    # d/dl softplus(-l) / n = -(1 - sigmoid(l)) / n: -1/n where D rejects, 0 where D accepts
    assert torch.isfinite(x.grad).all()
    assert x.grad[0].item() == pytest.approx(-1 / 7) and x.grad[-1].item() == pytest.approx(0.0, abs=1e-300)


@settings(deadline=None, max_examples=40)
@given(st.lists(st.floats(-300, 300, allow_nan=False), min_size=1, max_size=12))
def test_losses_are_finite_and_match_torch_for_any_logits(values):
    logits = torch.tensor(values, dtype=torch.float64)
    d_loss, g_loss = gan.discriminator_loss(logits, logits.flip(0)), gan.generator_loss(logits)
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    assert_matches_torch(d_loss, bce(logits, 1) + bce(logits.flip(0), 0))
    assert_matches_torch(g_loss, bce(logits, 1))
    # non-saturating and saturating losses are both decreasing in the logit
    assert g_loss >= 0 and gan.generator_loss(logits, saturating=True) <= 0


def test_saturating_gradient_vanishes_where_the_non_saturating_one_does_not():
    logit = torch.tensor([-math.log(999.0)], dtype=torch.float64, requires_grad=True)  # D(G(z)) = 0.001
    (g_ns,) = torch.autograd.grad(gan.generator_loss(logit), logit)
    (g_sat,) = torch.autograd.grad(gan.generator_loss(logit, saturating=True), logit)
    assert g_ns.item() == pytest.approx(-0.999) and g_sat.item() == pytest.approx(-0.001)


# ------------------------------------------------------ optimal D and divergences
@pytest.mark.parametrize("device", DEVICES)
def test_optimal_discriminator(device):
    p_data = torch.tensor([0.0, 1.0, 2.0, 0.5, 0.0], dtype=torch.float64, device=device)
    p_g = torch.tensor([1.0, 0.0, 2.0, 1.5, 0.0], dtype=torch.float64, device=device)
    expected = torch.tensor([0.0, 1.0, 0.5, 0.25, 0.5], dtype=torch.float64, device=device)
    assert_matches_torch(gan.optimal_discriminator(p_data, p_g), expected)


def test_optimal_discriminator_maximises_the_pointwise_objective():
    # for fixed x the value a log D + b log(1 - D) is maximal at D = a / (a + b)
    a, b = randn(20).abs() + 0.1, randn(20, seed=1).abs() + 0.1
    d_star = gan.optimal_discriminator(a, b)
    grid = torch.linspace(1e-4, 1 - 1e-4, 20001, dtype=torch.float64)
    values = a[:, None] * grid.log() + b[:, None] * (1 - grid).log()
    assert (grid[values.argmax(dim=1)] - d_star).abs().max() < 1e-4


def test_value_at_optimal_discriminator_is_minus_log4_plus_twice_jsd():
    g = torch.Generator().manual_seed(3)
    p, q = torch.rand(12, generator=g, dtype=torch.float64), torch.rand(12, generator=g, dtype=torch.float64)
    p, q = p / p.sum(), q / q.sum()
    d_star = gan.optimal_discriminator(p, q)
    value = (p * d_star.log()).sum() + (q * (1 - d_star).log()).sum()
    assert value.item() == pytest.approx(-math.log(4) + 2 * gan.js_divergence(p, q).item(), rel=1e-12)
    assert gan.js_divergence(p, p).item() == pytest.approx(0.0, abs=1e-15)
    disjoint = gan.js_divergence(torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert disjoint.item() == pytest.approx(math.log(2))


def test_gan_value_is_minus_the_discriminator_loss():
    real, fake = randn(5), randn(6, seed=1)
    assert_matches_torch(gan.gan_value(real, fake),
                         torch.log(torch.sigmoid(real)).mean() + torch.log(1 - torch.sigmoid(fake)).mean(), atol=1e-12)


@pytest.mark.parametrize("call, error, message", [
    (lambda: gan.discriminator_loss([1.0], torch.zeros(1)), TypeError, "real_logits must be a torch.Tensor, got list"),
    (lambda: gan.generator_loss(torch.tensor([1, 2])), TypeError, "floating-point"),
    (lambda: gan.generator_loss(torch.zeros(0)), ValueError, "must not be empty"),
    (lambda: gan.generator_loss(torch.zeros(2), saturating="yes"), TypeError, "saturating must be True or False"),
    (lambda: gan.optimal_discriminator(torch.tensor([-1.0]), torch.tensor([1.0])), ValueError, ">= 0"),
    (lambda: gan.optimal_discriminator(torch.ones(2), torch.ones(3)), ValueError, "same shape"),
    (lambda: gan.js_divergence(torch.tensor([0.5, 0.6]), torch.tensor([0.5, 0.5])), ValueError, "sum to 1"),
    (lambda: gan.MLPDiscriminator(2, pack=3)(torch.zeros(4, 2)), ValueError, "multiple of pack=3"),
    (lambda: gan.MLPGenerator(3, 2)(torch.zeros(4, 2)), ValueError, r"z must have shape \(N, 3\)"),
])
def test_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


# --------------------------------------------------------------- networks, training
def test_networks_shapes_and_packing():
    g, d = gan.MLPGenerator(4, 3, hidden=(8,), out_activation="sigmoid"), gan.MLPDiscriminator(3, hidden=(8,), pack=2)
    x = g(torch.randn(6, 4))
    assert x.shape == (6, 3) and ((x > 0) & (x < 1)).all()
    assert d(x).shape == (3,)
    # a pack of two samples is one input of 6 numbers: the same as the first layer on a concatenation
    first = d.net[0]
    assert first.in_features == 6
    assert torch.allclose(d(x), d.net(torch.cat([x[0::2], x[1::2]], dim=1)).squeeze(-1))


def tiny_pair(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    g, d = gan.MLPGenerator(2, 1, hidden=(5,)).to(dtype), gan.MLPDiscriminator(1, hidden=(5,)).to(dtype)
    return g, d


def test_train_step_detaches_fakes_in_d_step_and_updates_only_g_in_g_step():
    g, d = tiny_pair()
    real, z = randn(8, 1, seed=2), randn(8, 2, seed=3)
    opt_g, opt_d = torch.optim.SGD(g.parameters(), lr=0.1), torch.optim.SGD(d.parameters(), lr=0.1)
    g0 = [p.detach().clone() for p in g.parameters()]
    d0 = [p.detach().clone() for p in d.parameters()]
    seen = {}
    original_step = opt_d.step

    def spy_step(*args, **kwargs):
        seen["g_grads_in_d_step"] = [p.grad for p in g.parameters()]
        return original_step(*args, **kwargs)

    opt_d.step = spy_step
    d_loss, g_loss = gan.train_step(g, d, real, z, opt_g, opt_d)
    assert all(grad is None for grad in seen["g_grads_in_d_step"]), "D's step sent gradients into G"
    # the same step by hand with autograd: D first, then G against the updated D
    gr, dr = tiny_pair()
    d_ref = gan.discriminator_loss(dr(real), dr(gr(z).detach()))
    grads = torch.autograd.grad(d_ref, list(dr.parameters()))
    with torch.no_grad():
        for p, gp in zip(dr.parameters(), grads):
            p -= 0.1 * gp
    g_ref = gan.generator_loss(dr(gr(z)))
    grads = torch.autograd.grad(g_ref, list(gr.parameters()))
    with torch.no_grad():
        for p, gp in zip(gr.parameters(), grads):
            p -= 0.1 * gp
    assert d_loss == pytest.approx(d_ref.item()) and g_loss == pytest.approx(g_ref.item())
    for ours, ref in zip(list(g.parameters()) + list(d.parameters()), list(gr.parameters()) + list(dr.parameters())):
        assert_matches_torch(ours.detach(), ref.detach(), atol=1e-12)
    assert not all(torch.equal(a, b.detach()) for a, b in zip(g0, g.parameters()))
    assert not all(torch.equal(a, b.detach()) for a, b in zip(d0, d.parameters()))


def test_train_gan_is_reproducible_and_records_snapshots():
    def run():
        g, d = tiny_pair(dtype=torch.float32)
        data = torch.randn(100, 1, generator=torch.Generator().manual_seed(0)) + 3.0
        grid = torch.linspace(-1, 5, 7).unsqueeze(1)
        return gan.train_gan(g, d, data, steps=30, batch_size=16, lr=1e-2, generator=torch.Generator().manual_seed(1),
                             snapshot_every=10, fixed_z=torch.randn(9, 2, generator=torch.Generator().manual_seed(2)),
                             grid=grid, progress=False)
    a, b = run(), run()
    assert a.d_loss == b.d_loss and len(a.d_loss) == 30 and len(a.g_loss) == 30
    assert [s.step for s in a.snapshots] == [0, 10, 20, 30]
    assert a.snapshots[-1].samples.shape == (9, 1) and a.snapshots[-1].d_on_grid.shape == (7,)
    assert torch.equal(a.snapshots[-1].samples, b.snapshots[-1].samples)
    assert not torch.equal(a.snapshots[0].samples, a.snapshots[-1].samples)
    assert a.snapshots[-1].d_loss == a.d_loss[-1]


def test_train_gan_moves_a_1d_generator_towards_the_data():
    torch.manual_seed(0)
    g, d = gan.MLPGenerator(1, 1, hidden=()), gan.MLPDiscriminator(1, hidden=(16,))
    data = lambda n, gen: 3.0 + 0.5 * torch.randn(n, 1, generator=gen)  # noqa: E731
    gan.train_gan(g, d, data, steps=800, batch_size=64, lr=1e-2, generator=torch.Generator().manual_seed(0),
                  progress=False)
    with torch.no_grad():
        x = g(torch.randn(4000, 1, generator=torch.Generator().manual_seed(5)))
    assert abs(x.mean().item() - 3.0) < 0.3


@pytest.mark.parametrize("device", DEVICES)
def test_train_gan_runs_on_the_networks_device(device):
    torch.manual_seed(0)
    g, d = gan.MLPGenerator(2, 2, hidden=(4,)).to(device), gan.MLPDiscriminator(2, hidden=(4,)).to(device)
    history = gan.train_gan(g, d, gan.sample_ring, steps=3, batch_size=8, generator=torch.Generator().manual_seed(0),
                            snapshot_every=1, grid=torch.zeros(5, 2), progress=False)
    assert history.snapshots[-1].samples.device.type == "cpu" and len(history.snapshots) == 4


# --------------------------------------------------------------- mixture and modes
def test_ring_and_mode_coverage():
    centers = gan.ring_centers(8, radius=2.0)
    assert torch.allclose(centers.norm(dim=1), torch.full((8,), 2.0))
    x = gan.sample_ring(8000, torch.Generator().manual_seed(0), std=0.05)
    cov = gan.mode_coverage(x, centers, std=0.05)
    # every sample lies within 3 std of its own centre with probability 1 - exp(-9/2) = 0.989 (2-D)
    assert cov.covered == 8 and cov.good == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    assert cov.fractions.sum().item() == pytest.approx(cov.good)
    collapsed = centers[3] + 0.05 * torch.randn(1000, 2, generator=torch.Generator().manual_seed(1))
    cov = gan.mode_coverage(collapsed, centers, std=0.05)
    assert cov.covered == 1 and cov.counts.argmax().item() == 3
    between = torch.zeros(50, 2)  # the centre of the ring is far from every mode
    assert gan.mode_coverage(between, centers, std=0.05).good == 0.0
    assert gan.mode_coverage(between, centers, std=0.05).nearest.sum().item() == pytest.approx(1.0)


def test_training_g_much_more_than_d_is_rejected_when_steps_are_not_positive():
    g, d = tiny_pair(dtype=torch.float32)
    with pytest.raises(ValueError, match="d_steps and g_steps must be at least 1"):
        gan.train_gan(g, d, torch.zeros(4, 1), steps=1, g_steps=0, progress=False)
