"""dlcourse.autograd against torch.autograd (float64).

Tolerance: each Value op is one float64 operation, as torch's is, so values and gradients
agree to a few ulps; ATOL = RTOL = 1e-10 (tests/helpers.py). The numerical gradient is
compared with atol 1e-6: central differences with eps = 1e-6 have truncation error
O(eps^2) and rounding error about 1e-16 / eps = 1e-10 per unit of |f|.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse.autograd import (MLP, Dual, Value, forward_mode_gradient, numerical_gradient,
                               topological_order, train_mlp)
from helpers import ATOL, DEVICES, RTOL, assert_matches_torch

UNARY = ["exp", "tanh", "sigmoid", "relu"]


def both(values, device=torch.device("cpu")):
    ours = [Value(v) for v in values]
    theirs = [torch.tensor(v, dtype=torch.float64, device=device, requires_grad=True) for v in values]
    return ours, theirs


def compare(fn, values, device=torch.device("cpu"), what="f"):
    ours, theirs = both(values, device)
    out_ours, out_theirs = fn(*ours), fn(*theirs)
    out_ours.backward()
    out_theirs.backward()
    assert_matches_torch(torch.tensor(out_ours.data, dtype=torch.float64, device=device), out_theirs.detach(), what=f"{what} value")
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_matches_torch(torch.tensor(a.grad, dtype=torch.float64, device=device), b.grad, what=f"{what} d/dx{i}")


@pytest.mark.parametrize("device", DEVICES)
def test_deck_example_x_plus_y_times_z(device):
    compare(lambda x, y, z: (x + y) * z, [-2.0, 5.0, -4.0], device, "(x+y)z")
    x, y, z = Value(-2.0), Value(5.0), Value(-4.0)
    q = x + y
    f = q * z
    f.backward()
    # by hand: q = 3, f = -12; df/dz = q = 3, df/dq = z = -4, df/dx = df/dy = -4 * 1
    assert (f.data, q.grad, x.grad, y.grad, z.grad) == (-12.0, -4.0, -4.0, -4.0, 3.0)


@pytest.mark.parametrize("device", DEVICES)
def test_deck_sigmoid_neuron(device):
    def neuron(w0, x0, w1, x1, w2):
        return 1 / (1 + (-(w0 * x0 + w1 * x1 + w2)).exp())

    compare(neuron, [2.0, -1.0, -3.0, -2.0, -3.0], device, "sigmoid neuron")
    ours, _ = both([2.0, -1.0, -3.0, -2.0, -3.0])
    out = neuron(*ours)
    out.backward()
    s = 1 / (1 + math.exp(-1.0))  # w.x + b = 1 at the deck's point
    assert out.data == pytest.approx(s, abs=1e-15)
    local = s * (1 - s)  # d sigma / dz at z = 1
    expected = [-1.0 * local, 2.0 * local, -2.0 * local, -3.0 * local, local]
    assert [v.grad for v in ours] == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("op", UNARY + ["log", "pow2", "pow-1", "pow0.5", "neg"])
@pytest.mark.parametrize("device", DEVICES)
def test_unary_ops_match_torch(op, device):
    fns = {"log": lambda a: a.log(), "pow2": lambda a: a ** 2, "pow-1": lambda a: a ** -1,
           "pow0.5": lambda a: a ** 0.5, "neg": lambda a: -a}
    fn = fns.get(op, lambda a: getattr(a, op)())
    for v in (-1.7, 0.3, 2.5):
        if op in ("log", "pow0.5") and v <= 0:
            continue
        compare(fn, [v], device, f"{op}({v})")


@pytest.mark.parametrize("device", DEVICES)
def test_binary_ops_with_constants_match_torch(device):
    compare(lambda a, b: (a - b) / (b * 3.0) + 2.0 / a - 1.5 * b + (4.0 - a), [1.3, -0.7], device, "binary mix")


def test_relu_at_zero_takes_torch_convention():
    compare(lambda a: a.relu(), [0.0], what="relu(0)")


def test_node_used_twice_collects_both_gradients():
    x = Value(3.0)
    y = x * x + x  # dy/dx = 2x + 1 = 7
    y.backward()
    assert x.grad == 7.0
    assert len(topological_order(y)) == 3  # x, x*x, y: x listed once


def test_repeated_backward_accumulates_in_leaves_like_torch():
    # micrograd's bug: intermediate grads also accumulate, so a 2nd call gives 4x on a deep graph
    ours, theirs = both([0.5, -1.2, 0.8, 2.0])
    f_ours = ((ours[0] * ours[1] + ours[2]).tanh() * ours[3]).exp()
    f_theirs = ((theirs[0] * theirs[1] + theirs[2]).tanh() * theirs[3]).exp()
    for _ in range(3):
        f_ours.backward()
        f_theirs.backward(retain_graph=True)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_matches_torch(torch.tensor(a.grad, dtype=torch.float64), b.grad, what=f"3 backward calls, d/dx{i}")
    f_ours.zero_grad()
    assert all(v.grad == 0.0 for v in topological_order(f_ours))


def test_deep_graph_has_no_recursion_limit():
    x = Value(0.5)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.backward()
    assert x.grad == pytest.approx(1.0001 ** 5000, rel=1e-9)


def test_errors_are_readable():
    with pytest.raises(ValueError, match="log needs a positive input, got -1.0"):
        Value(-1.0).log()
    with pytest.raises(TypeError, match="exponent must be a number"):
        Value(2.0) ** Value(3.0)
    with pytest.raises(TypeError, match="real number"):
        Value("3")
    with pytest.raises(ValueError, match="eps must be positive"):
        numerical_gradient(lambda a: a, [1.0], eps=0)
    with pytest.raises(ValueError, match="undefined"):
        Value(0.0) ** -1


# --- random expressions: a hypothesis strategy builds a small expression tree over 3 inputs
def build(spec, leaves):
    if isinstance(spec, int):
        return leaves[spec]
    op, *args = spec
    vals = [build(a, leaves) for a in args]
    if op == "+":
        return vals[0] + vals[1]
    if op == "*":
        return vals[0] * vals[1]
    if op == "sq":
        return vals[0] ** 2
    if isinstance(vals[0], torch.Tensor):
        return getattr(torch, op)(vals[0])
    return getattr(vals[0], op)()


exprs = st.recursive(st.integers(0, 2), lambda inner: st.one_of(
    st.tuples(st.sampled_from(["+", "*"]), inner, inner),
    st.tuples(st.sampled_from(["tanh", "sigmoid", "sq", "relu"]), inner)), max_leaves=8)
floats = st.floats(-2, 2, allow_nan=False, allow_infinity=False)


@settings(deadline=None, max_examples=60)
@given(spec=exprs, values=st.tuples(floats, floats, floats))
def test_random_expressions_match_torch(spec, values):
    ours, theirs = both(list(values))
    out_ours = build(spec, ours) + ours[0] * 0  # make sure every input is in the graph
    out_theirs = build(spec, theirs) + theirs[0] * 0
    out_ours.backward()
    grads = torch.autograd.grad(out_theirs, theirs, allow_unused=True)
    assert out_ours.data == pytest.approx(out_theirs.item(), abs=ATOL, rel=RTOL)
    for a, g in zip(ours, grads):
        expected = 0.0 if g is None else g.item()
        assert a.grad == pytest.approx(expected, abs=ATOL, rel=RTOL), f"{spec} at {values}"


@settings(deadline=None, max_examples=40)
@given(values=st.tuples(floats, floats, floats))
def test_forward_mode_reverse_mode_and_numerical_agree(values):
    def f(a, b, c):
        return (a * b).tanh() + (c * 0.5).exp() * b - (a - c) ** 2

    ours = [Value(v) for v in values]
    f(*ours).backward()
    reverse = [v.grad for v in ours]
    assert forward_mode_gradient(f, values) == pytest.approx(reverse, abs=1e-12)
    assert numerical_gradient(f, values) == pytest.approx(reverse, abs=1e-6)


def test_dual_number_tracks_one_derivative():
    d = (Dual(2.0, 1.0) ** 3).log()  # d/dx log x^3 = 3 / x
    assert (d.value, d.tangent) == (pytest.approx(math.log(8)), pytest.approx(1.5))


def test_mlp_learns_xor():
    xs = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    ys = [-1.0, 1.0, 1.0, -1.0]
    model = MLP([2, 4, 1], seed=0)
    losses = train_mlp(model, xs, ys, steps=200, lr=0.05)
    assert losses[-1] < 0.1 < losses[0]
    assert [1.0 if model(x).data > 0 else -1.0 for x in xs] == ys


def test_mlp_is_reproducible_and_validates():
    a, b = MLP([2, 3, 1], seed=5), MLP([2, 3, 1], seed=5)
    assert [p.data for p in a.parameters()] == [p.data for p in b.parameters()]
    assert len(a.parameters()) == 2 * 3 + 3 + 3 + 1
    with pytest.raises(ValueError, match="expects 2 inputs, got 3"):
        a([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="sizes must"):
        MLP([2])


@pytest.mark.parametrize("scalar", [np.float32(1.5), np.float64(-0.75), np.int64(3), np.int32(-2), np.uint8(7)],
                         ids=lambda v: type(v).__name__)
def test_numpy_scalars_are_numbers_as_in_micrograd(scalar):
    x = Value(scalar)
    assert isinstance(x.data, float) and x.data == float(scalar)
    # on either side of a gate, and as an exponent
    y = Value(0.5)
    f = (x * y + scalar) * (scalar * y) + y ** np.int64(2) - scalar / (y + 2)
    f.backward()
    tx = torch.tensor(float(scalar), dtype=torch.float64, requires_grad=True)
    ty = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    c = float(scalar)
    tf = (tx * ty + c) * (c * ty) + ty ** 2 - c / (ty + 2)
    tf.backward()
    assert f.data == pytest.approx(tf.item(), rel=RTOL, abs=ATOL)
    assert (x.grad, y.grad) == (pytest.approx(tx.grad.item(), rel=RTOL, abs=ATOL),
                                pytest.approx(ty.grad.item(), rel=RTOL, abs=ATOL))


@pytest.mark.parametrize("bad", [True, np.bool_(True), "1.0", torch.tensor(1.0), [1.0]], ids=repr)
def test_non_numbers_are_refused(bad):
    with pytest.raises(TypeError, match="must be a real number"):
        Value(bad)


def torch_mlp(model: MLP, x, activation: str, out_activation: str):
    """The same network written with torch tensors holding the model's weights (float64)."""
    acts = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "linear": lambda z: z}
    layers = [(torch.tensor([[w.data for w in n.w] for n in layer], dtype=torch.float64, requires_grad=True),
               torch.tensor([n.b.data for n in layer], dtype=torch.float64, requires_grad=True))
              for layer in model.layers]
    h = torch.tensor(x, dtype=torch.float64)
    for i, (w, b) in enumerate(layers):
        h = acts[out_activation if i == len(layers) - 1 else activation](w @ h + b)
    return h, [t for layer in layers for t in layer]


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "linear"])
@pytest.mark.parametrize("out_activation", ["tanh", "linear"])
def test_mlp_hidden_activation_matches_torch(activation, out_activation):
    model = MLP([3, 5, 4, 1], seed=2, activation=activation, out_activation=out_activation)
    x = [0.4, -1.3, 0.9]
    out = model(x)
    out.backward()
    theirs, tensors = torch_mlp(model, x, activation, out_activation)
    theirs.sum().backward()
    assert out.data == pytest.approx(theirs.item(), rel=RTOL, abs=ATOL)
    ours_grads = [[n.w[j].grad for n in layer] for layer in model.layers for j in range(len(layer[0].w))]
    torch_w_grads = [tensors[2 * i].grad[:, j].tolist() for i, layer in enumerate(model.layers)
                     for j in range(len(layer[0].w))]
    assert ours_grads == [pytest.approx(g, rel=RTOL, abs=ATOL) for g in torch_w_grads]
    assert [[n.b.grad for n in layer] for layer in model.layers] == [
        pytest.approx(tensors[2 * i + 1].grad.tolist(), rel=RTOL, abs=ATOL) for i in range(len(model.layers))]


def test_mlp_activation_changes_the_network_and_is_validated():
    x = [0.4, -1.3, 0.9]
    outputs = {a: MLP([3, 4, 1], seed=1, activation=a)(x).data for a in ("tanh", "relu", "sigmoid")}
    assert len(set(outputs.values())) == 3  # same weights, three different networks
    with pytest.raises(ValueError, match="activation must be"):
        MLP([2, 3, 1], activation="softplus")


def test_mlp_zero_grad_resets_every_parameter():
    model = MLP([2, 3, 1], seed=4)
    model([0.5, -1.0]).backward()
    first = [p.grad for p in model.parameters()]
    assert any(g != 0 for g in first)
    model([0.5, -1.0]).backward()  # without zero_grad the gradients add up
    assert [p.grad for p in model.parameters()] == pytest.approx([2 * g for g in first])
    model.zero_grad()
    assert all(p.grad == 0.0 for p in model.parameters())
    model([0.5, -1.0]).backward()
    assert [p.grad for p in model.parameters()] == pytest.approx(first)


def test_graph_layout_and_drawing_use_matplotlib_only():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlcourse.graph_drawing import draw_graph, graph_layout, node_text

    x, y, z = Value(-2.0, label="x"), Value(5.0, label="y"), Value(-4.0, label="z")
    q = x + y
    f = q * z
    f.backward()
    pos = graph_layout(f)
    assert [pos[id(n)][0] for n in (x, y, q, z, f)] == [0, 0, 1, 1, 2]  # leaves sit just left of their user
    assert node_text(q) == "+\n3.00\n-4.00" and node_text(z) == "z\n-4.00\n3.00"
    ax = draw_graph(f)
    arrows = [t for t in ax.texts if isinstance(t, matplotlib.text.Annotation)]
    assert len(ax.texts) - len(arrows) == 3 * 5  # name, value and gradient of every node
    assert len(arrows) == 4  # x->q, y->q, q->f, z->f
    plt.close(ax.figure)
