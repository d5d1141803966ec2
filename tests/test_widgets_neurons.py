"""Lecture 01's widgets (dlcourse.widgets.neurons): the numbers they show and their controls."""
import math

import pytest
import torch

from dlcourse.widgets import neurons as wn


def test_the_decks_perceptron_gets_every_applicant_right():
    state = wn.credit_state([0.3, 0.3, 0.3], 0.4)
    assert state.wrong == [] and state.predictions.tolist() == [1, 0, 1, 0, 1, 0]
    assert state.sums.tolist() == pytest.approx([0.6, 0.3, 0.6, 0.3, 0.6, 0.3])


def test_misclassified_and_losses_follow_the_weights():
    state = wn.credit_state([0.5, 0.0, 0.0], 0.4)      # "employed" alone decides
    assert state.wrong == ["Kim Hanson", "John Page"]
    z = torch.tensor([0.1, -0.4, 0.1, -0.4, -0.4, 0.1], dtype=torch.float64)
    y = torch.tensor([1, 0, 1, 0, 1, 0], dtype=torch.float64)
    p = torch.sigmoid(z)
    assert state.cross_entropy == pytest.approx((-(y * p.log() + (1 - y) * (1 - p).log())).mean().item())
    assert state.square == pytest.approx(((p - y) ** 2).mean().item())


def test_loss_values_and_their_slopes_match_autograd():
    for p in (0.05, 0.5, 0.93):
        z = torch.tensor(math.log(p / (1 - p)), dtype=torch.float64, requires_grad=True)
        v = wn.loss_values(p)
        (g_sq,) = torch.autograd.grad((1 - torch.sigmoid(z)) ** 2, z)
        (g_ce,) = torch.autograd.grad(-torch.log(torch.sigmoid(z)), z)
        assert v["square_grad"] == pytest.approx(g_sq.item()) and v["cross_entropy_grad"] == pytest.approx(g_ce.item())
        assert v["square"] == pytest.approx((1 - p) ** 2) and v["cross_entropy"] == pytest.approx(-math.log(p))
    with pytest.raises(ValueError, match="strictly between"):
        wn.loss_values(1.0)


def test_perceptron_sliders_move_the_widget():
    import matplotlib

    matplotlib.use("Agg")
    w = wn.perceptron_explorer()
    *sliders, threshold, line, _picture = w.children
    assert "dlcourse-widget" in w._dom_classes
    assert line.value.startswith("<b>0 of 6 misclassified</b>")
    sliders[1].value = 0.0
    sliders[2].value = 0.0
    sliders[0].value = 0.5
    assert line.value.startswith("<b>2 of 6 misclassified</b> (Kim Hanson, John Page)")
    threshold.value = 1.5
    assert line.value.startswith("<b>3 of 6 misclassified</b>")


def test_loss_slider_moves_the_widget():
    import matplotlib

    matplotlib.use("Agg")
    w = wn.loss_explorer(p=0.1)
    slider, line, _ = w.children
    first = line.value
    slider.value = 0.9
    assert line.value != first and f"{-math.log(0.9):.3f}" in line.value
