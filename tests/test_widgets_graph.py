"""The graph stepper (dlcourse.widgets.graph): its steps against torch.autograd, and the widget."""
import pytest
import torch

from dlcourse.autograd import topological_order
from dlcourse.widgets import graph as wgraph


def torch_grads(expression, values):
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in values.items()}
    if expression == "(x + y) z":
        out = (t["x"] + t["y"]) * t["z"]
    else:
        out = torch.sigmoid(t["w0"] * t["x0"] + t["w1"] * t["x1"] + t["w2"])
    out.backward()
    return out.item(), {k: v.grad.item() for k, v in t.items()}


@pytest.mark.parametrize("expression", list(wgraph.EXPRESSIONS))
@pytest.mark.parametrize("shift", [0.0, 0.7])
def test_last_step_has_torch_values_and_gradients(expression, shift):
    values = {k: v + shift * (i + 1) for i, (k, v) in enumerate(wgraph.EXPRESSIONS[expression].items())}
    root, inputs = wgraph.build(expression, values)
    steps = wgraph.walk(root)
    out, grads = torch_grads(expression, values)
    last = steps[-1]
    assert last.values[id(root)] == pytest.approx(out, abs=1e-12)
    for name, node in inputs.items():
        assert last.grads[id(node)] == pytest.approx(grads[name], abs=1e-12), name


def test_the_decks_numbers_and_the_order_of_steps():
    root, v = wgraph.build("(x + y) z", wgraph.EXPRESSIONS["(x + y) z"])
    steps = wgraph.walk(root)
    # inputs, 2 forward steps (q, f), d f/d f = 1, 2 backward gates
    assert len(steps) == 6
    assert steps[0].values[id(root)] is None and steps[0].values[id(v["x"])] == -2.0
    assert steps[2].values[id(root)] == -12.0 and steps[2].grads[id(root)] is None
    assert steps[3].grads[id(root)] == 1.0 and steps[3].grads[id(v["z"])] is None
    assert steps[4].local == {"q": -4.0, "z": 3.0}      # the * gate swaps its inputs
    assert steps[4].grads[id(v["x"])] is None
    assert steps[5].local == {"x": 1.0, "y": 1.0}       # the + gate copies the gradient
    assert [steps[5].grads[id(v[k])] for k in "xyz"] == [-4.0, -4.0, 3.0]
    root, v = wgraph.build("sigmoid neuron", wgraph.EXPRESSIONS["sigmoid neuron"])
    last = wgraph.walk(root)[-1]
    assert round(last.values[id(root)], 2) == 0.73
    assert [round(last.grads[id(v[k])], 2) for k in ("w0", "x0", "w1", "x1", "w2")] == [-0.2, 0.39, -0.39, -0.59, 0.2]


def test_build_checks_its_arguments():
    with pytest.raises(ValueError, match="one of"):
        wgraph.build("x * y", {})
    with pytest.raises(ValueError, match="missing input values"):
        wgraph.build("(x + y) z", {"x": 1.0})


def test_draw_step_marks_unknowns():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root, _ = wgraph.build("(x + y) z", wgraph.EXPRESSIONS["(x + y) z"])
    steps = wgraph.walk(root)
    ax = wgraph.draw_step(root, steps[0])
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("?") == len(topological_order(root)) + 2   # every gradient, and the values of q and f
    plt.close(ax.figure)


def test_controls_move_the_widget():
    import matplotlib

    matplotlib.use("Agg")
    w = wgraph.graph_stepper()
    (choice, back, forward, slider), inputs, line = w.children[0].children, w.children[1], w.children[2]
    assert "dlcourse-widget" in w._dom_classes
    assert line.value.startswith("<b>step 0 of 5</b>: inputs")
    forward.click()
    forward.click()
    assert slider.value == 2 and "= -12" in line.value
    inputs.children[0].value = 1.0      # x = 1: f = (1 + 5)(-4) = -24
    assert slider.value == 2 and "= -24" in line.value
    back.click()
    assert slider.value == 1
    choice.value = "sigmoid neuron"
    assert [b.description for b in w.children[1].children] == ["w0", "x0", "w1", "x1", "w2"]
    assert slider.value == 0 and slider.max == len(wgraph.walk(wgraph.build("sigmoid neuron", wgraph.EXPRESSIONS["sigmoid neuron"])[0])) - 1
