"""End to end: release ps_lstm, grade real submissions with nbgrader, check scores.

One course, one `nbgrader autograde` call. Besides the model answer (alice) and the untouched
release (bob), five students each plant classic mistakes in different functions (at most one per
function); the parts that test those functions must score 0 and every other part must keep its
points. Two students write every function correctly but differently (another formulation, loops,
float32 arithmetic, retain_grad instead of autograd.grad): they keep full marks. Two students call
the reference implementations (nn.RNNCell's functional form, nn.LSTMCell, torch.lstm_cell,
dlcourse.rnn): those parts score 0 and say why, and the visible check of the part already says so (a student
sees it before handing in). So does an input changed in place (the LSTM's c updated with mul_ and add_).

The mistakes are the ones students make with these cells: another gate order (i, f, o, g as in some
course materials; z, r, n for the GRU), a sigmoid on the LSTM candidate, h = o * c without the tanh or
with the old c, the GRU's b_hn outside the reset gate, the update gate the wrong way round, biases
that may be None, unrolling from h0 at every step, one-step (truncated) backpropagation.
"""
from ps_grading_harness import ProblemSet, ProblemSetTests, whole

ASSIGNMENT, NOTEBOOK = "ps_lstm", "lstm"
POINTS = {"test_rnn_cell": 2, "test_lstm_cell": 3, "test_lstm": 2, "test_gru_cell": 3,
          "test_state_gradient_norms": 2, "test_written_key": 0}
RNN, LSTM_CELL, LSTM, GRU, NORMS, _ = POINTS

BIASES = """
    if bias_ih is not None:
        a = a + bias_ih
    if bias_hh is not None:
        a = a + bias_hh
"""
LSTM_HEAD = """
def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    a = x @ weight_ih.T + h @ weight_hh.T""" + BIASES
GRU_HEAD = """
def gru_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    gi, gh = x @ weight_ih.T, h @ weight_hh.T
    if bias_ih is not None:
        gi = gi + bias_ih
    if bias_hh is not None:
        gh = gh + bias_hh
"""
GRAD_HEAD = """
def state_gradient_norms(step, xs, h0):
"""

MISTAKES = {  # name -> a whole solution cell (function) and the part it costs
    # ---------------------------------------------------------------- rnn_cell
    "rnn_sigmoid": whole("rnn_cell", """
def rnn_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    a = x @ weight_ih.T + h @ weight_hh.T""" + BIASES + """
    return torch.sigmoid(a)
""", RNN),
    "rnn_drops_bias_hh": whole("rnn_cell", """
def rnn_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    a = x @ weight_ih.T + h @ weight_hh.T
    if bias_ih is not None:
        a = a + bias_ih
    return torch.tanh(a)
""", RNN),
    "rnn_bias_assumed": whole("rnn_cell", """
def rnn_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    return torch.tanh(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh)
""", RNN),
    "rnn_w_hh_untransposed": whole("rnn_cell", """
def rnn_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    a = x @ weight_ih.T + h @ weight_hh""" + BIASES + """
    return torch.tanh(a)
""", RNN),
    # --------------------------------------------------------------- lstm_cell
    "gate_order_ifog": whole("lstm_cell", LSTM_HEAD + """
    i, f, o, g = a.chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_next), c_next
""", LSTM_CELL),
    "candidate_sigmoid": whole("lstm_cell", LSTM_HEAD + """
    i, f, g, o = a.chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.sigmoid(g)
    return torch.sigmoid(o) * torch.tanh(c_next), c_next
""", LSTM_CELL),
    "h_without_tanh": whole("lstm_cell", LSTM_HEAD + """
    i, f, g, o = a.chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * c_next, c_next
""", LSTM_CELL),
    "h_from_old_c": whole("lstm_cell", LSTM_HEAD + """
    i, f, g, o = a.chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c_next
""", LSTM_CELL),
    "lstm_bias_assumed": whole("lstm_cell", """
def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    i, f, g, o = (x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh).chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_next), c_next
""", LSTM_CELL),
    # -------------------------------------------------------------------- lstm
    "unroll_reuses_h0": whole("lstm", """
def lstm(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    outputs = []
    for x_t in x:
        h, c = lstm_cell(x_t, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
        outputs.append(h)
    return torch.stack(outputs), (h, c)
""", LSTM),
    "unroll_outputs_c": whole("lstm", """
def lstm(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    h, c, outputs = h0, c0, []
    for x_t in x:
        h, c = lstm_cell(x_t, h, c, weight_ih, weight_hh, bias_ih, bias_hh)
        outputs.append(c)
    return torch.stack(outputs), (h, c)
""", LSTM),
    "unroll_batch_first": whole("lstm", """
def lstm(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    h, c, outputs = h0, c0, []
    for x_t in x:
        h, c = lstm_cell(x_t, h, c, weight_ih, weight_hh, bias_ih, bias_hh)
        outputs.append(h)
    return torch.stack(outputs, dim=-2), (h, c)
""", LSTM),
    # ---------------------------------------------------------------- gru_cell
    "gru_b_hn_outside_reset": whole("gru_cell", """
def gru_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    H = h.shape[-1]
    a_x, a_h = x @ weight_ih.T, h @ weight_hh.T
    b_ih = bias_ih if bias_ih is not None else torch.zeros(3 * H, dtype=x.dtype)
    b_hh = bias_hh if bias_hh is not None else torch.zeros(3 * H, dtype=x.dtype)
    r = torch.sigmoid(a_x[..., :H] + b_ih[:H] + a_h[..., :H] + b_hh[:H])
    z = torch.sigmoid(a_x[..., H:2 * H] + b_ih[H:2 * H] + a_h[..., H:2 * H] + b_hh[H:2 * H])
    n = torch.tanh(a_x[..., 2 * H:] + b_ih[2 * H:] + r * a_h[..., 2 * H:] + b_hh[2 * H:])
    return (1 - z) * n + z * h
""", GRU),
    "gru_update_swapped": whole("gru_cell", GRU_HEAD + """
    r = torch.sigmoid(gi[..., :h.shape[-1]] + gh[..., :h.shape[-1]])
    z = torch.sigmoid(gi.chunk(3, -1)[1] + gh.chunk(3, -1)[1])
    n = torch.tanh(gi.chunk(3, -1)[2] + r * gh.chunk(3, -1)[2])
    return z * n + (1 - z) * h
""", GRU),
    "gru_order_zrn": whole("gru_cell", GRU_HEAD + """
    z_x, r_x, n_x = gi.chunk(3, dim=-1)
    z_h, r_h, n_h = gh.chunk(3, dim=-1)
    r, z = torch.sigmoid(r_x + r_h), torch.sigmoid(z_x + z_h)
    return (1 - z) * torch.tanh(n_x + r * n_h) + z * h
""", GRU),
    # ----------------------------------------------------- state_gradient_norms
    "bptt_one_step": whole("state_gradient_norms", GRAD_HEAD + """
    norms, h = [], h0
    for x_t in xs:
        h_in = h.detach().requires_grad_()
        h = step(x_t, h_in)
        norms.append(torch.autograd.grad(h.sum(), h_in)[0].norm())
    norms.append(torch.tensor(float(h.numel()), dtype=h.dtype).sqrt())
    return torch.stack(norms)
""", NORMS),
    "bptt_reversed": whole("state_gradient_norms", GRAD_HEAD + """
    states = [h0.detach().requires_grad_()]
    for x_t in xs:
        states.append(step(x_t, states[-1]))
    return torch.stack([g.norm() for g in torch.autograd.grad(states[-1].sum(), states)]).flip(0)
""", NORMS),
    "bptt_without_h0": whole("state_gradient_norms", GRAD_HEAD + """
    states, h = [], h0
    for x_t in xs:
        h = step(x_t, h.detach() if not states else h)
        states.append(h)
    return torch.stack([g.norm() for g in torch.autograd.grad(states[-1].sum(), states)])
""", NORMS),
    # right values, but the caller's input is overwritten
    "lstm_c_in_place": whole("lstm_cell", LSTM_HEAD + """
    i, f, g, o = a.chunk(4, dim=-1)
    c.mul_(torch.sigmoid(f)).add_(torch.sigmoid(i) * torch.tanh(g))
    return torch.sigmoid(o) * torch.tanh(c), c
""", LSTM_CELL),
}

CORRECT = {  # name -> a whole solution cell: other valid formulations that must keep full marks
    "rnn_linear": whole("rnn_cell", """
import torch.nn.functional as F

def rnn_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    return torch.tanh(F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh))
"""),
    "rnn_row_loop": whole("rnn_cell", """
def rnn_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    if x.dim() == 1:
        return rnn_cell(x[None], h[None], weight_ih, weight_hh, bias_ih, bias_hh)[0]
    rows = []
    for x_n, h_n in zip(x, h):
        a = torch.mv(weight_ih, x_n) + torch.mv(weight_hh, h_n)
        a = a + (bias_ih if bias_ih is not None else 0) + (bias_hh if bias_hh is not None else 0)
        rows.append(torch.tanh(a))
    return torch.stack(rows)
"""),
    "lstm_gate_slices": whole("lstm_cell", """
def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    H = h.shape[-1]
    def gate(k):
        rows = slice(k * H, (k + 1) * H)
        a = x @ weight_ih[rows].T + h @ weight_hh[rows].T
        for b in (bias_ih, bias_hh):
            a = a if b is None else a + b[rows]
        return a
    i, f, g, o = torch.sigmoid(gate(0)), torch.sigmoid(gate(1)), torch.tanh(gate(2)), torch.sigmoid(gate(3))
    c_next = f * c + i * g
    return o * torch.tanh(c_next), c_next
"""),
    "lstm_float32": whole("lstm_cell", """
def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    f32 = lambda t: None if t is None else t.float()
    x32, h32, c32, w_ih, w_hh, b_ih, b_hh = map(f32, (x, h, c, weight_ih, weight_hh, bias_ih, bias_hh))
    a = torch.cat([x32, h32], dim=-1) @ torch.cat([w_ih, w_hh], dim=1).T
    a = a + (0 if b_ih is None else b_ih) + (0 if b_hh is None else b_hh)
    i, f, g, o = a.chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c32 + torch.sigmoid(i) * torch.tanh(g)
    return (torch.sigmoid(o) * torch.tanh(c_next)).to(x.dtype), c_next.to(x.dtype)
"""),
    "unroll_preallocated": whole("lstm", """
def lstm(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    outputs = x.new_zeros(x.shape[:-1] + h0.shape[-1:])
    h, c = h0, c0
    for t in range(x.shape[0]):
        h, c = lstm_cell(x[t], h, c, weight_ih, weight_hh, bias_ih, bias_hh)
        outputs[t] = h
    return outputs, (h, c)
"""),
    "unroll_recursive": whole("lstm", """
def lstm(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    h, c = lstm_cell(x[0], h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    if len(x) == 1:
        return h[None], (h, c)
    rest, last = lstm(x[1:], h, c, weight_ih, weight_hh, bias_ih, bias_hh)
    return torch.cat([h[None], rest]), last
"""),
    "gru_interpolation": whole("gru_cell", GRU_HEAD + """
    H = h.shape[-1]
    r = torch.sigmoid(gi[..., :H] + gh[..., :H])
    z = torch.sigmoid(gi[..., H:2 * H] + gh[..., H:2 * H])
    n = torch.tanh(gi[..., 2 * H:] + r * gh[..., 2 * H:])
    return n + z * (h - n)
"""),
    "gru_float32_slices": whole("gru_cell", """
def gru_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    H = h.shape[-1]
    xf, hf = x.float(), h.float()
    def part(k, w, v, b):
        out = v @ w[k * H:(k + 1) * H].float().T
        return out if b is None else out + b[k * H:(k + 1) * H].float()
    r = torch.sigmoid(part(0, weight_ih, xf, bias_ih) + part(0, weight_hh, hf, bias_hh))
    z = torch.sigmoid(part(1, weight_ih, xf, bias_ih) + part(1, weight_hh, hf, bias_hh))
    n = torch.tanh(part(2, weight_ih, xf, bias_ih) + r * part(2, weight_hh, hf, bias_hh))
    return ((1 - z) * n + z * hf).to(h.dtype)
"""),
    "bptt_retain_grad": whole("state_gradient_norms", GRAD_HEAD + """
    states = [h0.clone().detach().requires_grad_(True)]
    for x_t in xs:
        states.append(step(x_t, states[-1]))
        states[-1].retain_grad()
    states[-1].sum().backward()
    return torch.tensor([s.grad.norm().item() for s in states], dtype=h0.dtype)
"""),
    "bptt_per_state_grad": whole("state_gradient_norms", GRAD_HEAD + """
    states = [h0.detach().requires_grad_()]
    for x_t in xs:
        states.append(step(x_t, states[-1]))
    loss = states[-1].sum()
    norms = [torch.autograd.grad(loss, s, retain_graph=True)[0].pow(2).sum().sqrt() for s in states]
    return torch.stack(norms).detach()
"""),
}

REFERENCE_CALLS = {  # name -> a whole solution cell that calls what the exercise asks to write
    "calls_torch_rnn_tanh_cell": whole("rnn_cell", """
def rnn_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    if x.dim() == 1:
        return rnn_cell(x[None], h[None], weight_ih, weight_hh, bias_ih, bias_hh)[0]
    return torch.rnn_tanh_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh)
""", RNN, calls="torch.rnn_tanh_cell"),
    "calls_nn_LSTMCell": whole("lstm_cell", """
def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    cell = nn.LSTMCell(weight_ih.shape[1], h.shape[-1], bias=bias_ih is not None).to(x.dtype)
    with torch.no_grad():
        cell.weight_ih.copy_(weight_ih)
        cell.weight_hh.copy_(weight_hh)
        if bias_ih is not None:
            cell.bias_ih.copy_(bias_ih)
            cell.bias_hh.copy_(bias_hh if bias_hh is not None else torch.zeros_like(bias_ih))
        return cell(x, (h, c))
""", LSTM_CELL, calls="torch.nn.LSTMCell"),
    "calls_dlcourse_lstm": whole("lstm", """
def lstm(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    from dlcourse.rnn import lstm as reference_lstm
    return reference_lstm(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
""", LSTM, calls="dlcourse.rnn.lstm"),
    "calls_dlcourse_gru_cell": whole("gru_cell", """
import dlcourse.rnn

def gru_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    return dlcourse.rnn.gru_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh)
""", GRU, calls="dlcourse.rnn.gru_cell"),
    "calls_torch_lstm_cell": whole("lstm_cell", """
def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    if x.dim() == 1:
        h1, c1 = lstm_cell(x[None], h[None], c[None], weight_ih, weight_hh, bias_ih, bias_hh)
        return h1[0], c1[0]
    return tuple(torch.lstm_cell(x, [h, c], weight_ih, weight_hh, bias_ih, bias_hh))
""", LSTM_CELL, calls="torch.lstm_cell"),
}

STUDENTS = {  # student -> the planted answers (at most one per function)
    "carol": ["rnn_sigmoid", "gate_order_ifog", "unroll_reuses_h0", "gru_b_hn_outside_reset", "bptt_one_step"],
    "dave": ["rnn_drops_bias_hh", "candidate_sigmoid", "unroll_outputs_c", "gru_update_swapped", "bptt_reversed"],
    "erin": ["rnn_bias_assumed", "h_without_tanh", "unroll_batch_first", "gru_order_zrn", "bptt_without_h0"],
    "frank": ["rnn_w_hh_untransposed", "h_from_old_c"],
    "gina": ["lstm_bias_assumed"],
    "grace": ["rnn_linear", "lstm_gate_slices", "unroll_preallocated", "gru_interpolation", "bptt_retain_grad"],
    "heidi": ["rnn_row_loop", "lstm_float32", "unroll_recursive", "gru_float32_slices", "bptt_per_state_grad"],
    "ivan": ["calls_torch_rnn_tanh_cell", "calls_nn_LSTMCell", "calls_dlcourse_gru_cell"],
    "judy": ["calls_torch_lstm_cell"],
    "kim": ["lstm_c_in_place"],
    "liam": ["calls_dlcourse_lstm"],   # alone: lstm's visible guard is used only when lstm_cell keeps the rules
}
VISIBLE_CHECKS_SAY = {
    ("carol", LSTM_CELL): ("wrong gate order", "i, f, o, g", "i, f, g, o"), ("carol", GRU): "r multiplies b_hn",
    ("dave", GRU): "z and 1 - z are swapped", ("kim", LSTM_CELL): "changed its input `c` in place"}

PS = ProblemSet(ASSIGNMENT, NOTEBOOK, POINTS, {"written_highway": 3}, MISTAKES, CORRECT, REFERENCE_CALLS, STUDENTS,
                VISIBLE_CHECKS_SAY)


class TestLstm(ProblemSetTests):
    ps = PS
