"""End to end: release ps_dropout, grade real submissions with nbgrader, check scores.

One course, one `nbgrader autograde` call. The tests of the tests:

* MISTAKES: common wrong answers, each planted in one function; the part(s) that test it
  must score 0 and every other part keep its points. A student plants at most one answer per
  function and at most four wrong ones, so at least two parts prove that nothing spills over.
  Among them: updating `param`, `velocity`, `m`, `v` or `x` in place, which the text forbids, and
  a float 0/1 mask and a NumPy result, which lose their part with a message from a visible
  type/dtype check (not a raw RuntimeError/TypeError); the grader's copy shows it (VISIBLE_CHECKS_SAY).
* REFERENCE_CALLS: answers built on torch.nn.functional.dropout, torch.nn.Dropout, torch.optim
  or dlcourse score 0 on their part, with the reason in the output.
* CORRECT: correct answers written differently (torch.bernoulli + torch.where, float32
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
import re

import nbformat

from nbgrader_harness import REPO
from ps_grading_harness import ProblemSet, ProblemSetTests, whole

ASSIGNMENT, NOTEBOOK = "ps_dropout", "dropout"
POINTS = {"test_dropout_train": 2, "test_dropout_eval": 1, "test_dropout_backward": 2,
          "test_classic_dropout": 2, "test_sgd_momentum": 2, "test_adam": 3, "test_written_key": 0}
TRAIN, EVAL, BACKWARD, CLASSIC, SGD, ADAM, _ = POINTS

CORRECT_EVAL = """
    if not training or p == 0:
        return x, torch.ones_like(x, dtype=torch.bool)
    if p == 1:
        return torch.zeros_like(x), torch.zeros_like(x, dtype=torch.bool)
"""
MISTAKES = {  # name -> a whole solution cell and the graded part it costs
    "no_rescale": whole("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):""" + CORRECT_EVAL + """
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p
    return x * mask, mask
""", TRAIN),
    "p_as_keep": whole("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):""" + CORRECT_EVAL + """
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) < p
    return x * mask / p, mask
""", TRAIN),
    "rescale_in_eval": whole("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):
    if p == 1:
        return torch.zeros_like(x), torch.zeros_like(x, dtype=torch.bool)
    if not training:
        return x / (1 - p), torch.ones_like(x, dtype=torch.bool)
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p
    return x * mask / (1 - p), mask
""", EVAL),
    "drops_in_eval": whole("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):
    if p == 1:
        return torch.zeros_like(x), torch.zeros_like(x, dtype=torch.bool)
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p
    return x * mask / (1 - p), mask
""", EVAL),
    "x_in_place": whole("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):""" + CORRECT_EVAL + """
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p
    x.mul_(mask).div_(1 - p)  # overwrites the caller's activations
    return x, mask
""", TRAIN),
    "backward_no_scale": whole("dropout_backward", """
def dropout_backward(grad_output, mask, p):
    return grad_output * mask
""", BACKWARD),
    "backward_no_mask": whole("dropout_backward", """
def dropout_backward(grad_output, mask, p):
    if p == 1:
        return torch.zeros_like(grad_output)
    return grad_output / (1 - p)
""", BACKWARD),
    "slides_factor": whole("classic_dropout", """
def classic_dropout(x, p, training=True, generator=None):
    if not training:
        return x / (1 + p)
    return x * (torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p)
""", CLASSIC),
    "inverted_factor": whole("classic_dropout", """
def classic_dropout(x, p, training=True, generator=None):
    if not training:
        return x / (1 - p)
    return x * (torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p)
""", CLASSIC),
    "dampened_momentum": whole("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    velocity = momentum * velocity + (1 - momentum) * grad
    return param - lr * velocity, velocity
""", SGD),
    "velocity_in_steps": whole("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    velocity = momentum * velocity - lr * grad
    return param + velocity, velocity
""", SGD),
    "param_in_place": whole("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    velocity = momentum * velocity + grad
    param -= lr * velocity  # the caller's param changes too
    return param, velocity
""", SGD),
    "velocity_in_place": whole("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    velocity.mul_(momentum).add_(grad)  # as torch.optim does it internally, but on the caller's tensor
    return param - lr * velocity, velocity
""", SGD),
    "adam_no_bias_correction": whole("adam_step", """
def adam_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    return param - lr * m / (v.sqrt() + eps), m, v
""", ADAM),
    "adam_eps_inside_sqrt": whole("adam_step", """
def adam_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    return param - lr * m_hat / (v_hat + eps).sqrt(), m, v
""", ADAM),
    "adam_moments_in_place": whole("adam_step", """
def adam_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m.mul_(beta1).add_((1 - beta1) * grad)
    v.mul_(beta2).add_((1 - beta2) * grad * grad)
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v
""", ADAM),
    # wrong in a way the visible checks name (type or dtype), never with a raw RuntimeError/TypeError
    "float_mask": whole("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):""" + CORRECT_EVAL + """
    mask = (torch.rand(x.shape, generator=generator, dtype=x.dtype) >= p).float()  # 0/1 floats
    return x * mask / (1 - p), mask
""", TRAIN),
    "backward_numpy": whole("dropout_backward", """
def dropout_backward(grad_output, mask, p):
    if p == 1:
        return torch.zeros_like(grad_output).numpy()
    return (grad_output * mask / (1 - p)).numpy()
""", BACKWARD),
}
REFERENCE_CALLS = {  # name -> a whole solution cell, the part it costs and how the grader names the call
    "forward_F_dropout": whole("dropout_forward", """
import torch.nn.functional as F
def dropout_forward(x, p, training=True, generator=None):""" + CORRECT_EVAL + """
    torch.manual_seed(int(torch.randint(2 ** 31, (1,), generator=generator)))  # reproducible via generator
    out = F.dropout(x, p)
    return out, out != 0
""", TRAIN, calls="your code calls torch.nn.functional.dropout"),
    "classic_nn_Dropout": whole("classic_dropout", """
def classic_dropout(x, p, training=True, generator=None):
    if not training:
        return x * (1 - p)
    return torch.nn.Dropout(p)(x) * (1 - p)
""", CLASSIC, calls="your code calls torch.nn.Dropout"),
    "sgd_torch_optim": whole("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    w = param.clone().requires_grad_(True)
    opt = torch.optim.SGD([w], lr=lr, momentum=momentum)
    if momentum:
        opt.state[w]["momentum_buffer"] = velocity.clone()
    w.grad = grad.clone()
    opt.step()
    return w.detach(), opt.state[w]["momentum_buffer"].clone() if momentum else grad.clone()
""", SGD, calls="your code calls torch.optim.SGD"),
    "adam_dlcourse": whole("adam_step", """
from dlcourse.optim import adam_step as course_adam
def adam_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    new, state = course_adam(param, grad, {"step": t - 1, "exp_avg": m, "exp_avg_sq": v}, lr=lr,
                             betas=(beta1, beta2), eps=eps)
    return new, state["exp_avg"], state["exp_avg_sq"]
""", ADAM, calls="your code calls dlcourse.optim.adam_step"),
}
CORRECT = {
    "forward_bernoulli_where": whole("dropout_forward", """
def dropout_forward(x, p, training=True, generator=None):
    if not training:
        return x.clone(), torch.ones(x.shape, dtype=torch.bool)
    keep = torch.bernoulli(torch.full_like(x, 1 - p), generator=generator).bool()
    return torch.where(keep, x / max(1 - p, 1e-300), torch.zeros_like(x)), keep
"""),
    "backward_where": whole("dropout_backward", """
def dropout_backward(grad_output, mask, p):
    scale = 0.0 if p == 1 else 1 / (1 - p)
    return torch.where(mask, grad_output * scale, torch.zeros_like(grad_output))
"""),
    "classic_float32_uniforms": whole("classic_dropout", """
def classic_dropout(x, p, training=True, generator=None):
    if not training:
        return (1 - p) * x
    keep = torch.rand(x.shape, generator=generator) >= p  # float32 uniforms are fine for a mask
    return x * keep
"""),
    "sgd_in_place_on_copies": whole("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    new_velocity = velocity.clone()
    new_velocity.mul_(momentum).add_(grad)   # in place, but on a copy of its own
    new_param = param.clone()
    new_param.sub_(lr * new_velocity)
    return new_param, new_velocity
"""),
    "sgd_torch_add_alpha": whole("sgd_momentum_step", """
def sgd_momentum_step(param, grad, velocity, lr, momentum):
    v = torch.add(grad, velocity, alpha=momentum)
    return torch.add(param, v, alpha=-lr), v
"""),
    "adam_lerp_addcmul": whole("adam_step", """
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
VISIBLE_CHECKS_SAY = {
    ("hugo", TRAIN): "mask: expected dtype torch.bool, got torch.float32",
    ("gina", BACKWARD): "expected a torch.Tensor, got numpy.ndarray",
    # updates in place, which the text forbids
    ("gina", TRAIN): "changed its input `x` in place", ("gina", SGD): ("changed its input `param`", "scores 0"),
    ("hugo", SGD): "changed its input `velocity`", ("gina", ADAM): ("changed its input `m`", "scores 0"),
    # the common slips
    ("carol", TRAIN): "are not rescaled", ("dave", TRAIN): "are divided by p",
    ("carol", BACKWARD): "not divided by 1 - p", ("erin", BACKWARD): "the mask is ignored",
    ("dave", CLASSIC): "the slides' factor 1/(1 + p)", ("frank", CLASSIC): "inverted dropout's factor 1/(1 - p)",
    ("carol", SGD): "dampened average", ("erin", SGD): "the velocity holds steps", ("dave", ADAM): "no bias correction"}
HIDDEN_TESTS_SAY = {("frank", ADAM): "param differs from torch.optim.Adam"}

PS = ProblemSet(ASSIGNMENT, NOTEBOOK, POINTS, {"written_test_time": 2}, MISTAKES, CORRECT, REFERENCE_CALLS, STUDENTS,
                VISIBLE_CHECKS_SAY, HIDDEN_TESTS_SAY, keeps_at_least=2)


class TestDropout(ProblemSetTests):
    ps = PS

    def test_the_messages_are_never_a_raw_runtime_or_type_error(self, graded):
        told = [*VISIBLE_CHECKS_SAY, *((PS.planter(name), a.costs[0]) for name, a in REFERENCE_CALLS.items())]
        for student, part in told:
            text = graded.cell(student, part).text
            assert "RuntimeError" not in text and "TypeError" not in text, (student, part, text[-2000:])


def test_the_rules_name_exactly_what_the_hidden_tests_forbid():
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

