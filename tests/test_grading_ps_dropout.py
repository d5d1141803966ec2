"""End to end: release ps_dropout, grade real submissions with nbgrader, check scores.

One course, one `nbgrader autograde` call. The tests of the tests:

* MISTAKES: common wrong answers, each planted in one function; the part(s) that test it
  must score 0 and every other part keep its points. A student plants at most one answer per
  function and at most four wrong ones, so at least two parts prove that nothing spills over.
  Among them: updating `param`, `velocity`, `m`, `v` or `x` in place, which the text forbids.
* WARNED: a float 0/1 mask and a NumPy result lose their part with a message from a visible
  type/dtype check (not a raw RuntimeError/TypeError); the grader's copy shows it.
* REFERENCE_CALLS: answers built on torch.nn.functional.dropout, torch.nn.Dropout, torch.optim
  or dlcourse score 0 on their part, with the reason in the output.
* VARIANTS: correct answers written differently (torch.bernoulli + torch.where, float32
  uniforms for a mask, in-place updates of the function's own copies, torch.add(alpha=),
  torch.lerp / addcmul as torch.optim.Adam writes it): full marks.

    carol  dropout: no 1/(1-p) rescaling         backward: forgets the 1/(1-p)
           sgd: v <- mu v + (1 - mu) g (a dampened average)
    dave   dropout: p taken as keep probability  classic: the slides' factor 1/(1+p)
           adam: no bias correction              sgd: in place, but on its own copies (correct)
    erin   dropout: rescales in eval mode too    backward: ignores the mask
           sgd: v <- mu v - lr g, w <- w + v (velocity measured in steps)
    frank  dropout: still drops in eval mode     classic: eval x/(1-p)
           adam: eps inside the square root
    gina   dropout: x.mul_(mask) in place        backward: returns a NumPy array
           sgd: param.sub_(...) in place         adam: m.mul_(...), v.mul_(...) in place
    hugo   dropout: a float 0/1 mask             sgd: velocity.mul_(...).add_(...) in place
           classic: built on torch.nn.Dropout
    iris   dropout: built on F.dropout           sgd: built on torch.optim.SGD
           adam: calls dlcourse.optim.adam_step
    vera   every function written differently, all correct
"""
import pytest

from nbgrader_harness import grade_id, graded_test_ids, make_course, part_scores, submit_class

ASSIGNMENT, NOTEBOOK = "ps_dropout", "dropout"
POINTS = {"test_dropout_train": 2, "test_dropout_eval": 1, "test_dropout_backward": 2,
          "test_classic_dropout": 2, "test_sgd_momentum": 2, "test_adam": 3, "test_written_key": 0}

CORRECT_EVAL = """
    if not training or p == 0:
        return x, torch.ones_like(x, dtype=torch.bool)
    if p == 1:
        return torch.zeros_like(x), torch.zeros_like(x, dtype=torch.bool)
"""
# name -> (solution cell, source, the graded parts it costs)
MISTAKES = {
    "no_rescale": ("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):""" + CORRECT_EVAL + """
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p
    return x * mask, mask
""", ["test_dropout_train"]),
    "p_as_keep": ("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):""" + CORRECT_EVAL + """
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) < p
    return x * mask / p, mask
""", ["test_dropout_train"]),
    "rescale_in_eval": ("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):
    if p == 1:
        return torch.zeros_like(x), torch.zeros_like(x, dtype=torch.bool)
    if not training:
        return x / (1 - p), torch.ones_like(x, dtype=torch.bool)
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p
    return x * mask / (1 - p), mask
""", ["test_dropout_eval"]),
    "drops_in_eval": ("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):
    if p == 1:
        return torch.zeros_like(x), torch.zeros_like(x, dtype=torch.bool)
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p
    return x * mask / (1 - p), mask
""", ["test_dropout_eval"]),
    "x_in_place": ("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):""" + CORRECT_EVAL + """
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p
    x.mul_(mask).div_(1 - p)  # overwrites the caller's activations
    return x, mask
""", ["test_dropout_train"]),
    "backward_no_scale": ("dropout_backward", """
def dropout_backward(grad_output, mask, p):
    return grad_output * mask
""", ["test_dropout_backward"]),
    "backward_no_mask": ("dropout_backward", """
def dropout_backward(grad_output, mask, p):
    if p == 1:
        return torch.zeros_like(grad_output)
    return grad_output / (1 - p)
""", ["test_dropout_backward"]),
    "slides_factor": ("classic_dropout", """
def classic_dropout(x, p, training=True, generator=None):
    if not training:
        return x / (1 + p)
    return x * (torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p)
""", ["test_classic_dropout"]),
    "inverted_factor": ("classic_dropout", """
def classic_dropout(x, p, training=True, generator=None):
    if not training:
        return x / (1 - p)
    return x * (torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p)
""", ["test_classic_dropout"]),
    "dampened_momentum": ("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    velocity = momentum * velocity + (1 - momentum) * grad
    return param - lr * velocity, velocity
""", ["test_sgd_momentum"]),
    "velocity_in_steps": ("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    velocity = momentum * velocity - lr * grad
    return param + velocity, velocity
""", ["test_sgd_momentum"]),
    "param_in_place": ("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    velocity = momentum * velocity + grad
    param -= lr * velocity  # the caller's param changes too
    return param, velocity
""", ["test_sgd_momentum"]),
    "velocity_in_place": ("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    velocity.mul_(momentum).add_(grad)  # as torch.optim does it internally, but on the caller's tensor
    return param - lr * velocity, velocity
""", ["test_sgd_momentum"]),
    "adam_no_bias_correction": ("adam_step", """
def adam_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    return param - lr * m / (v.sqrt() + eps), m, v
""", ["test_adam"]),
    "adam_eps_inside_sqrt": ("adam_step", """
def adam_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    return param - lr * m_hat / (v_hat + eps).sqrt(), m, v
""", ["test_adam"]),
    "adam_moments_in_place": ("adam_step", """
def adam_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m.mul_(beta1).add_((1 - beta1) * grad)
    v.mul_(beta2).add_((1 - beta2) * grad * grad)
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v
""", ["test_adam"]),
}
# wrong in a way the visible checks name (type or dtype), never with a raw RuntimeError/TypeError
WARNED = {
    "float_mask": ("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):""" + CORRECT_EVAL + """
    mask = (torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p).float()  # 0/1 floats
    return x * mask / (1 - p), mask
""", ["test_dropout_train"], "mask: expected dtype torch.bool, got torch.float32"),
    "backward_numpy": ("dropout_backward", """
def dropout_backward(grad_output, mask, p):
    if p == 1:
        return torch.zeros_like(grad_output).numpy()
    return (grad_output * mask / (1 - p)).numpy()
""", ["test_dropout_backward"], "expected a torch.Tensor, got numpy.ndarray"),
}
IN_PLACE_MESSAGES = {"x_in_place": "changed its input `x` in place", "param_in_place": "changed its input `param`",
                     "velocity_in_place": "changed its input `velocity`", "adam_moments_in_place": "changed its input `m`"}
REFERENCE_CALLS = {
    "forward_F_dropout": ("dropout_forward", """
import torch.nn.functional as F
def dropout_forward(x, p, training=True, generator=None):""" + CORRECT_EVAL + """
    torch.manual_seed(int(torch.randint(2 ** 31, (1,), generator=generator)))  # reproducible via generator
    out = F.dropout(x, p)
    return out, out != 0
""", ["test_dropout_train"], "your code calls torch.nn.functional.dropout"),
    "classic_nn_Dropout": ("classic_dropout", """
def classic_dropout(x, p, training=True, generator=None):
    if not training:
        return x * (1 - p)
    return torch.nn.Dropout(p)(x) * (1 - p)
""", ["test_classic_dropout"], "your code calls torch.nn.Dropout"),
    "sgd_torch_optim": ("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    w = param.clone().requires_grad_(True)
    opt = torch.optim.SGD([w], lr=lr, momentum=momentum)
    if momentum:
        opt.state[w]["momentum_buffer"] = velocity.clone()
    w.grad = grad.clone()
    opt.step()
    return w.detach(), opt.state[w]["momentum_buffer"].clone() if momentum else grad.clone()
""", ["test_sgd_momentum"], "your code calls torch.optim.SGD"),
    "adam_dlcourse": ("adam_step", """
from dlcourse.optim import adam_step as course_adam
def adam_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    new, state = course_adam(param, grad, {"step": t - 1, "exp_avg": m, "exp_avg_sq": v}, lr=lr,
                             betas=(beta1, beta2), eps=eps)
    return new, state["exp_avg"], state["exp_avg_sq"]
""", ["test_adam"], "your code calls dlcourse.optim.adam_step"),
}
VARIANTS = {
    "forward_bernoulli_where": ("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):
    if not training:
        return x.clone(), torch.ones(x.shape, dtype=torch.bool)
    keep = torch.bernoulli(torch.full_like(x, 1 - p), generator=generator).bool()
    return torch.where(keep, x / max(1 - p, 1e-300), torch.zeros_like(x)), keep
"""),
    "backward_where": ("dropout_backward", """
def dropout_backward(grad_output, mask, p):
    scale = 0.0 if p == 1 else 1 / (1 - p)
    return torch.where(mask, grad_output * scale, torch.zeros_like(grad_output))
"""),
    "classic_float32_uniforms": ("classic_dropout", """
def classic_dropout(x, p, training=True, generator=None):
    if not training:
        return (1 - p) * x
    keep = torch.rand(x.shape, generator=generator) >= p  # float32 uniforms are fine for a mask
    return x * keep
"""),
    "sgd_in_place_on_copies": ("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    new_velocity = velocity.clone()
    new_velocity.mul_(momentum).add_(grad)   # in place, but on a copy of its own
    new_param = param.clone()
    new_param.sub_(lr * new_velocity)
    return new_param, new_velocity
"""),
    "sgd_torch_add_alpha": ("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    v = torch.add(grad, velocity, alpha=momentum)
    return torch.add(param, v, alpha=-lr), v
"""),
    "adam_lerp_addcmul": ("adam_step", """
def adam_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = torch.lerp(m, grad, 1 - beta1)                       # beta1 m + (1 - beta1) g
    v = torch.addcmul(v * beta2, grad, grad, value=1 - beta2)
    step_size = lr / (1 - beta1 ** t)
    denom = v.sqrt() / math.sqrt(1 - beta2 ** t) + eps       # torch.optim.Adam's arrangement
    return param - step_size * m / denom, m, v
"""),
}
STUDENTS = {  # student -> planted answers, at most one per function
    "carol": ["no_rescale", "backward_no_scale", "dampened_momentum"],
    "dave": ["p_as_keep", "slides_factor", "adam_no_bias_correction", "sgd_in_place_on_copies"],
    "erin": ["rescale_in_eval", "backward_no_mask", "velocity_in_steps"],
    "frank": ["drops_in_eval", "inverted_factor", "adam_eps_inside_sqrt"],
    "gina": ["x_in_place", "backward_numpy", "param_in_place", "adam_moments_in_place"],
    "hugo": ["float_mask", "velocity_in_place", "classic_nn_Dropout"],
    "iris": ["forward_F_dropout", "sgd_torch_optim", "adam_dlcourse"],
    "vera": ["forward_bernoulli_where", "backward_where", "classic_float32_uniforms", "sgd_torch_add_alpha",
             "adam_lerp_addcmul"],
}
TABLE = {**{k: v[:3] for k, v in MISTAKES.items()}, **{k: v[:3] for k, v in WARNED.items()},
         **{k: v[:3] for k, v in REFERENCE_CALLS.items()}, **{k: (*v, []) for k, v in VARIANTS.items()}}


def expected_parts(student):
    zeroed = {part for name in STUDENTS.get(student, []) for part in TABLE[name][2]}
    return {part: 0 if part in zeroed else pts for part, pts in POINTS.items()}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("course"), [ASSIGNMENT])
    class_ = {student: {TABLE[name][0]: TABLE[name][1] for name in names} for student, names in STUDENTS.items()}
    for student, names in STUDENTS.items():
        assert len(class_[student]) == len(names), f"{student}: two answers for one function"
    submit_class(course, ASSIGNMENT, NOTEBOOK, class_)
    course.autograde(ASSIGNMENT)
    return course, course.scores(ASSIGNMENT, NOTEBOOK)


def parts(scores, student):
    return part_scores(scores, student, POINTS)


def cell_output(course, student, gid):
    nb = course.read("autograded", student, ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    cell = next(c for c in nb.cells if grade_id(c) == gid)
    return "\n".join(o.get("text", "") + o.get("evalue", "") for o in cell.outputs)


def test_the_table_is_big_enough_and_every_entry_is_planted_once():
    assert len(MISTAKES) >= 10 and len(VARIANTS) >= 4 and len(REFERENCE_CALLS) >= 3
    planted = [name for names in STUDENTS.values() for name in names]
    assert sorted(planted) == sorted(TABLE)
    for student in STUDENTS:
        assert sum(v > 0 for v in expected_parts(student).values()) >= 2, f"{student} leaves too few parts intact"


def test_point_table_matches_the_notebook(graded):
    course, _ = graded
    assert graded_test_ids(course, ASSIGNMENT, NOTEBOOK) == list(POINTS)


def test_solution_gets_full_marks(graded):
    _, scores = graded
    assert parts(scores, "alice") == POINTS
    assert scores["alice"]["auto_total"] == sum(POINTS.values())
    assert scores["alice"]["max"]["written_test_time"] == 2  # Part 6 waits for a human


def test_untouched_release_gets_zero(graded):
    _, scores = graded
    assert parts(scores, "bob") == dict.fromkeys(POINTS, 0)


@pytest.mark.parametrize("student", sorted(STUDENTS))
def test_each_planted_answer_costs_exactly_its_part(graded, student):
    _, scores = graded
    assert parts(scores, student) == expected_parts(student), f"{student}: {', '.join(STUDENTS[student])}"


@pytest.mark.parametrize("name", sorted(WARNED) + sorted(REFERENCE_CALLS) + sorted(IN_PLACE_MESSAGES))
def test_the_student_is_told_why(graded, name):
    course, _ = graded
    student = next(s for s, names in STUDENTS.items() if name in names)
    part = TABLE[name][2][0]
    message = {**WARNED, **REFERENCE_CALLS}[name][3] if name not in IN_PLACE_MESSAGES else IN_PLACE_MESSAGES[name]
    output = cell_output(course, student, part)
    assert message in output, output[-2000:]
    assert "RuntimeError" not in output and "TypeError" not in output


def test_in_place_updates_and_reference_calls_are_caught_by_the_visible_checks_too(graded):
    course, _ = graded
    for name in ("param_in_place", "adam_moments_in_place", *REFERENCE_CALLS):
        student = next(s for s, names in STUDENTS.items() if name in names)
        output = cell_output(course, student, TABLE[name][2][0])
        assert "visible tests passed" not in output and "scores 0" in output


def test_the_rules_name_exactly_what_the_hidden_tests_forbid():
    import re

    import nbformat

    from nbgrader_harness import REPO

    nb = nbformat.read(REPO / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    rules = " ".join(nb.cells[0].source.split("**Rules.**")[1].split()).split("Do **not**")
    named = set(re.findall(r"`([\w.]+)`", rules[1].split("The hidden tests")[0]))
    guarded = [set(re.findall(r'"([\w.]+)"', c.source.split("_references = (")[1].split(")")[0]))
               for c in nb.cells if "_references = (" in c.source]
    assert len(guarded) == len(POINTS) - 1, "every autograded part (the written key's cell aside) runs under the guard"
    visible = next(c.source for c in nb.cells if "FORBIDDEN = (" in c.source)
    guarded.append(set(re.findall(r'"([\w.]+)"', visible.split("FORBIDDEN = (")[1].split(")")[0])))  # the visible guard
    for references in guarded:
        assert references == named, f"rules and hidden tests disagree: {references ^ named}"
    assert not named & set(re.findall(r"`([\w.]+)`", rules[0])), "a name is both allowed and forbidden"


@pytest.mark.parametrize("student, part, phrase", [
    ("carol", "test_dropout_train", "are not rescaled"), ("dave", "test_dropout_train", "are divided by p"),
    ("carol", "test_dropout_backward", "not divided by 1 - p"), ("erin", "test_dropout_backward", "the mask is ignored"),
    ("dave", "test_classic_dropout", "the slides' factor 1/(1 + p)"),
    ("frank", "test_classic_dropout", "inverted dropout's factor 1/(1 - p)"),
    ("carol", "test_sgd_momentum", "dampened average"), ("erin", "test_sgd_momentum", "the velocity holds steps"),
    ("dave", "test_adam", "no bias correction")])
def test_the_visible_checks_name_the_common_slips(graded, student, part, phrase):
    course, _ = graded
    output = cell_output(course, student, part)
    assert phrase in output and "visible tests passed" not in output, output[-2000:]
