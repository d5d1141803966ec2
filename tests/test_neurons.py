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
