"""End to end: release ps_neurons, grade real submissions with nbgrader, check scores.

One course, one `nbgrader autograde` call. Besides the model answer (alice) and the
untouched release (bob), each student plants one classic mistake in several different
parts; those parts must score 0 and every other part keep its points:

    carol  no log-sum-exp shift (inf at 1000)  gradient not divided by N
           square loss averaged over classes    perceptron fires at w.x - t >= 0
    dave   loss summed over the batch           gradient t - y (sign)
           cross-entropy in bits (log2: 1.737)  threshold updated with the wrong sign
    erin   one shift for the whole batch        softmax without the shift (nan at 1000)
           t * log(y) (nan where y = 0, t = 0)  never stops early (always max_epochs passes)
    frank  shifts z in place (changes the input) softmax over the batch axis (dim=0)
           batch perceptron (one summed update per pass)
    gwen   correct, written differently: a loop over rows, one-hot rows of torch.eye,
           einsum and torch.where, an augmented weight vector in Python lists
    hugo   correct, written differently: a one-hot mask times log-softmax, the gradient
           from exp(log-softmax), float literals, torch.where in the perceptron
    ivan   calls the references: F.cross_entropy, torch.autograd.grad (on his own loss), F.mse_loss,
           dlcourse.losses.cross_entropy, dlcourse.neurons.perceptron_learning_rule
    judy   calls tensor methods that are references: z.logsumexp(...) and z.softmax(...)

The visible checks run the students' functions under the hidden tests' guard, so a reference call
(tensor methods included) or an input changed in place is reported before the student hands in.

The written answer (Part 5) is graded by hand; its key's numbers are checked in the source.
"""
import pytest

from nbgrader_harness import cell_output, graded_test_ids, make_course, model_answers, part_scores, plant, submit_class

ASSIGNMENT, NOTEBOOK = "ps_neurons", "neurons"
POINTS = {"test_cross_entropy": 3, "test_gradient": 3, "test_square_loss": 1, "test_cross_entropy_probs": 1,
          "test_perceptron": 3, "test_written_key": 0}

EDITS = {  # name -> (solution cell, [(old, new), ...]); every `old` must occur in the model answer
    "ce_no_shift": ("cross_entropy", [
        ("log_sum_exp = m.squeeze(1) + torch.log(torch.exp(z - m).sum(dim=1))",
         "log_sum_exp = torch.log(torch.exp(z).sum(dim=1))")]),
    "ce_summed_over_batch": ("cross_entropy", [("return (log_sum_exp - z_true).mean()", "return (log_sum_exp - z_true).sum()")]),
    "ce_one_shift_for_the_batch": ("cross_entropy", [
        ("m = z.max(dim=1, keepdim=True).values", "m = z.max() * torch.ones(z.shape[0], 1, dtype=z.dtype)")]),
    "ce_shifts_input_in_place": ("cross_entropy", [
        ("m = z.max(dim=1, keepdim=True).values\n    log_sum_exp = m.squeeze(1) + torch.log(torch.exp(z - m).sum(dim=1))",
         "m = z.max(dim=1, keepdim=True).values\n    z -= m\n    log_sum_exp = m.squeeze(1) + torch.log(torch.exp(z).sum(dim=1))"),
        ("z_true = z[torch.arange(z.shape[0]), target]", "z_true = z[torch.arange(z.shape[0]), target] + m.squeeze(1)")]),
    "grad_not_divided_by_n": ("gradient", [("return (y - one_hot) / z.shape[0]", "return y - one_hot")]),
    "grad_sign": ("gradient", [("return (y - one_hot) / z.shape[0]", "return (one_hot - y) / z.shape[0]")]),
    "grad_softmax_without_shift": ("gradient", [("e = torch.exp(z - z.max(dim=1, keepdim=True).values)", "e = torch.exp(z)")]),
    "grad_softmax_over_batch": ("gradient", [("y = e / e.sum(dim=1, keepdim=True)", "y = e / e.sum(dim=0, keepdim=True)")]),
    "square_mean_over_classes": ("deck", [("return ((t - y) ** 2).sum(dim=1)", "return ((t - y) ** 2).mean(dim=1)")]),
    "ce_probs_in_bits": ("deck", [("return -torch.xlogy(t, y).sum(dim=1)", "return -torch.xlogy(t, y).sum(dim=1) / math.log(2)")]),
    "ce_probs_nan_at_zero": ("deck", [("return -torch.xlogy(t, y).sum(dim=1)", "return -(t * torch.log(y)).sum(dim=1)")]),
    "perceptron_fires_at_zero": ("perceptron", [("if (xi @ w).item() - t > 0 else", "if (xi @ w).item() - t >= 0 else")]),
    "perceptron_threshold_sign": ("perceptron", [("t = t - lr * error", "t = t + lr * error")]),
    "perceptron_never_stops_early": ("perceptron", [("        if mistakes == 0:\n            return w, t, epoch\n", "")]),
}
BATCH_PERCEPTRON = """
def perceptron_train(x, y, lr=1.0, max_epochs=100):
    w = torch.zeros(x.shape[1], dtype=x.dtype)
    t = 0.0
    for epoch in range(1, max_epochs + 1):
        errors = y - ((x @ w - t) > 0).to(x.dtype)  # every prediction with the same w, t
        if not errors.any():
            return w, t, epoch
        w = w + lr * (errors[:, None] * x).sum(dim=0)  # one summed update per pass
        t = t - lr * errors.sum().item()
    return w, t, max_epochs
"""
WHOLE = {"perceptron_batch_update": ("perceptron", BATCH_PERCEPTRON)}
MISTAKES = {  # student -> (mistakes, the parts that must score 0)
    "carol": (["ce_no_shift", "grad_not_divided_by_n", "square_mean_over_classes", "perceptron_fires_at_zero"],
              ["test_cross_entropy", "test_gradient", "test_square_loss", "test_perceptron"]),
    "dave": (["ce_summed_over_batch", "grad_sign", "ce_probs_in_bits", "perceptron_threshold_sign"],
             ["test_cross_entropy", "test_gradient", "test_cross_entropy_probs", "test_perceptron"]),
    "erin": (["ce_one_shift_for_the_batch", "grad_softmax_without_shift", "ce_probs_nan_at_zero",
              "perceptron_never_stops_early"],
             ["test_cross_entropy", "test_gradient", "test_cross_entropy_probs", "test_perceptron"]),
    "frank": (["ce_shifts_input_in_place", "grad_softmax_over_batch", "perceptron_batch_update"],
              ["test_cross_entropy", "test_gradient", "test_perceptron"]),
}
# mistakes the visible checks cannot see: only the hidden tests catch them
HIDDEN_ONLY = [("erin", "test_cross_entropy"), ("erin", "test_cross_entropy_probs"), ("erin", "test_perceptron")]

# ------------------------------------------------------------------- correct answers written differently
GWEN = {
    "cross_entropy": """
def cross_entropy_from_logits(z, target):
    losses = []
    for row, c in zip(z, target):
        m = row.max()
        losses.append(m + torch.log(torch.sum(torch.exp(row - m))) - row[c])
    return torch.stack(losses).mean()
""",
    "gradient": """
def cross_entropy_grad(z, target):
    shifted = z - z.max(dim=1, keepdim=True).values
    probs = torch.exp(shifted) / torch.exp(shifted).sum(dim=1, keepdim=True)
    return (probs - torch.eye(z.shape[1], dtype=z.dtype)[target]) / len(z)
""",
    "deck": """
def square_loss(y, t):
    d = t - y
    return torch.einsum("nc,nc->n", d, d)


def cross_entropy_probs(y, t):
    return -torch.where(t > 0, t * torch.log(y), torch.zeros_like(y)).sum(dim=1)


deck_square = float(square_loss(DECK_Y.unsqueeze(0), DECK_T.unsqueeze(0))[0])
deck_cross_entropy = float(cross_entropy_probs(DECK_Y.unsqueeze(0), DECK_T.unsqueeze(0))[0])
""",
    "perceptron": """
def perceptron_train(x, y, lr=1.0, max_epochs=100):
    rows, labels = x.tolist(), y.tolist()
    v = [0.0] * (len(rows[0]) + 1)  # the weights, then the threshold as the weight of a constant input -1
    for epoch in range(1, max_epochs + 1):
        clean = True
        for row, label in zip(rows, labels):
            aug = row + [-1.0]
            pred = 1.0 if sum(a * b for a, b in zip(v, aug)) > 0 else 0.0
            if pred != label:
                clean = False
                v = [vi + lr * (label - pred) * ai for vi, ai in zip(v, aug)]
        if clean:
            break
    return torch.tensor(v[:-1], dtype=x.dtype), float(v[-1]), epoch
""",
}
HUGO = {
    "cross_entropy": """
def cross_entropy_from_logits(z, target):
    n, c = z.shape
    shifted = z - z.amax(dim=-1, keepdim=True)
    log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))
    mask = torch.zeros(n, c, dtype=z.dtype)
    mask[range(n), target] = 1
    return -(mask * log_probs).sum() / n
""",
    "gradient": """
def cross_entropy_grad(z, target):
    shifted = z - z.amax(dim=-1, keepdim=True)
    probs = torch.exp(shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True)))
    grad = probs.clone()
    grad[torch.arange(len(target)), target] -= 1
    return grad / z.shape[0]
""",
    "perceptron": """
def perceptron_train(x, y, lr=1.0, max_epochs=100):
    w, t = x.new_zeros(x.shape[1]), 0.0
    for epoch in range(max_epochs):
        changed = False
        for i in range(x.shape[0]):
            fired = torch.where(torch.dot(x[i], w) - t > 0, 1.0, 0.0).item()
            if fired != y[i].item():
                step = lr * (y[i].item() - fired)
                w, t, changed = w + step * x[i], t - step, True
        if not changed:
            return w, t, epoch + 1
    return w, t, max_epochs
""",
}
VARIANTS = {"gwen": GWEN, "hugo": HUGO}

# ------------------------------------------------------------------------- answers that call the reference
IVAN = {
    "cross_entropy": """
import torch.nn.functional as F


def cross_entropy_from_logits(z, target):
    return F.cross_entropy(z, target)
""",
    "gradient": """
def cross_entropy_grad(z, target):
    z = z.detach().requires_grad_()
    m = z.detach().max(dim=1, keepdim=True).values
    loss = (m.squeeze(1) + torch.log(torch.exp(z - m).sum(dim=1)) - z[torch.arange(len(z)), target]).mean()
    (grad,) = torch.autograd.grad(loss, z)
    return grad
""",
    "deck": """
from dlcourse.losses import cross_entropy


def square_loss(y, t):
    return torch.nn.functional.mse_loss(y, t, reduction="none").sum(dim=1)


def cross_entropy_probs(y, t):
    return cross_entropy(y, t, reduction="none")


deck_square = square_loss(DECK_Y[None], DECK_T[None]).item()
deck_cross_entropy = cross_entropy_probs(DECK_Y[None], DECK_T[None]).item()
""",
    "perceptron": """
from dlcourse.neurons import perceptron_learning_rule


def perceptron_train(x, y, lr=1.0, max_epochs=100):
    fit = perceptron_learning_rule(x, y, lr=lr, max_epochs=max_epochs)
    return fit.w, fit.t, fit.epochs
""",
}
JUDY = {
    "cross_entropy": """
def cross_entropy_from_logits(z, target):
    return (z.logsumexp(dim=1) - z[torch.arange(len(z)), target]).mean()
""",
    "gradient": """
def cross_entropy_grad(z, target):
    grad = z.softmax(dim=1)
    grad[torch.arange(len(z)), target] -= 1
    return grad / len(z)
""",
}
REFERENCE_CALLERS = {"ivan": (IVAN, ["test_cross_entropy", "test_gradient", "test_square_loss",
                                     "test_cross_entropy_probs", "test_perceptron"]),
                     "judy": (JUDY, ["test_cross_entropy", "test_gradient"])}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("course"), [ASSIGNMENT])
    answers = model_answers(course, ASSIGNMENT, NOTEBOOK)
    planted = {student: plant(mistakes, EDITS, WHOLE, answers) for student, (mistakes, _) in MISTAKES.items()}
    callers = {student: cells for student, (cells, _) in REFERENCE_CALLERS.items()}
    submit_class(course, ASSIGNMENT, NOTEBOOK, {**planted, **VARIANTS, **callers})
    autograde = course.autograde(ASSIGNMENT, cell_timeout=60)
    return course, autograde, course.scores(ASSIGNMENT, NOTEBOOK)


def parts(scores, student):
    return part_scores(scores, student, POINTS)


def output(course, student, part):
    return cell_output(course, student, ASSIGNMENT, NOTEBOOK, part)


def test_point_table_matches_the_notebook(graded):
    course, *_ = graded
    assert graded_test_ids(course, ASSIGNMENT, NOTEBOOK) == list(POINTS)


def test_table_sizes():
    planted = [m for mistakes, _ in MISTAKES.values() for m in mistakes]
    assert sorted(planted) == sorted([*EDITS, *WHOLE]), "every mistake is planted exactly once"
    assert len(planted) >= 10
    assert sum(len(cells) for cells in VARIANTS.values()) >= 4, "at least 4 correct answers written differently"


def test_full_solution_gets_full_marks(graded):
    _, autograde, scores = graded
    assert parts(scores, "alice") == POINTS, autograde.stdout[-3000:] + autograde.stderr[-3000:]
    assert scores["alice"]["max"]["written_losses"] == 2  # the written answer waits for a human


def test_untouched_release_gets_zero(graded):
    *_, scores = graded
    assert parts(scores, "bob") == dict.fromkeys(POINTS, 0)


@pytest.mark.parametrize("student", sorted(MISTAKES))
def test_each_mistake_costs_exactly_its_part(graded, student):
    *_, scores = graded
    mistakes, zeroed = MISTAKES[student]
    expected = {part: 0 if part in zeroed else pts for part, pts in POINTS.items()}
    assert parts(scores, student) == expected, f"{student} ({', '.join(mistakes)})"


@pytest.mark.parametrize("student,part", HIDDEN_ONLY)
def test_hidden_tests_catch_what_the_visible_checks_miss(graded, student, part):
    course, *_ = graded
    text, errors = output(course, student, part)
    assert "visible checks passed" in text, f"{student} {part}: {text!r}"
    assert errors and errors[0].ename == "AssertionError" and errors[0].evalue, f"{student} {part}: no explanation"


@pytest.mark.parametrize("student", sorted(VARIANTS))
def test_correct_variants_keep_full_marks(graded, student):
    *_, scores = graded
    assert parts(scores, student) == POINTS, f"{student}: {', '.join(VARIANTS[student])} written differently"


@pytest.mark.parametrize("student", sorted(REFERENCE_CALLERS))
def test_calling_the_reference_scores_zero_on_that_part_with_a_reason(graded, student):
    course, _, scores = graded
    _, zeroed = REFERENCE_CALLERS[student]
    assert parts(scores, student) == {p: 0 if p in zeroed else pts for p, pts in POINTS.items()}
    for part in zeroed:
        text, errors = output(course, student, part)
        assert "visible checks passed" not in text, f"{student} {part}: the visible check should already name the call"
        assert errors and errors[0].ename == "ReferenceUsedError", f"{student} {part}: {errors}"
        assert "reference implementation" in errors[0].evalue and "scores 0" in errors[0].evalue


def test_in_place_change_of_the_input_is_reported(graded):
    course, *_ = graded
    _, errors = output(course, "frank", "test_cross_entropy")
    assert errors and errors[0].ename == "InputModifiedError" and "in place" in errors[0].evalue


@pytest.mark.parametrize("student, part, phrase", [
    ("dave", "test_cross_entropy", "summed over the batch"), ("dave", "test_gradient", "the sign is wrong"),
    ("carol", "test_gradient", "not divided by N"), ("carol", "test_square_loss", "averaged over the classes"),
    ("dave", "test_cross_entropy_probs", "log base 2")])
def test_the_visible_checks_name_the_common_slips(graded, student, part, phrase):
    course, *_ = graded
    text, errors = output(course, student, part)
    assert "visible checks passed" not in text and errors and phrase in errors[0].evalue, (student, part, text, errors)
