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
import nbformat
import pytest

from nbgrader_harness import graded_test_ids, make_course, part_scores, submit_class

ASSIGNMENT, NOTEBOOK = "ps_lstm", "lstm"
POINTS = {"test_rnn_cell": 2, "test_lstm_cell": 3, "test_lstm": 2, "test_gru_cell": 3,
          "test_state_gradient_norms": 2, "test_written_key": 0}
PART_OF = {"rnn_cell": "test_rnn_cell", "lstm_cell": "test_lstm_cell", "lstm": "test_lstm",
           "gru_cell": "test_gru_cell", "state_gradient_norms": "test_state_gradient_norms"}

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

WRONG = {  # name -> (function, source)
    # ---------------------------------------------------------------- rnn_cell
    "rnn_sigmoid": ("rnn_cell", """
def rnn_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    a = x @ weight_ih.T + h @ weight_hh.T""" + BIASES + """
    return torch.sigmoid(a)
"""),
    "rnn_drops_bias_hh": ("rnn_cell", """
def rnn_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    a = x @ weight_ih.T + h @ weight_hh.T
    if bias_ih is not None:
        a = a + bias_ih
    return torch.tanh(a)
"""),
    "rnn_bias_assumed": ("rnn_cell", """
def rnn_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    return torch.tanh(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh)
"""),
    "rnn_w_hh_untransposed": ("rnn_cell", """
def rnn_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    a = x @ weight_ih.T + h @ weight_hh""" + BIASES + """
    return torch.tanh(a)
"""),
    # --------------------------------------------------------------- lstm_cell
    "gate_order_ifog": ("lstm_cell", LSTM_HEAD + """
    i, f, o, g = a.chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_next), c_next
"""),
    "candidate_sigmoid": ("lstm_cell", LSTM_HEAD + """
    i, f, g, o = a.chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.sigmoid(g)
    return torch.sigmoid(o) * torch.tanh(c_next), c_next
"""),
    "h_without_tanh": ("lstm_cell", LSTM_HEAD + """
    i, f, g, o = a.chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * c_next, c_next
"""),
    "h_from_old_c": ("lstm_cell", LSTM_HEAD + """
    i, f, g, o = a.chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c_next
"""),
    "lstm_bias_assumed": ("lstm_cell", """
def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    i, f, g, o = (x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh).chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_next), c_next
"""),
    # -------------------------------------------------------------------- lstm
    "unroll_reuses_h0": ("lstm", """
def lstm(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    outputs = []
    for x_t in x:
        h, c = lstm_cell(x_t, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
        outputs.append(h)
    return torch.stack(outputs), (h, c)
"""),
    "unroll_outputs_c": ("lstm", """
def lstm(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    h, c, outputs = h0, c0, []
    for x_t in x:
        h, c = lstm_cell(x_t, h, c, weight_ih, weight_hh, bias_ih, bias_hh)
        outputs.append(c)
    return torch.stack(outputs), (h, c)
"""),
    "unroll_batch_first": ("lstm", """
def lstm(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    h, c, outputs = h0, c0, []
    for x_t in x:
        h, c = lstm_cell(x_t, h, c, weight_ih, weight_hh, bias_ih, bias_hh)
        outputs.append(h)
    return torch.stack(outputs, dim=-2), (h, c)
"""),
    # ---------------------------------------------------------------- gru_cell
    "gru_b_hn_outside_reset": ("gru_cell", """
def gru_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    H = h.shape[-1]
    a_x, a_h = x @ weight_ih.T, h @ weight_hh.T
    b_ih = bias_ih if bias_ih is not None else torch.zeros(3 * H, dtype=x.dtype)
    b_hh = bias_hh if bias_hh is not None else torch.zeros(3 * H, dtype=x.dtype)
    r = torch.sigmoid(a_x[..., :H] + b_ih[:H] + a_h[..., :H] + b_hh[:H])
    z = torch.sigmoid(a_x[..., H:2 * H] + b_ih[H:2 * H] + a_h[..., H:2 * H] + b_hh[H:2 * H])
    n = torch.tanh(a_x[..., 2 * H:] + b_ih[2 * H:] + r * a_h[..., 2 * H:] + b_hh[2 * H:])
    return (1 - z) * n + z * h
"""),
    "gru_update_swapped": ("gru_cell", GRU_HEAD + """
    r = torch.sigmoid(gi[..., :h.shape[-1]] + gh[..., :h.shape[-1]])
    z = torch.sigmoid(gi.chunk(3, -1)[1] + gh.chunk(3, -1)[1])
    n = torch.tanh(gi.chunk(3, -1)[2] + r * gh.chunk(3, -1)[2])
    return z * n + (1 - z) * h
"""),
    "gru_order_zrn": ("gru_cell", GRU_HEAD + """
    z_x, r_x, n_x = gi.chunk(3, dim=-1)
    z_h, r_h, n_h = gh.chunk(3, dim=-1)
    r, z = torch.sigmoid(r_x + r_h), torch.sigmoid(z_x + z_h)
    return (1 - z) * torch.tanh(n_x + r * n_h) + z * h
"""),
    # ----------------------------------------------------- state_gradient_norms
    "bptt_one_step": ("state_gradient_norms", GRAD_HEAD + """
    norms, h = [], h0
    for x_t in xs:
        h_in = h.detach().requires_grad_()
        h = step(x_t, h_in)
        norms.append(torch.autograd.grad(h.sum(), h_in)[0].norm())
    norms.append(torch.tensor(float(h.numel()), dtype=h.dtype).sqrt())
    return torch.stack(norms)
"""),
    "bptt_reversed": ("state_gradient_norms", GRAD_HEAD + """
    states = [h0.detach().requires_grad_()]
    for x_t in xs:
        states.append(step(x_t, states[-1]))
    return torch.stack([g.norm() for g in torch.autograd.grad(states[-1].sum(), states)]).flip(0)
"""),
    "bptt_without_h0": ("state_gradient_norms", GRAD_HEAD + """
    states, h = [], h0
    for x_t in xs:
        h = step(x_t, h.detach() if not states else h)
        states.append(h)
    return torch.stack([g.norm() for g in torch.autograd.grad(states[-1].sum(), states)])
"""),
}

CORRECT = {  # name -> (function, source): other valid formulations that must keep full marks
    "rnn_linear": ("rnn_cell", """
import torch.nn.functional as F

def rnn_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    return torch.tanh(F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh))
"""),
    "rnn_row_loop": ("rnn_cell", """
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
    "lstm_gate_slices": ("lstm_cell", """
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
    "lstm_float32": ("lstm_cell", """
def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    f32 = lambda t: None if t is None else t.float()
    x32, h32, c32, w_ih, w_hh, b_ih, b_hh = map(f32, (x, h, c, weight_ih, weight_hh, bias_ih, bias_hh))
    a = torch.cat([x32, h32], dim=-1) @ torch.cat([w_ih, w_hh], dim=1).T
    a = a + (0 if b_ih is None else b_ih) + (0 if b_hh is None else b_hh)
    i, f, g, o = a.chunk(4, dim=-1)
    c_next = torch.sigmoid(f) * c32 + torch.sigmoid(i) * torch.tanh(g)
    return (torch.sigmoid(o) * torch.tanh(c_next)).to(x.dtype), c_next.to(x.dtype)
"""),
    "unroll_preallocated": ("lstm", """
def lstm(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    outputs = x.new_zeros(x.shape[:-1] + h0.shape[-1:])
    h, c = h0, c0
    for t in range(x.shape[0]):
        h, c = lstm_cell(x[t], h, c, weight_ih, weight_hh, bias_ih, bias_hh)
        outputs[t] = h
    return outputs, (h, c)
"""),
    "unroll_recursive": ("lstm", """
def lstm(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    h, c = lstm_cell(x[0], h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    if len(x) == 1:
        return h[None], (h, c)
    rest, last = lstm(x[1:], h, c, weight_ih, weight_hh, bias_ih, bias_hh)
    return torch.cat([h[None], rest]), last
"""),
    "gru_interpolation": ("gru_cell", GRU_HEAD + """
    H = h.shape[-1]
    r = torch.sigmoid(gi[..., :H] + gh[..., :H])
    z = torch.sigmoid(gi[..., H:2 * H] + gh[..., H:2 * H])
    n = torch.tanh(gi[..., 2 * H:] + r * gh[..., 2 * H:])
    return n + z * (h - n)
"""),
    "gru_float32_slices": ("gru_cell", """
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
    "bptt_retain_grad": ("state_gradient_norms", GRAD_HEAD + """
    states = [h0.clone().detach().requires_grad_(True)]
    for x_t in xs:
        states.append(step(x_t, states[-1]))
        states[-1].retain_grad()
    states[-1].sum().backward()
    return torch.tensor([s.grad.norm().item() for s in states], dtype=h0.dtype)
"""),
    "bptt_per_state_grad": ("state_gradient_norms", GRAD_HEAD + """
    states = [h0.detach().requires_grad_()]
    for x_t in xs:
        states.append(step(x_t, states[-1]))
    loss = states[-1].sum()
    norms = [torch.autograd.grad(loss, s, retain_graph=True)[0].pow(2).sum().sqrt() for s in states]
    return torch.stack(norms).detach()
"""),
}

IN_PLACE = {  # name -> (function, source): right values, but the caller's input is overwritten
    "lstm_c_in_place": ("lstm_cell", LSTM_HEAD + """
    i, f, g, o = a.chunk(4, dim=-1)
    c.mul_(torch.sigmoid(f)).add_(torch.sigmoid(i) * torch.tanh(g))
    return torch.sigmoid(o) * torch.tanh(c), c
"""),
}

REFERENCE_CALLS = {  # name -> (function, source): calls what the exercise asks to write
    "calls_torch_rnn_tanh_cell": ("rnn_cell", """
def rnn_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    if x.dim() == 1:
        return rnn_cell(x[None], h[None], weight_ih, weight_hh, bias_ih, bias_hh)[0]
    return torch.rnn_tanh_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh)
"""),
    "calls_nn_LSTMCell": ("lstm_cell", """
def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    cell = nn.LSTMCell(weight_ih.shape[1], h.shape[-1], bias=bias_ih is not None).to(x.dtype)
    with torch.no_grad():
        cell.weight_ih.copy_(weight_ih)
        cell.weight_hh.copy_(weight_hh)
        if bias_ih is not None:
            cell.bias_ih.copy_(bias_ih)
            cell.bias_hh.copy_(bias_hh if bias_hh is not None else torch.zeros_like(bias_ih))
        return cell(x, (h, c))
"""),
    "calls_dlcourse_lstm": ("lstm", """
def lstm(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    from dlcourse.rnn import lstm as reference_lstm
    return reference_lstm(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
"""),
    "calls_dlcourse_gru_cell": ("gru_cell", """
import dlcourse.rnn

def gru_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    return dlcourse.rnn.gru_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh)
"""),
    "calls_torch_lstm_cell": ("lstm_cell", """
def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    if x.dim() == 1:
        h1, c1 = lstm_cell(x[None], h[None], c[None], weight_ih, weight_hh, bias_ih, bias_hh)
        return h1[0], c1[0]
    return tuple(torch.lstm_cell(x, [h, c], weight_ih, weight_hh, bias_ih, bias_hh))
"""),
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
ANSWERS = {**WRONG, **CORRECT, **REFERENCE_CALLS, **IN_PLACE}


def expected_parts(student):
    lost = {PART_OF[ANSWERS[name][0]] for name in STUDENTS[student] if name not in CORRECT}
    return {part: 0 if part in lost else pts for part, pts in POINTS.items()}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("course"), [ASSIGNMENT])
    assert graded_test_ids(course, ASSIGNMENT, NOTEBOOK) == list(POINTS), "point table out of date"
    class_ = {student: dict(ANSWERS[name] for name in names) for student, names in STUDENTS.items()}
    for student, names in STUDENTS.items():
        assert len(class_[student]) == len(names), f"{student}: two planted answers in one function"
    submit_class(course, ASSIGNMENT, NOTEBOOK, class_)
    course.autograde(ASSIGNMENT)
    return course


@pytest.fixture(scope="module")
def scores(course):
    return course.scores(ASSIGNMENT, NOTEBOOK)


def parts(scores, student):
    return part_scores(scores, student, POINTS)


def cell_output(course, student, part) -> str:
    """The text a graded test cell printed or raised in a student's autograded notebook."""
    nb = nbformat.read(course.path("autograded", student, ASSIGNMENT, f"{NOTEBOOK}.ipynb"), as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == part:
            return "\n".join(o.get("text", "") + o.get("evalue", "") for o in cell.get("outputs", []))
    raise KeyError(part)


def test_table_sizes_and_every_answer_planted_once():
    assert len(WRONG) >= 10 and len(CORRECT) >= 4
    planted = [name for names in STUDENTS.values() for name in names]
    assert sorted(planted) == sorted(ANSWERS)
    assert set(PART_OF) == {function for function, _ in ANSWERS.values()}


def test_solution_gets_full_marks(scores):
    assert parts(scores, "alice") == POINTS
    assert scores["alice"]["auto_total"] == sum(POINTS.values())


def test_untouched_release_gets_zero(scores):
    assert parts(scores, "bob") == dict.fromkeys(POINTS, 0)


@pytest.mark.parametrize("student", sorted(STUDENTS))
def test_each_planted_answer_scores_exactly_as_expected(scores, student):
    assert parts(scores, student) == expected_parts(student), f"{student} ({', '.join(STUDENTS[student])})"


def test_correct_variants_keep_full_marks(scores):
    for student in ("grace", "heidi"):
        assert all(name in CORRECT for name in STUDENTS[student])
        assert parts(scores, student) == POINTS, student


def test_gate_order_mistake_is_named_by_the_visible_check(course):
    out = cell_output(course, "carol", "test_lstm_cell")
    assert "wrong gate order" in out and "i, f, o, g" in out and "i, f, g, o" in out, out


def test_gru_bias_mistake_is_named_by_the_visible_check(course):
    out = cell_output(course, "carol", "test_gru_cell")
    assert "r multiplies b_hn" in out, out


def test_gru_update_gate_swap_is_named_by_the_visible_check(course):
    out = cell_output(course, "dave", "test_gru_cell")
    assert "z and 1 - z are swapped" in out and "visible tests passed" not in out, out


def test_input_changed_in_place_scores_zero_and_the_visible_check_says_so(course, scores):
    assert parts(scores, "kim")["test_lstm_cell"] == 0
    out = cell_output(course, "kim", "test_lstm_cell")
    assert "changed its input `c` in place" in out and "visible tests passed" not in out, out


@pytest.mark.parametrize("student, part, reference", [
    ("ivan", "test_rnn_cell", "rnn_tanh_cell"), ("ivan", "test_lstm_cell", "LSTMCell"),
    ("liam", "test_lstm", "dlcourse.rnn.lstm"), ("ivan", "test_gru_cell", "dlcourse.rnn.gru_cell"),
    ("judy", "test_lstm_cell", "torch.lstm_cell")])
def test_reference_calls_score_zero_and_say_why(course, scores, student, part, reference):
    assert parts(scores, student)[part] == 0
    out = cell_output(course, student, part)
    assert "reference implementation" in out and reference in out, out
    assert "visible tests passed" not in out, "the visible check should already name the reference call"
