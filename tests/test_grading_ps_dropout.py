"""End to end: release ps_dropout, grade real submissions with nbgrader, check scores.

One course, six students, one `nbgrader autograde` call. Besides the model answer
(alice) and the untouched release (bob), each student makes three classic mistakes in
three different functions; the parts that test those functions must score 0 and every
other part must keep its points:

    carol  dropout: no 1/(1-p) rescaling         backward: forgets the 1/(1-p)
           sgd: v <- mu v + (1 - mu) g (a dampened average)
    dave   dropout: p taken as keep probability  classic: the slides' factor 1/(1+p)
           adam: no bias correction
    erin   dropout: rescales in eval mode too    backward: ignores the mask
           sgd: v <- mu v - lr g, w <- w + v (velocity measured in steps)
    frank  dropout: still drops in eval mode     classic: eval x/(1-p)
           adam: eps inside the square root
"""
import pytest

from nbgrader_harness import graded_test_ids, make_course, solved

ASSIGNMENT, NOTEBOOK = "ps_dropout", "dropout"
POINTS = {"test_dropout_train": 2, "test_dropout_eval": 1, "test_dropout_backward": 2,
          "test_classic_dropout": 2, "test_sgd_momentum": 2, "test_adam": 3}

CORRECT_EVAL = """
    if not training or p == 0:
        return x, torch.ones_like(x, dtype=torch.bool)
    if p == 1:
        return torch.zeros_like(x), torch.zeros_like(x, dtype=torch.bool)
"""
WRONG = {
    "no_rescale": ("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):""" + CORRECT_EVAL + """
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p
    return x * mask, mask
"""),
    "p_as_keep": ("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):""" + CORRECT_EVAL + """
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) < p
    return x * mask / p, mask
"""),
    "rescale_in_eval": ("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):
    if p == 1:
        return torch.zeros_like(x), torch.zeros_like(x, dtype=torch.bool)
    if not training:
        return x / (1 - p), torch.ones_like(x, dtype=torch.bool)
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p
    return x * mask / (1 - p), mask
"""),
    "drops_in_eval": ("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):
    if p == 1:
        return torch.zeros_like(x), torch.zeros_like(x, dtype=torch.bool)
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p
    return x * mask / (1 - p), mask
"""),
    "backward_no_scale": ("dropout_backward", """
def dropout_backward(grad_output, mask, p):
    return grad_output * mask
"""),
    "backward_no_mask": ("dropout_backward", """
def dropout_backward(grad_output, mask, p):
    if p == 1:
        return torch.zeros_like(grad_output)
    return grad_output / (1 - p)
"""),
    "slides_factor": ("classic_dropout", """
def classic_dropout(x, p, training=True, generator=None):
    if not training:
        return x / (1 + p)
    return x * (torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p)
"""),
    "inverted_factor": ("classic_dropout", """
def classic_dropout(x, p, training=True, generator=None):
    if not training:
        return x / (1 - p)
    return x * (torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p)
"""),
    "dampened_momentum": ("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    velocity = momentum * velocity + (1 - momentum) * grad
    return param - lr * velocity, velocity
"""),
    "velocity_in_steps": ("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    velocity = momentum * velocity - lr * grad
    return param + velocity, velocity
"""),
    "adam_no_bias_correction": ("adam_step", """
def adam_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    return param - lr * m / (v.sqrt() + eps), m, v
"""),
    "adam_eps_inside_sqrt": ("adam_step", """
def adam_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    return param - lr * m_hat / (v_hat + eps).sqrt(), m, v
"""),
}
STUDENTS = {  # student -> (mistakes, the parts that must score 0)
    "carol": (["no_rescale", "backward_no_scale", "dampened_momentum"],
              ["test_dropout_train", "test_dropout_backward", "test_sgd_momentum"]),
    "dave": (["p_as_keep", "slides_factor", "adam_no_bias_correction"],
             ["test_dropout_train", "test_classic_dropout", "test_adam"]),
    "erin": (["rescale_in_eval", "backward_no_mask", "velocity_in_steps"],
             ["test_dropout_eval", "test_dropout_backward", "test_sgd_momentum"]),
    "frank": (["drops_in_eval", "inverted_factor", "adam_eps_inside_sqrt"],
              ["test_dropout_eval", "test_classic_dropout", "test_adam"]),
}


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("course"), [ASSIGNMENT])
    assert graded_test_ids(course, ASSIGNMENT, NOTEBOOK) == list(POINTS), "point table out of date"
    course.submit("alice", ASSIGNMENT, NOTEBOOK, solved(course, ASSIGNMENT, NOTEBOOK))
    course.submit("bob", ASSIGNMENT, NOTEBOOK, course.read("exercises", ASSIGNMENT, f"{NOTEBOOK}.ipynb"))
    for student, (mistakes, _) in STUDENTS.items():
        overrides = dict(WRONG[m] for m in mistakes)
        assert len(overrides) == len(mistakes), f"{student}: two mistakes in one function"
        course.submit(student, ASSIGNMENT, NOTEBOOK, solved(course, ASSIGNMENT, NOTEBOOK, overrides))
    course.autograde(ASSIGNMENT)
    return course.scores(ASSIGNMENT, NOTEBOOK)


def parts(scores, student):
    assert scores[student]["graded"], f"{student}'s notebook was not graded"
    return {k: v for k, v in scores[student]["parts"].items() if k in POINTS}


def test_every_mistake_is_planted_once():
    planted = [m for mistakes, _ in STUDENTS.values() for m in mistakes]
    assert sorted(planted) == sorted(WRONG)


def test_solution_gets_full_marks(scores):
    assert parts(scores, "alice") == POINTS
    assert scores["alice"]["auto_total"] == sum(POINTS.values())


def test_untouched_release_gets_zero(scores):
    assert parts(scores, "bob") == dict.fromkeys(POINTS, 0)


@pytest.mark.parametrize("student", sorted(STUDENTS))
def test_each_mistake_costs_exactly_its_part(scores, student):
    mistakes, zeroed = STUDENTS[student]
    expected = {part: 0 if part in zeroed else pts for part, pts in POINTS.items()}
    assert parts(scores, student) == expected, f"{student} ({', '.join(mistakes)})"
