"""dlcourse.neurons: the credit table, perceptrons, m-of-n rules, XOR, activations and online SGD."""
from math import comb

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse.neurons import (ACTIVATIONS, credit_rating, m_of_n_rule_count, online_sgd, perceptron,
                              perceptron_search, sigmoid, smallest_rule_set, two_layer_xor, xor_data)
from helpers import DEVICES, assert_matches_torch


def test_credit_table_and_deck_perceptron():
    data = credit_rating()
    assert data.x.shape == (6, 3) and data.y.tolist() == [1, 0, 1, 0, 1, 0]
    assert data.names[0] == "Peter Smith" and data.x[0].tolist() == [1, 1, 0]
    assert perceptron(data.x, [0.3, 0.3, 0.3], 0.4).tolist() == data.y.tolist()
    assert ((data.x.sum(1) > 1.5).double() == data.y).all()  # the deck's "sum > 1.5" form


def test_perceptron_rejects_wrong_width():
    with pytest.raises(ValueError, match="3 features but w has 2 weights"):
        perceptron(torch.zeros(2, 3), [1.0, 1.0], 0.0)


@pytest.mark.parametrize("m,n", [(1, 3), (2, 3), (2, 4), (3, 5), (2, 5)])
def test_exhaustive_search_needs_n_choose_m_rules(m, n):
    rules = smallest_rule_set(m, n)
    assert len(rules) == comb(n, m) == m_of_n_rule_count(m, n)
    assert all(sorted(r.values()) == [1] * m for r in rules)  # each rule: m "yes" conditions


@pytest.mark.parametrize("m,n", [(1, 3), (2, 3), (2, 4), (3, 5), (2, 5), (5, 6)])
def test_rules_that_predict_no_need_n_choose_m_minus_1(m, n):
    # "fewer than m yes" = "at least n - m + 1 no": the yes-rules of the swapped attributes
    rules = smallest_rule_set(n - m + 1, n)
    assert len(rules) == comb(n, m - 1)


def test_deck_claim_for_5_of_10_is_wrong():
    assert m_of_n_rule_count(5, 10) == 252  # the deck says "more than 15,000"
    with pytest.raises(ValueError, match="0 < m <= n"):
        m_of_n_rule_count(4, 3)
    with pytest.raises(ValueError, match="n in 1..6"):
        smallest_rule_set(5, 10)


def test_xor_needs_two_layers():
    x, y = xor_data()
    grid = torch.linspace(-2, 2, 17)
    best, perfect = perceptron_search(x, y, grid)
    assert (best, perfect) == (0.75, 0)
    _, perfect_and = perceptron_search(x, x[:, 0] * x[:, 1], grid)  # AND is separable
    assert perfect_and > 0
    assert two_layer_xor(x).tolist() == y.tolist()


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("device", DEVICES)
def test_activation_derivatives_match_autograd(name, device):
    f, df = ACTIVATIONS[name]
    z = torch.linspace(-4, 4, 41, dtype=torch.float64, device=device)
    z = z[z != 0].requires_grad_()
    value = f(z)
    value.sum().backward()
    assert_matches_torch(df(z.detach()), z.grad, what=f"{name}'")
    assert_matches_torch(value.detach(), getattr(torch, name)(z.detach()), what=name)


def test_step_has_zero_gradient_everywhere():
    f, df = ACTIVATIONS["step"]
    z = torch.tensor([-2.0, -0.1, 0.1, 3.0], dtype=torch.float64)
    assert f(z).tolist() == [0, 0, 1, 1] and df(z).tolist() == [0, 0, 0, 0]


@settings(deadline=None, max_examples=50)
@given(st.floats(-30, 30, allow_nan=False))
def test_sigmoid_derivative_is_at_most_a_quarter(z):
    _, df = ACTIVATIONS["sigmoid"]
    assert 0 <= df(torch.tensor(z)).item() <= 0.25
    assert 0 <= sigmoid(torch.tensor(z)).item() <= 1


def test_online_sgd_learns_credit_table_reproducibly():
    data = credit_rating()

    def run():
        w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        losses = online_sgd(lambda x, p: torch.sigmoid(x @ p[0] + p[1]), [w, b], data.x, data.y,
                            lambda pred, y: (pred - y) ** 2, lr=1.0, steps=600,
                            generator=torch.Generator().manual_seed(0))
        return w.detach(), b.detach(), losses

    w, b, losses = run()
    assert perceptron(data.x, w, -b.item()).tolist() == data.y.tolist()
    assert sum(losses[-60:]) < sum(losses[:60])
    w2, b2, _ = run()
    assert torch.equal(w, w2) and torch.equal(b, b2)


def test_online_sgd_validates():
    with pytest.raises(ValueError, match="requires_grad"):
        online_sgd(lambda x, p: x, [torch.zeros(1)], [1.0], [1.0], lambda a, b: a, steps=1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        online_sgd(lambda x, p: x, [], [1.0], [1.0], lambda a, b: a, lr=0)


# ------------------------------------------------------------- perceptron learning rule
from dlcourse.neurons import perceptron_learning_rule  # noqa: E402


def test_perceptron_rule_first_pass_by_hand():
    # traced by hand with lr = 1 from w = 0, t = 0: Peter +, Julia -, Kim +, John - (4 updates)
    fit = perceptron_learning_rule(credit_rating().x, credit_rating().y, max_epochs=1)
    assert fit.w.tolist() == [0.0, 1.0, 1.0] and fit.t == 0.0 and (fit.epochs, fit.converged) == (1, False)


@pytest.mark.parametrize("lr", [1.0, 0.5, 0.25])
def test_perceptron_rule_separates_the_credit_table(lr):
    data = credit_rating()
    fit = perceptron_learning_rule(data.x, data.y, lr=lr)
    assert fit.converged and perceptron(data.x, fit.w, fit.t).tolist() == data.y.tolist()
    # starting from 0, the learning rate only scales w and t
    unit = perceptron_learning_rule(data.x, data.y, lr=1.0)
    assert torch.equal(fit.w, lr * unit.w) and fit.t == lr * unit.t and fit.epochs == unit.epochs
    # the learned perceptron is "at least two of three" on all 8 possible applicants
    every = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * 3)
    assert perceptron(every, fit.w, fit.t).tolist() == (every.sum(1) >= 2).double().tolist()


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 5))
def test_perceptron_rule_separates_separable_data(seed, d):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-2, 3, (12, d), generator=g).double()
    w_true = torch.randint(-3, 4, (d,), generator=g).double()
    y = (x @ w_true - 0.5 > 0).double()  # separable: w_true, t = 0.5 (never a tie on integer inputs)
    # Novikoff: at most (R / gamma)^2 updates, R^2 = |(x, -1)|^2 <= 4 * 5 + 1, gamma >= 0.5 / |(w_true, 0.5)|
    bound = (4 * d + 1) * (w_true.square().sum().item() + 0.25) / 0.25
    fit = perceptron_learning_rule(x, y, max_epochs=int(bound) + 1)
    assert fit.converged and torch.equal(perceptron(x, fit.w, fit.t), y)


def test_perceptron_rule_never_converges_on_xor_and_validates():
    x, y = xor_data()
    fit = perceptron_learning_rule(x, y, max_epochs=50)
    assert not fit.converged and fit.epochs == 50
    with pytest.raises(ValueError, match="0/1 labels"):
        perceptron_learning_rule(x, y * 2)
    with pytest.raises(ValueError, match="need x"):
        perceptron_learning_rule(x[0], y)
    with pytest.raises(ValueError, match="lr > 0"):
        perceptron_learning_rule(x, y, lr=0)
