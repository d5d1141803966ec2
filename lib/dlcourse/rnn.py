"""Recurrent cells and their unrolling: RNN, LSTM and GRU (lectures 07 and 08).

Every function uses PyTorch's shapes, weight layout and gate order, so its weights can be
copied from (or into) `nn.RNNCell`, `nn.LSTMCell`, `nn.GRUCell`, `nn.RNN`, `nn.LSTM` and
`nn.GRU` and the numbers agree:

* ``weight_ih`` is (G*H, D) and ``weight_hh`` is (G*H, H): the G gates' matrices stacked on
  top of each other, G = 1 (RNN), 4 (LSTM: i, f, g, o) or 3 (GRU: r, z, n);
* ``bias_ih`` and ``bias_hh`` are (G*H,) or None (a cell without bias);
* a cell takes x of shape (N, D) with h of shape (N, H), or one unbatched example x (D,) with
  h (H,), and returns the same layout;
* the sequence functions take x of shape (T, N, D) (time first, as ``batch_first=False``)
  or (T, D).

Some course materials stack the LSTM gates as i, f, o, g; PyTorch (and this module) use
i, f, g, o. All functions are plain tensor code: gradients flow through them and they run
on the device of their input.
"""
from typing import NamedTuple

import torch

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_ORDER = {"rnn": "one block", "lstm": "gates i, f, g, o", "gru": "gates r, z, n"}


# --------------------------------------------------------------------------- helpers
def _check_tensor(t, name: str, optional: bool = False) -> None:
    if t is None and optional:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def _check_shape(t: torch.Tensor, shape: tuple, name: str, what: str) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} ({what}), got {tuple(t.shape)}")


def _prepare_cell(kind: str, x, states: dict, weight_ih, weight_hh, bias_ih, bias_hh):
    """Validate a cell's arguments; return (x, states, unbatched) with a batch axis added."""
    _check_tensor(x, "x")
    for name, s in states.items():
        _check_tensor(s, name)
    for name, w in (("weight_ih", weight_ih), ("weight_hh", weight_hh)):
        _check_tensor(w, name)
    _check_tensor(bias_ih, "bias_ih", optional=True)
    _check_tensor(bias_hh, "bias_hh", optional=True)
    if x.dim() not in (1, 2):
        raise ValueError(f"x must be (N, D) or unbatched (D,), got shape {tuple(x.shape)}")
    unbatched = x.dim() == 1
    first = next(iter(states))
    hidden = states[first].shape[-1] if states[first].dim() else 0
    expected = (hidden,) if unbatched else (x.shape[0], hidden)
    for name, s in states.items():
        _check_shape(s, expected, name, "unbatched (H,) like x" if unbatched else "(N, H) with x's N")
    gates, d = _GATES[kind], x.shape[-1]
    _check_shape(weight_ih, (gates * hidden, d), "weight_ih", f"({gates}*H, D), {_ORDER[kind]} stacked")
    _check_shape(weight_hh, (gates * hidden, hidden), "weight_hh", f"({gates}*H, H), {_ORDER[kind]} stacked")
    for name, b in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if b is not None:
            _check_shape(b, (gates * hidden,), name, f"({gates}*H,)")
    if unbatched:
        return x.unsqueeze(0), {k: s.unsqueeze(0) for k, s in states.items()}, True
    return x, states, False


def _affine(x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """x W^T + b for x (N, D), W (G*H, D), b (G*H,) or None -> (N, G*H)."""
    out = x @ weight.T
    return out if bias is None else out + bias


# --------------------------------------------------------------------------- cells
def rnn_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None, nonlinearity: str = "tanh"):
    """One step of an Elman RNN: h' = tanh(W_ih x + b_ih + W_hh h + b_hh).

    x: (N, D) or (D,), h: (N, H) or (H,), weight_ih: (H, D), weight_hh: (H, H),
    biases: (H,) or None -> h': like h. `nonlinearity` is "tanh" or "relu", as in
    `nn.RNNCell`. Lecture 07, "The RNN equations".
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    x, states, unbatched = _prepare_cell("rnn", x, {"h": h}, weight_ih, weight_hh, bias_ih, bias_hh)
    pre = _affine(x, weight_ih, bias_ih) + _affine(states["h"], weight_hh, bias_hh)
    h_next = torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)
    return h_next.squeeze(0) if unbatched else h_next


class LSTMGates(NamedTuple):
    """The four LSTM gate activations of one step, each like h: (N, H) or (H,)."""
    i: torch.Tensor   # input gate, sigmoid: how much of the candidate to write
    f: torch.Tensor   # forget gate, sigmoid: how much of the old cell state to keep
    g: torch.Tensor   # candidate, tanh: what to write
    o: torch.Tensor   # output gate, sigmoid: how much of tanh(c') to show as h'


def lstm_gates(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None) -> LSTMGates:
    """The gates of one LSTM step, in PyTorch's order i, f, g, o.

    [i; f; g; o] = W_ih x + b_ih + W_hh h + b_hh (rows 0:H, H:2H, 2H:3H, 3H:4H), then
    i = sigmoid(.), f = sigmoid(.), g = tanh(.), o = sigmoid(.).
    Shapes as in `lstm_cell`. Lecture 08, "The LSTM gate by gate".
    """
    x, states, unbatched = _prepare_cell("lstm", x, {"h": h, "c": c}, weight_ih, weight_hh, bias_ih, bias_hh)
    pre = _affine(x, weight_ih, bias_ih) + _affine(states["h"], weight_hh, bias_hh)
    i, f, g, o = pre.chunk(4, dim=-1)
    gates = LSTMGates(torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o))
    return LSTMGates(*(t.squeeze(0) for t in gates)) if unbatched else gates


def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One LSTM step: c' = f * c + i * g, h' = o * tanh(c') with the gates of `lstm_gates`.

    x: (N, D) or (D,), h and c: (N, H) or (H,), weight_ih: (4H, D), weight_hh: (4H, H),
    biases: (4H,) or None; gates stacked i, f, g, o as in `nn.LSTMCell`.
    Returns (h', c'), each like h. Lecture 08, "The LSTM gate by gate".
    """
    i, f, g, o = lstm_gates(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh)
    c_next = f * c + i * g
    return o * torch.tanh(c_next), c_next


def gru_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One GRU step, as `nn.GRUCell` computes it (gates r, z, n stacked in that order):

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)         reset gate
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)         update gate
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))      candidate (r multiplies b_hn too)
        h' = (1 - z) * n + z * h

    x: (N, D) or (D,), h: (N, H) or (H,), weight_ih: (3H, D), weight_hh: (3H, H),
    biases: (3H,) or None -> h': like h. Lecture 08, "The GRU".
    """
    x, states, unbatched = _prepare_cell("gru", x, {"h": h}, weight_ih, weight_hh, bias_ih, bias_hh)
    h = states["h"]
    xi_r, xi_z, xi_n = _affine(x, weight_ih, bias_ih).chunk(3, dim=-1)
    hh_r, hh_z, hh_n = _affine(h, weight_hh, bias_hh).chunk(3, dim=-1)
    r = torch.sigmoid(xi_r + hh_r)
    z = torch.sigmoid(xi_z + hh_z)
    n = torch.tanh(xi_n + r * hh_n)
    h_next = (1 - z) * n + z * h
    return h_next.squeeze(0) if unbatched else h_next


# ------------------------------------------------------------------- sequences
def _prepare_sequence(x, states: dict):
    """Validate x (T, N, D) / (T, D) and the initial states; return them as cell inputs.

    Initial states may be (N, H) / (H,) or, as `nn.LSTM` takes them, (1, N, H) / (1, H)."""
    _check_tensor(x, "x")
    if x.dim() not in (2, 3):
        raise ValueError(f"x must be (T, N, D) or unbatched (T, D), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one time step, got T = 0")
    cell_shape = x.shape[1:-1]         # (N,) or ()
    prepared, layer_axis = {}, False
    for name, s in states.items():
        _check_tensor(s, name)
        if s.dim() == len(cell_shape) + 2 and s.shape[0] == 1:   # nn.LSTM's (num_layers=1, N, H)
            s, layer_axis = s[0], True
        if tuple(s.shape[:-1]) != tuple(cell_shape) or s.dim() != len(cell_shape) + 1:
            raise ValueError(f"{name} must be {'(N, H)' if cell_shape else '(H,)'} (or with a leading "
                             f"num_layers axis of 1) for x of shape {tuple(x.shape)}, got {tuple(s.shape)}")
        prepared[name] = s
    return prepared, layer_axis


def rnn(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, nonlinearity: str = "tanh"):
    """Unroll `rnn_cell` over time with the same weights at every step, like one layer of `nn.RNN`.

    x: (T, N, D) or (T, D); h0: (N, H) or (H,) (or (1, N, H) / (1, H) as `nn.RNN` takes it)
    -> (outputs (T, N, H) or (T, H): h_1 .. h_T, h_T shaped like h0). Lecture 07.
    """
    states, layer_axis = _prepare_sequence(x, {"h0": h0})
    h, outputs = states["h0"], []
    for x_t in x:
        h = rnn_cell(x_t, h, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity)
        outputs.append(h)
    return torch.stack(outputs), (h.unsqueeze(0) if layer_axis else h)


def lstm(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """Unroll `lstm_cell` over time, like one layer of `nn.LSTM` (batch_first=False).

    h_t, c_t = lstm_cell(x_t, h_{t-1}, c_{t-1}, ...) for t = 1..T, starting from (h0, c0).
    x: (T, N, D) or (T, D); h0, c0: (N, H) or (H,) (or (1, N, H) / (1, H) as `nn.LSTM`
    takes them); weights as in `lstm_cell`.
    Returns (outputs, (h_T, c_T)): outputs (T, N, H) or (T, H) stacks h_1 .. h_T, and h_T,
    c_T are shaped like h0, c0. Lecture 08, "Unrolling the LSTM".
    """
    states, layer_axis = _prepare_sequence(x, {"h0": h0, "c0": c0})
    h, c, outputs = states["h0"], states["c0"], []
    for x_t in x:
        h, c = lstm_cell(x_t, h, c, weight_ih, weight_hh, bias_ih, bias_hh)
        outputs.append(h)
    if layer_axis:
        return torch.stack(outputs), (h.unsqueeze(0), c.unsqueeze(0))
    return torch.stack(outputs), (h, c)


def gru(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """Unroll `gru_cell` over time, like one layer of `nn.GRU` (batch_first=False).

    x: (T, N, D) or (T, D); h0: (N, H) or (H,) (or with a leading axis of 1)
    -> (outputs (T, N, H) or (T, H), h_T shaped like h0). Lecture 08, "The GRU".
    """
    states, layer_axis = _prepare_sequence(x, {"h0": h0})
    h, outputs = states["h0"], []
    for x_t in x:
        h = gru_cell(x_t, h, weight_ih, weight_hh, bias_ih, bias_hh)
        outputs.append(h)
    return torch.stack(outputs), (h.unsqueeze(0) if layer_axis else h)


def num_parameters(kind: str, input_size: int, hidden_size: int, bias: bool = True) -> int:
    """Weights of one cell: G * (H*D + H*H + 2H) with G = 1 (rnn), 4 (lstm), 3 (gru); no 2H without bias.

    Equals `sum(p.numel() for p in nn.LSTMCell(D, H).parameters())` and so on. Lecture 08.
    >>> num_parameters("lstm", 10, 20)
    2560
    """
    if kind not in _GATES:
        raise ValueError(f"kind must be one of {sorted(_GATES)}, got {kind!r}")
    for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    h, d = hidden_size, input_size
    return _GATES[kind] * (h * d + h * h + (2 * h if bias else 0))


def state_gradient_norms(step, xs, h0) -> torch.Tensor:
    """Backpropagation through time, measured: ||dL/dh_t|| for t = 0..T with L = sum(h_T).

    step: (x_t, h) -> next state; xs: (T, N, D); h0: (N, S) (not modified).
    h_t = step(xs[t-1], h_{t-1}); autograd's chain rule through every later step gives
    dL/dh_t = (dh_{t+1}/dh_t)^T ... (dh_T/dh_{T-1})^T 1. Returns (T + 1,) norms; entry T is
    sqrt(N * S) and entry 0 belongs to h0. Lecture 07, "Vanishing and exploding gradients".
    """
    _check_tensor(xs, "xs")
    _check_tensor(h0, "h0")
    states = [h0.detach().requires_grad_()]
    for x_t in xs:
        states.append(step(x_t, states[-1]))
    grads = torch.autograd.grad(states[-1].sum(), states)
    return torch.stack([g.norm() for g in grads]).detach()


def recurrence(f, g, xs, h0):
    """The general recurrent network of deck 004: h_t = f_W(h_{t-1}, x_t), y_t = g_W(h_t).

    f: (h, x_t) -> new h; g: h -> y_t; xs: (T, ...) iterated over its first dimension; h0: the
    initial state -> (ys, hs), each stacked over t = 1..T. Any cell (rnn_cell, gru_cell, a tagger's
    readout) fits: the same f and g, so the same W, at every step. Lecture 07.

    >>> ys, hs = recurrence(lambda h, x: h + x, lambda h: 2 * h, torch.tensor([1., 2., 3.]), torch.tensor(0.))
    >>> hs.tolist(), ys.tolist()
    ([1.0, 3.0, 6.0], [2.0, 6.0, 12.0])
    """
    h, hs, ys = h0, [], []
    for x_t in xs:
        h = f(h, x_t)
        hs.append(h)
        ys.append(g(h))
    if not hs:
        raise ValueError("xs is empty: a recurrence needs at least one step")
    return torch.stack(ys), torch.stack(hs)
