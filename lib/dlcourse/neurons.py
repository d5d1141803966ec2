"""Neuron basics of lecture 01 ("Neurons and losses"): the credit-rating example, the
perceptron, m-of-n rules, XOR, activation functions and online SGD (Algorithm 2.1).

All tensors are float64 unless given otherwise; functions run on the device of their input.
"""
from dataclasses import dataclass
from itertools import product
from math import comb

import torch


# ------------------------------------------------------------------ credit rating
@dataclass
class CreditData:
    """The deck's credit-rating table: six people, three yes/no attributes (1 = yes)."""

    names: list
    attributes: tuple
    x: torch.Tensor  # (6, 3)
    y: torch.Tensor  # (6,) 1 = gets credit


def credit_rating() -> CreditData:
    """Get credit iff at least two of Employed, Owns House, Balanced Account are yes."""
    rows = [("Peter Smith", 1, 1, 0, 1), ("Julia Miller", 0, 1, 0, 0), ("Stephen Baker", 1, 0, 1, 1),
            ("Mary Fisher", 0, 0, 1, 0), ("Kim Hanson", 0, 1, 1, 1), ("John Page", 1, 0, 0, 0)]
    x = torch.tensor([r[1:4] for r in rows], dtype=torch.float64)
    y = torch.tensor([r[4] for r in rows], dtype=torch.float64)
    return CreditData([r[0] for r in rows], ("Employed", "Owns House", "Balanced Account"), x, y)


def perceptron(x, w, t) -> torch.Tensor:
    """Y = I(sum_i w_i X_i - t > 0): 1 where the weighted sum exceeds the threshold t, else 0.

    x: (..., d), w: (d,), t: number -> (...,) of 0./1. The deck's credit model is
    w = (0.3, 0.3, 0.3), t = 0.4.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    w = torch.as_tensor(w, dtype=x.dtype, device=x.device)
    if x.shape[-1] != w.shape[-1]:
        raise ValueError(f"x has {x.shape[-1]} features but w has {w.shape[-1]} weights")
    return step(x @ w - t)


# ------------------------------------------------------------------------ m-of-n
def m_of_n_rule_count(m: int, n: int) -> int:
    """Rules of the smallest rule set for "at least m of n attributes are yes": C(n, m).

    This counts rule sets whose rules all predict "yes", with the default "no" (the
    deck's form and `smallest_rule_set`'s). Each rule is a conjunction of conditions; a
    rule that never fires wrongly needs at least m "yes" conditions, so it covers at most
    one of the C(n, m) examples with exactly m yes - every one of them needs its own rule.
    Rules that predict "no" with the default "yes" need C(n, m - 1) instead.
    """
    if not (isinstance(m, int) and isinstance(n, int)) or not 0 < m <= n:
        raise ValueError(f"need integers 0 < m <= n, got m={m}, n={n}")
    return comb(n, m)


def smallest_rule_set(m: int, n: int) -> list:
    """Search for a smallest rule set for "at least m of n are yes" (n <= 6).

    A rule is a dict {attribute index: required value (1 yes / 0 no)}, read as a
    conjunction; the rule set predicts yes iff some rule fires. Candidates are all
    conjunctions that never fire on a "no" example, minus those that cover only
    part of what another candidate covers; the search is an exact set cover
    (branch on the rules covering the hardest uncovered "yes" example). Exponential:
    a check of `m_of_n_rule_count` on small cases, not a learner.
    """
    if not (isinstance(n, int) and 0 < n <= 6):
        raise ValueError(f"the exhaustive search is for n in 1..6, got n={n}")
    m_of_n_rule_count(m, n)  # validates m
    examples = list(product((0, 1), repeat=n))
    yes = [e for e in examples if sum(e) >= m]
    no = [e for e in examples if sum(e) < m]
    candidates = []
    for conditions in product((None, 0, 1), repeat=n):
        rule = {i: v for i, v in enumerate(conditions) if v is not None}
        fires = lambda e, rule=rule: all(e[i] == v for i, v in rule.items())  # noqa: E731
        if rule and not any(fires(e) for e in no):
            candidates.append((rule, frozenset(j for j, e in enumerate(yes) if fires(e))))
    # a rule covering a subset of what another rule covers is never needed in a smallest set
    candidates.sort(key=lambda c: (-len(c[1]), len(c[0])))
    kept = []
    for rule, covers in candidates:
        if not any(covers <= other for _, other in kept):
            kept.append((rule, covers))
    candidates = kept
    covering = {j: [c for c in candidates if j in c[1]] for j in range(len(yes))}
    best = [None]

    def search(uncovered: frozenset, chosen: list):
        if best[0] is not None and len(chosen) >= len(best[0]):
            return
        if not uncovered:
            best[0] = list(chosen)
            return
        # branch on the example with the fewest rules able to cover it (Knuth's Algorithm X order)
        hardest = min(uncovered, key=lambda j: len(covering[j]))
        for rule, covers in covering[hardest]:
            search(uncovered - covers, chosen + [rule])

    search(frozenset(range(len(yes))), [])
    return best[0]


# ---------------------------------------------------------------------------- XOR
def xor_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The four points of XOR: x (4, 2) in {0, 1}^2, y (4,) = x1 xor x2."""
    x = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float64)
    return x, (x[:, 0] != x[:, 1]).to(torch.float64)


def perceptron_search(x, y, grid) -> tuple[float, int]:
    """Try every perceptron I(w . x - t > 0) with all weights and t taken from `grid`.

    x: (N, d), y: (N,). Returns (best accuracy, number of perfect perceptrons found).
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    grid = torch.as_tensor(grid, dtype=torch.float64)
    d = x.shape[1]
    params = torch.cartesian_prod(*[grid] * (d + 1)).reshape(-1, d + 1)  # (G^(d+1), d+1): w..., t
    predictions = step(x @ params[:, :d].T - params[:, d])  # (N, G^(d+1))
    accuracy = (predictions == y[:, None]).double().mean(dim=0)
    return accuracy.max().item(), int((accuracy == 1).sum().item())


def two_layer_xor(x) -> torch.Tensor:
    """XOR from three perceptrons: h1 = OR = I(x1 + x2 - 0.5 > 0), h2 = AND = I(x1 + x2 - 1.5 > 0),
    y = I(h1 - h2 - 0.5 > 0) ("at least one, but not both"). x: (..., 2) -> (...,)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    h = torch.stack([perceptron(x, [1.0, 1.0], 0.5), perceptron(x, [1.0, 1.0], 1.5)], dim=-1)
    return perceptron(h, [1.0, -1.0], 0.5)


# ------------------------------------------------------------------- activations
def step(z) -> torch.Tensor:
    """I(z > 0): 1. where z > 0, else 0."""
    z = torch.as_tensor(z)
    return (z > 0).to(z.dtype if torch.is_floating_point(z) else torch.float64)


def step_grad(z) -> torch.Tensor:
    """Derivative of the step function: 0 wherever it exists (it does not at z = 0)."""
    return torch.zeros_like(torch.as_tensor(z, dtype=torch.float64))


def sigmoid(z) -> torch.Tensor:
    """1 / (1 + e^-z)."""
    return torch.sigmoid(torch.as_tensor(z, dtype=torch.float64))


def sigmoid_grad(z) -> torch.Tensor:
    """sigma'(z) = sigma(z) (1 - sigma(z)), at most 1/4 (at z = 0)."""
    s = sigmoid(z)
    return s * (1 - s)


def tanh(z) -> torch.Tensor:
    """(e^z - e^-z) / (e^z + e^-z) = 2 sigma(2z) - 1."""
    return torch.tanh(torch.as_tensor(z, dtype=torch.float64))


def tanh_grad(z) -> torch.Tensor:
    """tanh'(z) = 1 - tanh(z)^2, at most 1 (at z = 0)."""
    return 1 - tanh(z) ** 2


def relu(z) -> torch.Tensor:
    """max(0, z)."""
    return torch.clamp(torch.as_tensor(z, dtype=torch.float64), min=0)


def relu_grad(z) -> torch.Tensor:
    """1 where z > 0, else 0 (torch also takes 0 at z = 0)."""
    return step(torch.as_tensor(z, dtype=torch.float64))


ACTIVATIONS = {"step": (step, step_grad), "sigmoid": (sigmoid, sigmoid_grad),
               "tanh": (tanh, tanh_grad), "relu": (relu, relu_grad)}


# ------------------------------------------------------ online SGD (Algorithm 2.1)
def online_sgd(f, params, xs, ys, loss, lr: float = 0.1, steps: int = 100,
               generator: torch.Generator | None = None) -> list[float]:
    """Online stochastic gradient descent (deck 001, Algorithm 2.1); updates `params` in place.

    Repeat `steps` times (the stopping criterion): sample one example (x_i, y_i) with
    `generator`, compute L(f(x_i; params), y_i), its gradient g w.r.t. every parameter,
    and set params <- params - lr * g. f(x, params) -> prediction; loss(pred, y) -> scalar.
    params: tensors with requires_grad=True. Returns the loss of every step.
    """
    if lr <= 0 or steps < 1:
        raise ValueError(f"lr must be > 0 and steps >= 1, got lr={lr}, steps={steps}")
    if not all(isinstance(p, torch.Tensor) and p.requires_grad for p in params):
        raise ValueError("every parameter must be a tensor with requires_grad=True")
    losses = []
    for _ in range(steps):
        i = torch.randint(len(xs), (1,), generator=generator).item()  # 2: sample an example
        value = loss(f(xs[i], params), ys[i])  # 3: compute the loss
        grads = torch.autograd.grad(value, params)  # 4: gradients w.r.t. the parameters
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= lr * g  # 5: step against the gradient
        losses.append(value.item())
    return losses


# ------------------------------------------------------- the perceptron learning rule
@dataclass
class PerceptronFit:
    """What `perceptron_learning_rule` found: weights w (d,), threshold t, passes made, and
    whether the last pass made no mistake (then w, t separate the data)."""

    w: torch.Tensor
    t: float
    epochs: int
    converged: bool


def perceptron_learning_rule(x, y, lr: float = 1.0, max_epochs: int = 100) -> PerceptronFit:
    """Rosenblatt's rule for Y = I(w . x - t > 0), one example at a time, in the given order:

        y_hat = I(w . x_i - t > 0);   w <- w + lr (y_i - y_hat) x_i;   t <- t - lr (y_i - y_hat)

    x: (N, d), y: (N,) of 0/1; w and t start at 0. Passes over the data until a pass makes no
    mistake (that pass is counted) or `max_epochs` passes are done. On linearly separable data
    (the deck's credit table) the perceptron convergence theorem guarantees a pass without
    mistakes; on XOR it never comes. Lecture 01, "The perceptron learning rule" (deck 003).
    """
    x = torch.as_tensor(x)
    x = x if torch.is_floating_point(x) else x.double()
    y = torch.as_tensor(y, dtype=x.dtype, device=x.device)
    if x.dim() != 2 or y.shape != x.shape[:1]:
        raise ValueError(f"need x (N, d) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not ((y == 0) | (y == 1)).all():
        raise ValueError("y must hold 0/1 labels")
    if lr <= 0 or int(max_epochs) != max_epochs or max_epochs < 1:
        raise ValueError(f"need lr > 0 and an integer max_epochs >= 1, got lr={lr}, max_epochs={max_epochs}")
    w = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
    t = 0.0
    for epoch in range(1, int(max_epochs) + 1):
        mistakes = 0
        for xi, yi in zip(x, y):
            error = yi.item() - float((xi @ w).item() - t > 0)
            if error:
                w = w + lr * error * xi
                t = t - lr * error
                mistakes += 1
        if mistakes == 0:
            return PerceptronFit(w, t, epoch, True)
    return PerceptronFit(w, t, int(max_epochs), False)
