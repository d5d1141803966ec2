"""Widgets for lecture 01: the perceptron on the credit-rating table, and square vs
cross-entropy loss.

    from dlcourse.widgets.neurons import perceptron_explorer, loss_explorer
    perceptron_explorer()          # sliders for w1, w2, w3 and the threshold t
    loss_explorer()                # a slider for the predicted probability p

`credit_state` and `loss_values` compute what the widgets show, without a browser.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dlcourse.neurons import credit_rating, perceptron


@dataclass
class CreditState:
    sums: torch.Tensor          # w . x for each person: (6,)
    predictions: torch.Tensor   # I(w . x - t > 0): (6,)
    wrong: list[str]            # names of the misclassified people
    cross_entropy: float        # mean -log sigma(+-(w . x - t)) against the true labels
    square: float               # mean (sigma(w . x - t) - y)^2


def credit_state(w, t: float) -> CreditState:
    """The perceptron Y = I(w . x - t > 0) on the deck's six applicants, with two losses of the
    same neuron read as a probability sigma(w . x - t)."""
    data = credit_rating()
    w = torch.as_tensor(w, dtype=torch.float64)
    sums = data.x @ w
    predictions = perceptron(data.x, w, t)
    wrong = [name for name, p, y in zip(data.names, predictions.tolist(), data.y.tolist()) if p != y]
    z = sums - t
    cross_entropy = torch.nn.functional.binary_cross_entropy_with_logits(z, data.y).item()
    square = ((torch.sigmoid(z) - data.y) ** 2).mean().item()
    return CreditState(sums, predictions, wrong, cross_entropy, square)


def plot_credit(state: CreditState, t: float, ax=None):
    """The six weighted sums on a line, the threshold t as the decision boundary, colour = true
    label, a red ring around each misclassified person."""
    import matplotlib.pyplot as plt

    data = credit_rating()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 2.6))
    for i, (name, s, y) in enumerate(zip(data.names, state.sums.tolist(), data.y.tolist())):
        ax.scatter([s], [i], s=70, color="tab:green" if y else "tab:grey", zorder=3)
        if name in state.wrong:
            ax.scatter([s], [i], s=260, facecolors="none", edgecolors="tab:red", linewidths=2, zorder=4)
        ax.annotate(name, (s, i), xytext=(8, -3), textcoords="offset points", fontsize=8)
    ax.axvline(t, color="tab:blue", ls="--")
    ax.text(t, len(data.names) - 0.4, f" t = {t:.2f}: credit to the right", color="tab:blue", fontsize=8)
    low, high = min(state.sums.min().item(), t) - 0.5, max(state.sums.max().item(), t) + 1.2
    ax.set_xlim(low, high)
    ax.set_yticks([])
    ax.set_xlabel("w . x (green: gets credit, grey: does not; red ring: misclassified)")
    return ax


def perceptron_explorer(w=(0.3, 0.3, 0.3), t: float = 0.4):
    """Sliders for the three weights and the threshold; the sums, the boundary, the errors."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    names = credit_rating().attributes
    sliders = [widgets.FloatSlider(value=v, min=-1.0, max=1.0, step=0.05, description=f"w ({n})",
                                   style={"description_width": "140px"}, layout=widgets.Layout(width="420px"),
                                   continuous_update=False) for v, n in zip(w, names)]
    threshold = widgets.FloatSlider(value=t, min=-1.0, max=2.0, step=0.05, description="threshold t",
                                    style={"description_width": "140px"}, layout=widgets.Layout(width="420px"),
                                    continuous_update=False)
    line = widgets.HTML()
    picture = widgets.Output()

    def show(_change=None) -> None:
        state = credit_state([s.value for s in sliders], threshold.value)
        errors = ", ".join(state.wrong) if state.wrong else "none"
        line.value = (f"<b>{len(state.wrong)} of 6 misclassified</b> ({errors}); as a probability "
                      f"sigma(w . x - t): cross-entropy {state.cross_entropy:.3f}, square loss {state.square:.3f}")
        with picture:
            picture.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 2.6))
            plot_credit(state, threshold.value, ax)
            display(fig)
            plt.close(fig)

    for control in (*sliders, threshold):
        control.observe(show, names="value")
    show()
    container = widgets.VBox([*sliders, threshold, line, picture])
    container.add_class("dlcourse-widget")
    return container


def loss_values(p: float) -> dict[str, float]:
    """For target 1 and predicted probability p: both losses and their derivatives with respect
    to the neuron's input z (p = sigma(z)), which is what gradient descent feels.
    square (1 - p)^2: d/dz = -2 (1 - p) p (1 - p);  cross-entropy -log p: d/dz = -(1 - p)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be strictly between 0 and 1, got {p}")
    return {"square": (1 - p) ** 2, "cross_entropy": -math.log(p),
            "square_grad": -2 * (1 - p) * p * (1 - p), "cross_entropy_grad": -(1 - p)}


def loss_explorer(p: float = 0.1):
    """A slider for the predicted probability of the true class: both loss curves, and their
    slopes with respect to the neuron's input at that point."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    import numpy as np
    from IPython.display import display

    slider = widgets.FloatSlider(value=p, min=0.01, max=0.99, step=0.01, description="p (true class)",
                                 style={"description_width": "110px"}, continuous_update=False)
    line = widgets.HTML()
    picture = widgets.Output()
    grid = np.linspace(0.005, 0.995, 200)

    def show(_change=None) -> None:
        v = loss_values(slider.value)
        line.value = (f"square loss {v['square']:.3f} (slope in z {v['square_grad']:+.3f}); "
                      f"cross-entropy {v['cross_entropy']:.3f} (slope in z {v['cross_entropy_grad']:+.3f})")
        with picture:
            picture.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6, 2.8))
            ax.plot(grid, (1 - grid) ** 2, label="square (1 - p)^2")
            ax.plot(grid, -np.log(grid), label="cross-entropy -log p")
            ax.axvline(slider.value, color="grey", ls=":")
            ax.scatter([slider.value] * 2, [v["square"], v["cross_entropy"]], color="black", zorder=3)
            ax.set_ylim(0, 5)
            ax.set_xlabel("predicted probability p of the true class")
            ax.legend(fontsize=8)
            display(fig)
            plt.close(fig)

    slider.observe(show, names="value")
    show()
    container = widgets.VBox([slider, line, picture])
    container.add_class("dlcourse-widget")
    return container
