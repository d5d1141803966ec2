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
from ps_grading_harness import ProblemSet, ProblemSetTests, edit, whole

ASSIGNMENT, NOTEBOOK = "ps_neurons", "neurons"
POINTS = {"test_cross_entropy": 3, "test_gradient": 3, "test_square_loss": 1, "test_cross_entropy_probs": 1,
          "test_perceptron": 3, "test_written_key": 0}
CE, GRAD, SQUARE, PROBS, PERCEPTRON, _ = POINTS

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
MISTAKES = {  # name -> string edits of the model answer, or a whole cell, and the part it costs
    "ce_no_shift": edit("cross_entropy", [
        ("log_sum_exp = m.squeeze(1) + torch.log(torch.exp(z - m).sum(dim=1))",
         "log_sum_exp = torch.log(torch.exp(z).sum(dim=1))")], CE),
    "ce_summed_over_batch": edit("cross_entropy", [
        ("return (log_sum_exp - z_true).mean()", "return (log_sum_exp - z_true).sum()")], CE),
    "ce_one_shift_for_the_batch": edit("cross_entropy", [
        ("m = z.max(dim=1, keepdim=True).values", "m = z.max() * torch.ones(z.shape[0], 1, dtype=z.dtype)")], CE),
    "ce_shifts_input_in_place": edit("cross_entropy", [
        ("m = z.max(dim=1, keepdim=True).values\n    log_sum_exp = m.squeeze(1) + torch.log(torch.exp(z - m).sum(dim=1))",
         "m = z.max(dim=1, keepdim=True).values\n    z -= m\n    log_sum_exp = m.squeeze(1) + torch.log(torch.exp(z).sum(dim=1))"),
        ("z_true = z[torch.arange(z.shape[0]), target]", "z_true = z[torch.arange(z.shape[0]), target] + m.squeeze(1)")], CE),
    "grad_not_divided_by_n": edit("gradient", [("return (y - one_hot) / z.shape[0]", "return y - one_hot")], GRAD),
    "grad_sign": edit("gradient", [("return (y - one_hot) / z.shape[0]", "return (one_hot - y) / z.shape[0]")], GRAD),
    "grad_softmax_without_shift": edit("gradient", [
        ("e = torch.exp(z - z.max(dim=1, keepdim=True).values)", "e = torch.exp(z)")], GRAD),
    "grad_softmax_over_batch": edit("gradient", [
        ("y = e / e.sum(dim=1, keepdim=True)", "y = e / e.sum(dim=0, keepdim=True)")], GRAD),
    "square_mean_over_classes": edit("deck", [
        ("return ((t - y) ** 2).sum(dim=1)", "return ((t - y) ** 2).mean(dim=1)")], SQUARE),
    "ce_probs_in_bits": edit("deck", [
        ("return -torch.xlogy(t, y).sum(dim=1)", "return -torch.xlogy(t, y).sum(dim=1) / math.log(2)")], PROBS),
    "ce_probs_nan_at_zero": edit("deck", [
        ("return -torch.xlogy(t, y).sum(dim=1)", "return -(t * torch.log(y)).sum(dim=1)")], PROBS),
    "perceptron_fires_at_zero": edit("perceptron", [
        ("if (xi @ w).item() - t > 0 else", "if (xi @ w).item() - t >= 0 else")], PERCEPTRON),
    "perceptron_threshold_sign": edit("perceptron", [("t = t - lr * error", "t = t + lr * error")], PERCEPTRON),
    "perceptron_never_stops_early": edit("perceptron", [
        ("        if mistakes == 0:\n            return w, t, epoch\n", "")], PERCEPTRON),
    "perceptron_batch_update": whole("perceptron", BATCH_PERCEPTRON, PERCEPTRON),
}

CORRECT = {  # gwen
    "ce_loop_over_rows": whole("cross_entropy", """
def cross_entropy_from_logits(z, target):
    losses = []
    for row, c in zip(z, target):
        m = row.max()
        losses.append(m + torch.log(torch.sum(torch.exp(row - m))) - row[c])
    return torch.stack(losses).mean()
"""),
    "grad_one_hot_rows_of_eye": whole("gradient", """
def cross_entropy_grad(z, target):
    shifted = z - z.max(dim=1, keepdim=True).values
    probs = torch.exp(shifted) / torch.exp(shifted).sum(dim=1, keepdim=True)
    return (probs - torch.eye(z.shape[1], dtype=z.dtype)[target]) / len(z)
"""),
    "deck_einsum_and_where": whole("deck", """
def square_loss(y, t):
    d = t - y
    return torch.einsum("nc,nc->n", d, d)


def cross_entropy_probs(y, t):
    return -torch.where(t > 0, t * torch.log(y), torch.zeros_like(y)).sum(dim=1)


deck_square = float(square_loss(DECK_Y.unsqueeze(0), DECK_T.unsqueeze(0))[0])
deck_cross_entropy = float(cross_entropy_probs(DECK_Y.unsqueeze(0), DECK_T.unsqueeze(0))[0])
"""),
    "perceptron_augmented_weights_in_lists": whole("perceptron", """
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
"""),
    # hugo
    "ce_one_hot_mask_times_log_softmax": whole("cross_entropy", """
def cross_entropy_from_logits(z, target):
    n, c = z.shape
    shifted = z - z.amax(dim=-1, keepdim=True)
    log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))
    mask = torch.zeros(n, c, dtype=z.dtype)
    mask[range(n), target] = 1
    return -(mask * log_probs).sum() / n
"""),
    "grad_from_exp_of_log_softmax": whole("gradient", """
def cross_entropy_grad(z, target):
    shifted = z - z.amax(dim=-1, keepdim=True)
    probs = torch.exp(shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True)))
    grad = probs.clone()
    grad[torch.arange(len(target)), target] -= 1
    return grad / z.shape[0]
"""),
    "perceptron_torch_where_float_literals": whole("perceptron", """
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
"""),
}

REFERENCE_CALLS = {  # ivan
    "ce_F_cross_entropy": whole("cross_entropy", """
import torch.nn.functional as F


def cross_entropy_from_logits(z, target):
    return F.cross_entropy(z, target)
""", CE, calls="torch.nn.functional.cross_entropy"),
    "grad_torch_autograd_grad": whole("gradient", """
def cross_entropy_grad(z, target):
    z = z.detach().requires_grad_()
    m = z.detach().max(dim=1, keepdim=True).values
    loss = (m.squeeze(1) + torch.log(torch.exp(z - m).sum(dim=1)) - z[torch.arange(len(z)), target]).mean()
    (grad,) = torch.autograd.grad(loss, z)
    return grad
""", GRAD, calls="torch.autograd.grad"),
    "deck_mse_loss_and_dlcourse_cross_entropy": whole("deck", """
from dlcourse.losses import cross_entropy


def square_loss(y, t):
    return torch.nn.functional.mse_loss(y, t, reduction="none").sum(dim=1)


def cross_entropy_probs(y, t):
    return cross_entropy(y, t, reduction="none")


deck_square = square_loss(DECK_Y[None], DECK_T[None]).item()
deck_cross_entropy = cross_entropy_probs(DECK_Y[None], DECK_T[None]).item()
""", SQUARE, PROBS),
    "perceptron_dlcourse": whole("perceptron", """
from dlcourse.neurons import perceptron_learning_rule


def perceptron_train(x, y, lr=1.0, max_epochs=100):
    fit = perceptron_learning_rule(x, y, lr=lr, max_epochs=max_epochs)
    return fit.w, fit.t, fit.epochs
""", PERCEPTRON, calls="dlcourse.neurons.perceptron_learning_rule"),
    # judy: tensor methods that are references
    "ce_tensor_logsumexp": whole("cross_entropy", """
def cross_entropy_from_logits(z, target):
    return (z.logsumexp(dim=1) - z[torch.arange(len(z)), target]).mean()
""", CE, calls="torch.logsumexp (through the Tensor method .logsumexp)"),
    "grad_tensor_softmax": whole("gradient", """
def cross_entropy_grad(z, target):
    grad = z.softmax(dim=1)
    grad[torch.arange(len(z)), target] -= 1
    return grad / len(z)
""", GRAD, calls="torch.softmax (through the Tensor method .softmax)"),
}

STUDENTS = {
    "carol": ["ce_no_shift", "grad_not_divided_by_n", "square_mean_over_classes", "perceptron_fires_at_zero"],
    "dave": ["ce_summed_over_batch", "grad_sign", "ce_probs_in_bits", "perceptron_threshold_sign"],
    "erin": ["ce_one_shift_for_the_batch", "grad_softmax_without_shift", "ce_probs_nan_at_zero",
             "perceptron_never_stops_early"],
    "frank": ["ce_shifts_input_in_place", "grad_softmax_over_batch", "perceptron_batch_update"],
    "gwen": ["ce_loop_over_rows", "grad_one_hot_rows_of_eye", "deck_einsum_and_where",
             "perceptron_augmented_weights_in_lists"],
    "hugo": ["ce_one_hot_mask_times_log_softmax", "grad_from_exp_of_log_softmax", "perceptron_torch_where_float_literals"],
    "ivan": ["ce_F_cross_entropy", "grad_torch_autograd_grad", "deck_mse_loss_and_dlcourse_cross_entropy",
             "perceptron_dlcourse"],
    "judy": ["ce_tensor_logsumexp", "grad_tensor_softmax"],
}
VISIBLE_CHECKS_SAY = {
    ("dave", CE): "summed over the batch", ("dave", GRAD): "the sign is wrong", ("carol", GRAD): "not divided by N",
    ("carol", SQUARE): "averaged over the classes", ("dave", PROBS): "log base 2"}
# mistakes the visible checks cannot see: only the hidden tests catch them (with a message)
HIDDEN_TESTS_SAY = {("erin", CE): "of scale 500.0", ("erin", PROBS): "0 log 0 counts 0",
                    ("erin", PERCEPTRON): "stop after the first pass without a mistake"}

PS = ProblemSet(ASSIGNMENT, NOTEBOOK, POINTS, {"written_losses": 2}, MISTAKES, CORRECT, REFERENCE_CALLS, STUDENTS,
                VISIBLE_CHECKS_SAY, HIDDEN_TESTS_SAY, banner="visible checks passed", cell_timeout=60)


class TestNeurons(ProblemSetTests):
    ps = PS

    def test_in_place_change_of_the_input_is_reported(self, graded):
        cell = graded.cell("frank", "test_cross_entropy")
        assert cell.ename == "InputModifiedError" and "in place" in cell.error
