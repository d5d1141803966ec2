"""dlcourse.optim against torch.optim: the same gradients must give the same parameters
after every one of many steps (float64, tolerances from tests/helpers.py)."""
import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse import optim
from helpers import DEVICES, assert_matches_torch

CONFIGS = [
    ("sgd", "SGD", dict(lr=0.1)),
    ("sgd", "SGD", dict(lr=0.05, momentum=0.9)),
    ("sgd", "SGD", dict(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=0.01)),
    ("sgd", "SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("adagrad", "Adagrad", dict(lr=0.1)),
    ("adagrad", "Adagrad", dict(lr=0.3, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5, eps=1e-6)),
    ("rmsprop", "RMSprop", dict(lr=0.01)),
    ("rmsprop", "RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01)),
    ("adadelta", "Adadelta", dict()),
    ("adadelta", "Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.1)),
    ("adam", "Adam", dict(lr=0.01)),
    ("adam", "Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1, amsgrad=True)),
]


def torch_trajectory(torch_name, x0, grads, **hyper):
    """Parameters after each step of torch.optim.<torch_name> fed the given gradients."""
    x = x0.clone().requires_grad_(True)
    opt = getattr(torch.optim, torch_name)([x], **hyper)
    out = []
    for g in grads:
        x.grad = g.clone()
        opt.step()
        out.append(x.detach().clone())
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,torch_name,hyper", CONFIGS, ids=[f"{c[0]}-{i}" for i, c in enumerate(CONFIGS)])
def test_matches_torch_step_by_step(device, name, torch_name, hyper):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, dtype=torch.float64, generator=gen).to(device)
    # gradients of a noisy quadratic pull towards 0; a few entries stay 0 (rare features)
    grads = [(torch.randn(3, 4, dtype=torch.float64, generator=gen) * (torch.rand(3, 4, generator=gen) > 0.2))
             .to(device) for _ in range(200)]
    theirs = torch_trajectory(torch_name, x0, grads, **hyper)
    x, state = x0, {}
    for t, g in enumerate(grads):
        x, state = optim.STEPS[name](x, g, state, **hyper)
        assert_matches_torch(x, theirs[t], what=f"{name} {hyper} after step {t + 1}")


@settings(deadline=None, max_examples=25)
@given(lr=st.floats(1e-3, 0.5, allow_nan=False), beta1=st.floats(0.0, 0.95, allow_nan=False),
       beta2=st.floats(0.5, 0.999, allow_nan=False), eps=st.floats(1e-8, 1e-1, allow_nan=False),
       momentum=st.floats(0.0, 0.95, allow_nan=False))
def test_adam_and_momentum_for_any_hyperparameters(lr, beta1, beta2, eps, momentum):
    x0 = torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64)
    grads = [torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64) * (t % 3 - 1) + 0.1 for t in range(30)]
    for name, torch_name, hyper in [("adam", "Adam", dict(lr=lr, betas=(beta1, beta2), eps=eps)),
                                    ("sgd", "SGD", dict(lr=lr, momentum=momentum))]:
        theirs = torch_trajectory(torch_name, x0, grads, **hyper)[-1]
        x, state = x0, {}
        for g in grads:
            x, state = optim.STEPS[name](x, g, state, **hyper)
        assert_matches_torch(x, theirs, atol=1e-9, rtol=1e-9, what=f"{name} {hyper}")


def test_step_does_not_change_its_inputs():
    w, g = torch.ones(3, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64)
    _, state = optim.adam_step(w, g, {}, lr=0.1)
    saved = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in state.items()}
    optim.adam_step(w, g, state, lr=0.1)
    assert torch.equal(w, torch.ones(3, dtype=torch.float64))
    assert all(torch.equal(state[k], saved[k]) if torch.is_tensor(saved[k]) else state[k] == saved[k] for k in saved)


@pytest.mark.parametrize("name", sorted(optim.STEPS))
def test_run_matches_torch_run_on_the_quadratic(name):
    x0 = torch.tensor([-4.0, 2.0], dtype=torch.float64)
    ours = optim.run(name, optim.quadratic_2d_grad, x0, 60, lr=0.05)
    theirs = optim.torch_run(name, optim.quadratic_2d, x0, 60, lr=0.05)
    assert ours.shape == (61, 2)
    assert_matches_torch(ours, theirs, what=f"{name} trajectory")


def test_gradient_descent_threshold_on_the_quadratic():
    # f = (w1^2 + 5 w2^2) / 2: w2 is multiplied by (1 - 5 lr) per step, so GD converges iff lr < 2/5.
    x0 = torch.tensor([-4.0, 2.0], dtype=torch.float64)
    converged = optim.run("sgd", optim.quadratic_2d_grad, x0, 200, lr=0.38)[-1]
    diverged = optim.run("sgd", optim.quadratic_2d_grad, x0, 200, lr=0.41)[-1]
    assert converged.abs().max() < 1e-6 and diverged[1].abs() > 1e3


def test_lecture_functions_gradients_match_autograd():
    x = torch.tensor([0.7, -1.3], dtype=torch.float64, requires_grad=True)
    optim.quadratic_2d(x).backward()
    assert_matches_torch(optim.quadratic_2d_grad(x.detach()), x.grad, what="quadratic_2d_grad")
    y = torch.tensor([-0.4, 0.2, 1.9], dtype=torch.float64, requires_grad=True)
    optim.bumpy_1d(y).sum().backward()
    assert_matches_torch(optim.bumpy_1d_grad(y.detach()), y.grad, what="bumpy_1d_grad")


# (name, hyper-parameters, does torch.optim's constructor accept them?) - the third column was
# found by calling torch's constructors, and test_hyperparameter_range_as_in_torch checks it again
HYPER_RANGE = [
    ("sgd", dict(lr=0.0), True),
    ("sgd", dict(lr=-0.1), False),
    ("sgd", dict(lr=0.1, momentum=1.0), True),
    ("sgd", dict(lr=0.1, momentum=1.5), True),
    ("sgd", dict(lr=0.1, momentum=-0.1), False),
    ("sgd", dict(lr=0.1, momentum=0.9, dampening=-1.0), True),
    ("sgd", dict(lr=0.1, momentum=0.9, dampening=2.0), True),
    ("sgd", dict(lr=0.1, weight_decay=-0.01), False),
    ("sgd", dict(lr=0.1, nesterov=True), False),
    ("sgd", dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), False),
    ("adagrad", dict(lr=-0.1), False),
    ("adagrad", dict(lr_decay=5.0), True),
    ("adagrad", dict(lr_decay=-0.1), False),
    ("adagrad", dict(eps=0.0), True),
    ("adagrad", dict(eps=-1e-10), False),
    ("adagrad", dict(weight_decay=-0.1), False),
    ("adagrad", dict(initial_accumulator_value=-0.1), False),
    ("rmsprop", dict(alpha=1.0), True),
    ("rmsprop", dict(alpha=1.5), True),
    ("rmsprop", dict(alpha=-0.1), False),
    ("rmsprop", dict(momentum=1.0), True),
    ("rmsprop", dict(momentum=-0.1), False),
    ("rmsprop", dict(eps=0.0), True),
    ("rmsprop", dict(eps=-1e-8), False),
    ("rmsprop", dict(weight_decay=-1.0), False),
    ("adadelta", dict(rho=1.0), True),
    ("adadelta", dict(rho=0.0), True),
    ("adadelta", dict(rho=1.1), False),
    ("adadelta", dict(rho=-0.1), False),
    ("adadelta", dict(eps=0.0), True),
    ("adadelta", dict(eps=-1e-6), False),
    ("adadelta", dict(lr=-1.0), False),
    ("adadelta", dict(weight_decay=-1.0), False),
    ("adam", dict(betas=(0.0, 0.0)), True),
    ("adam", dict(betas=(1.0, 0.999)), False),
    ("adam", dict(betas=(0.9, 1.0)), False),
    ("adam", dict(betas=(-0.1, 0.999)), False),
    ("adam", dict(betas=(0.9, -0.1)), False),
    ("adam", dict(eps=0.0), True),
    ("adam", dict(eps=-1e-8), False),
    ("adam", dict(lr=-1e-3), False),
    ("adam", dict(weight_decay=-0.1), False),
]


@pytest.mark.parametrize("name, hyper, accepted", HYPER_RANGE,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in h.items())}" for n, h, _ in HYPER_RANGE])
def test_hyperparameter_range_as_in_torch(name, hyper, accepted):
    x0 = torch.tensor([1.5, -2.0, 0.0], dtype=torch.float64)
    # a zero gradient entry too: with eps = 0 both sides divide 0 by 0 there
    grads = [torch.tensor([0.3, -1.0, 0.0], dtype=torch.float64) * (t % 3 - 1) + 0.1 * t for t in range(6)]
    if not accepted:
        with pytest.raises(ValueError):
            getattr(torch.optim, optim.TORCH_NAMES[name])([x0.clone().requires_grad_(True)], **hyper)
        with pytest.raises(ValueError, match=r"must be (>= 0|in \[0, 1[\])]), got|nesterov"):
            optim.STEPS[name](x0, grads[0], {}, **hyper)
        return
    theirs = torch_trajectory(optim.TORCH_NAMES[name], x0, grads, **hyper)
    x, state = x0, {}
    for t, g in enumerate(grads):
        x, state = optim.STEPS[name](x, g, state, **hyper)
        # momentum >= 1 or alpha > 1 may blow up or give NaN: it must do so exactly where torch's does
        assert torch.equal(x.isnan(), theirs[t].isnan()), f"{name} {hyper}: NaN differs at step {t + 1}"
        assert_matches_torch(x.nan_to_num(), theirs[t].nan_to_num(), what=f"{name} {hyper} after step {t + 1}")


def test_bad_arguments_are_explained():
    w = torch.zeros(2)
    with pytest.raises(ValueError, match="lr must be >= 0, got -0.1"):
        optim.sgd_step(w, w, {}, lr=-0.1)
    with pytest.raises(ValueError, match="momentum must be >= 0, got -0.5"):
        optim.sgd_step(w, w, {}, lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match=r"beta1 must be in \[0, 1\), got 1.0"):
        optim.adam_step(w, w, {}, betas=(1.0, 0.999))
    with pytest.raises(ValueError, match=r"rho must be in \[0, 1\], got 1.5"):
        optim.adadelta_step(w, w, {}, rho=1.5)
    with pytest.raises(ValueError, match="lr must be >= 0, got nan"):
        optim.adam_step(w, w, {}, lr=float("nan"))
    with pytest.raises(ValueError, match="grad has shape"):
        optim.adam_step(w, torch.zeros(3), {})
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.torch_run("lbfgs", optim.quadratic_2d, w, 3)


def test_explorer_follows_its_controls():
    from dlcourse.widgets.optim import OptimizerExplorer, hyperparameters

    explorer = OptimizerExplorer(n_steps=10)
    explorer.lr.value = 0.1
    explorer.momentum.value = 0.5
    expected = optim.run("sgd", optim.quadratic_2d_grad, explorer.x0, 10, lr=0.1, momentum=0.5)
    assert_matches_torch(explorer.path, expected, what="explorer path")
    explorer.name.value = "adagrad"
    assert explorer.momentum.disabled
    assert_matches_torch(explorer.path, optim.run("adagrad", optim.quadratic_2d_grad, explorer.x0, 10, lr=0.1),
                         what="explorer path")
    assert hyperparameters("adam", 0.1, 0.8) == {"lr": 0.1, "betas": (0.8, 0.999)}
