"""dlcourse.adversarial: FGSM by its formula (against torch.autograd), what it must leave alone
(x, its .grad, the parameters' .grad, the model's mode), targeted attacks, and the pictures."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse import adversarial as adv
from helpers import DEVICES, assert_matches_torch


def small_model(dropout=0.5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Dropout(dropout), nn.Linear(12, 3)).double()


def data(device="cpu"):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(10, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=g)
    return x.to(device), y.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_is_x_plus_eps_sign_of_the_input_gradient(targeted, device):
    model, (x, y) = small_model().to(device), data(device)
    model.eval()
    x_ = x.clone().requires_grad_(True)
    F.cross_entropy(model(x_), y).backward()
    sign = -1 if targeted else 1
    expected = (x + sign * 0.1 * x_.grad.sign()).clamp(0, 1)
    model.train()
    assert_matches_torch(adv.fgsm(model, x, y, 0.1, targeted=targeted), expected, what="fgsm")
    unclamped = adv.fgsm(model, x, y, 0.1, clamp=None, targeted=targeted)
    assert_matches_torch(unclamped, x + sign * 0.1 * x_.grad.sign(), what="no clamp")


def test_fgsm_leaves_inputs_gradients_and_modes_alone():
    model, (x, y) = small_model(), data()
    model.train()
    model[3].eval()  # a mixed state must come back as it was
    before = x.clone()
    x.requires_grad_(True)
    out = adv.fgsm(model, x, y, 0.2)
    assert torch.equal(x.detach(), before) and x.grad is None and x.requires_grad
    assert not out.requires_grad and out.grad_fn is None
    assert all(p.grad is None for p in model.parameters())
    assert model.training and not model[3].training and model[1].training
    assert 0 <= out.min() and out.max() <= 1


def test_fgsm_runs_the_model_in_eval_mode():
    model, (x, y) = small_model(dropout=0.9), data()
    model.train()
    a, b = adv.fgsm(model, x, y, 0.1), adv.fgsm(model, x, y, 0.1)
    assert torch.equal(a, b)  # dropout off: deterministic


def test_fgsm_raises_the_loss_and_targeted_lowers_the_targets():
    model, (x, y) = small_model(), data()
    model.eval()
    loss = lambda inputs, labels: F.cross_entropy(model(inputs), labels).item()  # noqa: E731
    assert loss(adv.fgsm(model, x, y, 0.05, clamp=None), y) > loss(x, y)
    target = (y + 1) % 3
    assert loss(adv.fgsm(model, x, target, 0.05, clamp=None, targeted=True), target) < loss(x, target)
    assert torch.equal(adv.fgsm(model, x, y, 0.0), x)


def test_fgsm_checks_its_arguments():
    model, (x, y) = small_model(), data()
    with pytest.raises(ValueError, match="eps must be >= 0"):
        adv.fgsm(model, x, y, -0.1)
    with pytest.raises(TypeError, match="torch.long"):
        adv.fgsm(model, x, y.float(), 0.1)
    with pytest.raises(ValueError, match="one class per input"):
        adv.fgsm(model, x, y[:3], 0.1)
    with pytest.raises(TypeError, match="floating-point"):
        adv.fgsm(model, (x * 10).long(), y, 0.1)


def test_accuracy_under_attack():
    model, (x, y) = small_model(), data()
    accs = adv.accuracy_under_attack(model, x, y, [0.0, 0.1, 0.5])
    with torch.no_grad():
        clean = (model.eval()(x).argmax(1) == y).double().mean().item()
    assert accs[0] == clean and accs[2] <= accs[0] and len(accs) == 3


def test_the_attacks_work_inside_no_grad():
    """Evaluation code often runs under torch.no_grad(); the attacks take their gradient anyway
    (torch.enable_grad() inside) and leave gradient mode off for the caller."""
    model, (x, y) = small_model(), data()
    expected = adv.fgsm(model, x, y, 0.1)
    expected_accs = adv.accuracy_under_attack(model, x, y, [0.0, 0.1, 0.5])
    start = torch.full((1, 4, 4), 0.5, dtype=torch.float64)
    expected_proto = adv.class_prototype(model, 2, (1, 4, 4), steps=3, start=start)
    expected_dream = adv.daydream(model, x[0], layer=model[2], steps=2)
    with torch.no_grad():
        assert torch.equal(adv.fgsm(model, x, y, 0.1), expected)
        assert torch.equal(adv.fgsm(model, x, y, 0.1, targeted=True), adv.fgsm(model, x, y, 0.1, targeted=True))
        assert adv.accuracy_under_attack(model, x, y, [0.0, 0.1, 0.5]) == expected_accs
        assert torch.equal(adv.class_prototype(model, 2, (1, 4, 4), steps=3, start=start), expected_proto)
        assert all(torch.equal(a, b) for a, b in zip(adv.daydream(model, x[0], layer=model[2], steps=2), expected_dream))
        assert not torch.is_grad_enabled()


def test_class_prototype_raises_its_logit_and_stays_in_range():
    model = small_model(0.0)
    model.eval()
    start = torch.full((1, 4, 4), 0.5, dtype=torch.float64)
    proto = adv.class_prototype(model, 2, (1, 4, 4), steps=30, lr=0.05, start=start)
    with torch.no_grad():
        assert model(proto[None])[0, 2] > model(start[None])[0, 2]
    assert proto.min() >= 0 and proto.max() <= 1 and all(p.grad is None for p in model.parameters())


def test_daydream_amplifies_the_layer_it_watches():
    model = small_model(0.0)
    x = data()[0][0]
    pictures = adv.daydream(model, x, layer=model[2], steps=5, lr=0.05)
    assert len(pictures) == 6 and torch.equal(pictures[0], x)
    with torch.no_grad():
        act = lambda img: (model[:3](img[None]) ** 2).mean().item()  # noqa: E731
        assert act(pictures[-1]) > act(pictures[0])
    assert not model[2]._forward_hooks  # the hook is removed


def test_digits_cnn_shapes():
    assert adv.digits_cnn()(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
