"""dlcourse.rnn against nn.RNNCell / nn.LSTMCell / nn.GRUCell / nn.RNN / nn.LSTM / nn.GRU.

Float64 throughout; values and gradients must agree within ATOL = RTOL = 1e-10 (helpers.py):
the same arithmetic in another order, over at most a few dozen steps of a tiny network.
"""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dlcourse import rnn
from helpers import DEVICES, assert_matches_torch

CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
SHAPES = [(1, 1, 1), (3, 5, 4), (2, 1, 7), (6, 8, 2)]   # (N, D, H)


def torch_module(cls, d, h, bias, device, seed=0):
    torch.manual_seed(seed)
    return cls(d, h, bias=bias).to(device=device, dtype=torch.float64)


def weights(module, suffix=""):
    """(weight_ih, weight_hh, bias_ih, bias_hh) of a torch cell or one-layer RNN (None without bias)."""
    names = [f"weight_ih{suffix}", f"weight_hh{suffix}", f"bias_ih{suffix}", f"bias_hh{suffix}"]
    return [getattr(module, n, None) for n in names]


def randn(*shape, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device)


def ours_cell(kind, x, h, c, w):
    if kind == "rnn":
        return rnn.rnn_cell(x, h, *w)
    if kind == "lstm":
        return rnn.lstm_cell(x, h, c, *w)
    return rnn.gru_cell(x, h, *w)


def theirs_cell(kind, module, x, h, c):
    return module(x, (h, c)) if kind == "lstm" else module(x, h)


# ------------------------------------------------------------------------ cells
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("n, d, h", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
def test_cells_match_torch_values_and_gradients(device, kind, n, d, h, bias, batched):
    module = torch_module(CELLS[kind], d, h, bias, device)
    lead = (n,) if batched else ()
    x = randn(*lead, d, device=device, seed=1).requires_grad_()
    h0 = randn(*lead, h, device=device, seed=2).requires_grad_()
    c0 = randn(*lead, h, device=device, seed=3).requires_grad_()
    ours = ours_cell(kind, x, h0, c0, weights(module))
    theirs = theirs_cell(kind, module, x, h0, c0)
    ours, theirs = (ours, theirs) if kind == "lstm" else ((ours,), (theirs,))
    for name, a, b in zip(("h'", "c'"), ours, theirs):
        assert_matches_torch(a, b, what=f"{kind} {name}")
    # gradients of a weighted sum of the outputs with respect to inputs, states and weights
    wts = [randn(*t.shape, device=device, seed=10 + k) for k, t in enumerate(theirs)]
    inputs = [x, h0, c0] if kind == "lstm" else [x, h0]
    params = [p for p in weights(module) if p is not None]
    g_ours = torch.autograd.grad(sum((a * w).sum() for a, w in zip(ours, wts)), inputs + params)
    g_theirs = torch.autograd.grad(sum((b * w).sum() for b, w in zip(theirs, wts)), inputs + params)
    for k, (a, b) in enumerate(zip(g_ours, g_theirs)):
        assert_matches_torch(a, b, what=f"{kind} gradient {k}")


@pytest.mark.parametrize("device", DEVICES)
def test_rnn_cell_relu(device):
    torch.manual_seed(0)
    module = nn.RNNCell(3, 4, nonlinearity="relu").to(device=device, dtype=torch.float64)
    x, h = randn(5, 3, device=device), randn(5, 4, device=device, seed=2)
    assert_matches_torch(rnn.rnn_cell(x, h, *weights(module), nonlinearity="relu"), module(x, h))


def test_lstm_gate_order_is_i_f_g_o():
    # With zero weights and a bias that names each block, the gates come out in torch's order.
    h_size = 2
    b = torch.cat([torch.full((h_size,), v) for v in (1.0, 2.0, 3.0, 4.0)]).double()
    zeros_ih, zeros_hh = torch.zeros(4 * h_size, 3).double(), torch.zeros(4 * h_size, h_size).double()
    x, h, c = torch.ones(3).double(), torch.zeros(h_size).double(), torch.ones(h_size).double()
    i, f, g, o = rnn.lstm_gates(x, h, c, zeros_ih, zeros_hh, b, None)
    assert torch.allclose(i, torch.sigmoid(torch.tensor(1.0)).double())
    assert torch.allclose(f, torch.sigmoid(torch.tensor(2.0)).double())
    assert torch.allclose(g, torch.tanh(torch.tensor(3.0)).double())
    assert torch.allclose(o, torch.sigmoid(torch.tensor(4.0)).double())
    h1, c1 = rnn.lstm_cell(x, h, c, zeros_ih, zeros_hh, b, None)
    assert torch.allclose(c1, f * c + i * g) and torch.allclose(h1, o * torch.tanh(c1))


def test_gru_reset_gate_multiplies_the_hidden_bias():
    # torch: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); with r < 1 moving b_hn into b_in changes n.
    torch.manual_seed(0)
    cell = nn.GRUCell(2, 3).double()
    x, h = randn(4, 2), randn(4, 3, seed=2)
    w_ih, w_hh, b_ih, b_hh = weights(cell)
    moved_ih, moved_hh = b_ih.detach().clone(), b_hh.detach().clone()
    moved_ih[6:] += moved_hh[6:]
    moved_hh[6:] = 0
    assert_matches_torch(rnn.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh), cell(x, h))
    assert not torch.allclose(rnn.gru_cell(x, h, w_ih, w_hh, moved_ih, moved_hh), cell(x, h))


# -------------------------------------------------------------------- sequences
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("t, n, d, h", [(1, 2, 3, 4), (5, 3, 2, 3), (9, 1, 4, 2)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layer_axis", [True, False])
def test_unrolled_layers_match_torch(device, kind, t, n, d, h, bias, layer_axis):
    module = torch_module(LAYERS[kind], d, h, bias, device)
    x = randn(t, n, d, device=device).requires_grad_()
    h0 = randn(1, n, h, device=device, seed=2).requires_grad_()
    c0 = randn(1, n, h, device=device, seed=3).requires_grad_()
    given_h0, given_c0 = (h0, c0) if layer_axis else (h0[0], c0[0])
    w = weights(module, "_l0")
    if kind == "lstm":
        out, (h_t, c_t) = rnn.lstm(x, given_h0, given_c0, *w)
        ref_out, (ref_h, ref_c) = module(x, (h0, c0))
        assert_matches_torch(c_t, ref_c if layer_axis else ref_c[0], what="c_T")
    else:
        out, h_t = getattr(rnn, kind)(x, given_h0, *w)
        ref_out, ref_h = module(x, h0)
    assert_matches_torch(out, ref_out, what=f"{kind} outputs")
    assert_matches_torch(h_t, ref_h if layer_axis else ref_h[0], what=f"{kind} h_T")
    loss_ours = (out * randn(*out.shape, device=device, seed=7)).sum()
    loss_theirs = (ref_out * randn(*out.shape, device=device, seed=7)).sum()
    params = [p for p in w if p is not None]
    for k, (a, b) in enumerate(zip(torch.autograd.grad(loss_ours, [x, h0] + params),
                                   torch.autograd.grad(loss_theirs, [x, h0] + params))):
        assert_matches_torch(a, b, what=f"{kind} gradient {k}")


@pytest.mark.parametrize("device", DEVICES)
def test_lstm_unbatched_sequence(device):
    module = torch_module(nn.LSTM, 3, 4, True, device)
    x, h0, c0 = randn(6, 3, device=device), randn(1, 4, device=device, seed=2), randn(1, 4, device=device, seed=3)
    out, (h_t, c_t) = rnn.lstm(x, h0, c0, *weights(module, "_l0"))
    ref_out, (ref_h, ref_c) = module(x, (h0, c0))
    for a, b, what in ((out, ref_out, "outputs"), (h_t, ref_h, "h_T"), (c_t, ref_c, "c_T")):
        assert_matches_torch(a, b, what=what)
    out2, (h2, c2) = rnn.lstm(x, h0[0], c0[0], *weights(module, "_l0"))
    assert_matches_torch(out2, ref_out)
    assert_matches_torch(h2, ref_h[0])
    assert_matches_torch(c2, ref_c[0])


@settings(max_examples=15, deadline=None)
@given(kind=st.sampled_from(list(LAYERS)), t=st.integers(1, 6), n=st.integers(1, 4), d=st.integers(1, 5),
       h=st.integers(1, 5), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_property_unrolled_equals_torch_and_last_output_is_final_state(kind, t, n, d, h, bias, seed):
    module = torch_module(LAYERS[kind], d, h, bias, "cpu", seed=seed)
    x, h0, c0 = randn(t, n, d, seed=seed), randn(n, h, seed=seed + 1), randn(n, h, seed=seed + 2)
    w = weights(module, "_l0")
    with torch.no_grad():
        if kind == "lstm":
            out, (h_t, _) = rnn.lstm(x, h0, c0, *w)
            ref_out, _ = module(x, (h0[None], c0[None]))
        else:
            out, h_t = getattr(rnn, kind)(x, h0, *w)
            ref_out, _ = module(x, h0[None])
    assert_matches_torch(out, ref_out)
    assert torch.equal(out[-1], h_t)
    if kind == "lstm":   # h = o * tanh(c): a product of values in (0, 1) and (-1, 1)
        assert out.abs().max() < 1
    if kind == "gru":    # h' = (1 - z) n + z h mixes n in (-1, 1) with h: never beyond max(1, |h0|)
        assert out.abs().max() <= max(1.0, h0.abs().max().item())


@settings(max_examples=15, deadline=None)
@given(kind=st.sampled_from(list(CELLS)), n=st.integers(1, 5), d=st.integers(1, 6), h=st.integers(1, 6),
       seed=st.integers(0, 2**16))
def test_property_batched_cell_is_rowwise_unbatched_cell(kind, n, d, h, seed):
    module = torch_module(CELLS[kind], d, h, True, "cpu", seed=seed)
    x, h0, c0 = randn(n, d, seed=seed), randn(n, h, seed=seed + 1), randn(n, h, seed=seed + 2)
    w = weights(module)
    with torch.no_grad():
        batched = ours_cell(kind, x, h0, c0, w)
        rows = [ours_cell(kind, x[k], h0[k], c0[k], w) for k in range(n)]
    if kind == "lstm":
        assert_matches_torch(batched[0], torch.stack([r[0] for r in rows]))
        assert_matches_torch(batched[1], torch.stack([r[1] for r in rows]))
    else:
        assert_matches_torch(batched, torch.stack(rows))


# ---------------------------------------------------------------- counts, errors
@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("d, h, bias", [(10, 20, True), (3, 7, False), (1, 1, True)])
def test_num_parameters_matches_torch(kind, d, h, bias):
    expected = sum(p.numel() for p in CELLS[kind](d, h, bias=bias).parameters())
    assert rnn.num_parameters(kind, d, h, bias) == expected


def test_clear_errors_on_bad_input():
    cell = nn.LSTMCell(3, 2).double()
    w = weights(cell)
    x, h = torch.zeros(4, 3).double(), torch.zeros(4, 2).double()
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        rnn.lstm_cell([0.0, 0.0, 0.0], h[0], h[0], *w)
    with pytest.raises(ValueError, match=r"weight_ih must have shape \(8, 3\).*i, f, g, o"):
        rnn.lstm_cell(x, h, h, w[0][:6], w[1], w[2], w[3])
    with pytest.raises(ValueError, match=r"c must have shape \(4, 2\)"):
        rnn.lstm_cell(x, h, h[:3], *w)
    with pytest.raises(ValueError, match="x must be"):
        rnn.lstm_cell(x[None], h, h, *w)
    with pytest.raises(ValueError, match=r"bias_hh must have shape \(8,\)"):
        rnn.lstm_cell(x, h, h, w[0], w[1], w[2], w[3][:4])
    with pytest.raises(ValueError, match="nonlinearity"):
        rnn.rnn_cell(x, h, torch.zeros(2, 3).double(), torch.zeros(2, 2).double(), nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="at least one time step"):
        rnn.lstm(torch.zeros(0, 4, 3).double(), h, h, *w)
    with pytest.raises(ValueError, match=r"h0 must be \(N, H\)"):
        rnn.lstm(torch.zeros(5, 4, 3).double(), h[:2], h, *w)
    with pytest.raises(ValueError, match="kind"):
        rnn.num_parameters("transformer", 3, 2)


def test_state_gradient_norms_linear_recurrence_and_jacobian_product():
    # h_t = a * h_{t-1} + x_t: dL/dh_t = a^(T - t) * ones, so the norms are a^(T - t) * sqrt(N * S).
    xs, h0 = randn(5, 2, 3), randn(2, 3, seed=2)
    norms = rnn.state_gradient_norms(lambda x_t, h: 0.7 * h + x_t, xs, h0)
    expected = torch.tensor([0.7 ** (5 - t) * 6 ** 0.5 for t in range(6)], dtype=torch.float64)
    assert_matches_torch(norms, expected)
    assert not h0.requires_grad
    # a tanh RNN: the gradient at h_0 is the product of the step Jacobians, built by hand
    cell = torch_module(nn.RNNCell, 3, 3, True, "cpu")
    w = weights(cell)
    step = lambda x_t, h: rnn.rnn_cell(x_t, h, *w)
    xs1, h = randn(4, 1, 3), randn(1, 3, seed=5)
    grad = torch.ones(3, dtype=torch.float64)
    states = [h[0]]
    with torch.no_grad():
        for x_t in xs1:
            states.append(step(x_t[0], states[-1]))
        for t in range(4, 0, -1):   # dh_t/dh_{t-1} = diag(1 - h_t^2) W_hh
            grad = (torch.diag(1 - states[t] ** 2) @ w[1]).T @ grad
    assert abs(rnn.state_gradient_norms(step, xs1, h)[0].item() - grad.norm().item()) < 1e-12


def test_recurrence_with_the_rnn_cell_is_the_rnn():
    """deck 004's general form h_t = f_W(h_{t-1}, x_t), y_t = g_W(h_t) with f = the tanh cell."""
    g = torch.Generator().manual_seed(5)
    layer = nn.RNN(3, 4).double()
    readout = nn.Linear(4, 2).double()
    x = torch.randn(6, 2, 3, generator=g, dtype=torch.float64)
    W = [layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0]
    ys, hs = rnn.recurrence(lambda h, x_t: rnn.rnn_cell(x_t, h, *W), lambda h: readout(h).softmax(-1),
                            x, torch.zeros(2, 4, dtype=torch.float64))
    theirs, _ = layer(x)
    assert_matches_torch(hs, theirs, what="states")
    assert_matches_torch(ys, readout(theirs).softmax(-1), what="outputs")
    with pytest.raises(ValueError, match="empty"):
        rnn.recurrence(lambda h, x_t: h, lambda h: h, torch.zeros(0, 3), torch.zeros(3))
