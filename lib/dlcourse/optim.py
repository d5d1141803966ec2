"""Optimizers as plain functions (lecture 03, "Learning rate, momentum, adaptive steps").

Each `*_step` takes the parameter, its gradient and the optimizer's state (a dict of
tensors, empty `{}` before the first step) and returns the updated parameter and the
new state; nothing is changed in place. The update rules and defaults are those of
`torch.optim` (SGD, Adagrad, RMSprop, Adadelta, Adam), so that the same gradients give
the same trajectory, step by step; tests check that over many steps.

    state = {}
    for _ in range(100):
        w, state = adam_step(w, grad_f(w), state, lr=0.1)

Every step function accepts the hyper-parameters that torch's constructor accepts and
raises a ValueError for those it rejects (a negative lr, eps, weight_decay, lr_decay or
momentum, rho outside [0, 1], betas outside [0, 1)); torch also accepts, and so do they,
momentum >= 1, alpha >= 1 and rho = 1, which no longer average but can be tried.

`run` applies a step function to a loss over many steps and returns the trajectory,
`torch_run` does the same with a `torch.optim` optimizer; the lecture's test functions
`quadratic_2d` and `bumpy_1d` and their gradients live here too.
"""
import math

import torch


def _check_nonnegative(**values: float) -> None:
    """Each value must be >= 0 (NaN fails too), the range torch.optim's constructors accept."""
    for name, value in values.items():
        if not value >= 0.0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _check_unit(value: float, name: str, closed: bool = False) -> None:
    """value in [0, 1), or [0, 1] with closed=True (torch allows rho = 1 but not beta = 1)."""
    if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}, got {value}")


def _check_shapes(param: torch.Tensor, grad: torch.Tensor) -> None:
    if param.shape != grad.shape:
        raise ValueError(f"grad has shape {tuple(grad.shape)} but param has shape {tuple(param.shape)}")


# ------------------------------------------------------------------- SGD + momentum
def sgd_step(param, grad, state, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    """One step of SGD with momentum, torch's convention (`torch.optim.SGD`):

        g <- grad + weight_decay * param
        v <- g                                      on the first step
        v <- momentum * v + (1 - dampening) * g     afterwards
        param <- param - lr * v                     (nesterov: - lr * (g + momentum * v))

    The velocity v is a sum of past gradients, not of past steps, and the learning rate
    multiplies it only at the end. state: {} or {"velocity": v}.
    """
    _check_nonnegative(lr=lr, momentum=momentum, weight_decay=weight_decay)
    _check_shapes(param, grad)
    if nesterov and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError("nesterov momentum needs momentum > 0 and dampening = 0")
    g = grad + weight_decay * param if weight_decay else grad
    if momentum == 0.0:
        return param - lr * g, {}
    v = state.get("velocity")
    v = g.clone() if v is None else momentum * v + (1.0 - dampening) * g
    direction = g + momentum * v if nesterov else v
    return param - lr * direction, {"velocity": v}


# ------------------------------------------------------------------------- AdaGrad
def adagrad_step(param, grad, state, lr=0.01, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10):
    """One AdaGrad step (Duchi et al., 2011), as `torch.optim.Adagrad`:

        s <- s + g^2                                (every parameter has its own sum)
        param <- param - lr_t * g / (sqrt(s) + eps),   lr_t = lr / (1 + (t - 1) * lr_decay)

    Parameters with large past gradients take smaller steps; the sum never shrinks, so
    the steps only get smaller. state: {} or {"step": t, "sum": s}.
    """
    _check_nonnegative(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                       initial_accumulator_value=initial_accumulator_value, eps=eps)
    _check_shapes(param, grad)
    g = grad + weight_decay * param if weight_decay else grad
    t = state.get("step", 0) + 1
    s = state.get("sum")
    if s is None:
        s = torch.full_like(param, initial_accumulator_value)
    s = s + g * g
    clr = lr / (1.0 + (t - 1) * lr_decay)
    return param - clr * g / (s.sqrt() + eps), {"step": t, "sum": s}


# ------------------------------------------------------------------------- RMSProp
def rmsprop_step(param, grad, state, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False):
    """One RMSProp step (Hinton's lecture notes), as `torch.optim.RMSprop`:

        r <- alpha * r + (1 - alpha) * g^2          (a decaying average, not a sum)
        d <- sqrt(r) + eps                          (centered: sqrt(r - m^2) + eps,
                                                     m <- alpha * m + (1 - alpha) * g)
        param <- param - lr * g / d                 (momentum: b <- momentum * b + g / d,
                                                     param <- param - lr * b)

    state: {} or {"square_avg": r, ...}.
    """
    _check_nonnegative(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)
    _check_shapes(param, grad)
    g = grad + weight_decay * param if weight_decay else grad
    r = state.get("square_avg", torch.zeros_like(param))
    r = alpha * r + (1.0 - alpha) * g * g
    new_state = {"square_avg": r}
    if centered:
        m = alpha * state.get("grad_avg", torch.zeros_like(param)) + (1.0 - alpha) * g
        new_state["grad_avg"] = m
        denom = (r - m * m).sqrt() + eps
    else:
        denom = r.sqrt() + eps
    if momentum > 0.0:
        b = momentum * state.get("momentum_buffer", torch.zeros_like(param)) + g / denom
        new_state["momentum_buffer"] = b
        return param - lr * b, new_state
    return param - lr * g / denom, new_state


# ------------------------------------------------------------------------ AdaDelta
def adadelta_step(param, grad, state, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
    """One AdaDelta step (Zeiler, 2012), as `torch.optim.Adadelta`:

        r <- rho * r + (1 - rho) * g^2                       (recent squared gradients)
        delta <- sqrt(u + eps) / sqrt(r + eps) * g           (units of a step, not of g)
        u <- rho * u + (1 - rho) * delta^2                   (recent squared steps)
        param <- param - lr * delta

    The "window of time" of the paper is this exponential average. Zeiler's rule has no
    learning rate (lr = 1, torch's default). state: {} or {"square_avg": r, "acc_delta": u}.
    """
    _check_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay)
    _check_unit(rho, "rho", closed=True)
    _check_shapes(param, grad)
    g = grad + weight_decay * param if weight_decay else grad
    r = rho * state.get("square_avg", torch.zeros_like(param)) + (1.0 - rho) * g * g
    u = state.get("acc_delta", torch.zeros_like(param))
    delta = (u + eps).sqrt() / (r + eps).sqrt() * g
    u = rho * u + (1.0 - rho) * delta * delta
    return param - lr * delta, {"square_avg": r, "acc_delta": u}


# ---------------------------------------------------------------------------- Adam
def adam_step(param, grad, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
    """One Adam step (Kingma and Ba, 2015), as `torch.optim.Adam`:

        m <- beta1 * m + (1 - beta1) * g            (momentum: average gradient)
        v <- beta2 * v + (1 - beta2) * g^2          (RMSProp: average squared gradient)
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)    (bias correction, t = 1, 2, ...)
        param <- param - lr * m_hat / (sqrt(v_hat) + eps)

    eps is added after the square root. amsgrad uses the running maximum of v instead.
    state: {} or {"step": t, "exp_avg": m, "exp_avg_sq": v}.
    """
    _check_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay)
    beta1, beta2 = betas
    _check_unit(beta1, "beta1")
    _check_unit(beta2, "beta2")
    _check_shapes(param, grad)
    g = grad + weight_decay * param if weight_decay else grad
    t = state.get("step", 0) + 1
    m = beta1 * state.get("exp_avg", torch.zeros_like(param)) + (1.0 - beta1) * g
    v = beta2 * state.get("exp_avg_sq", torch.zeros_like(param)) + (1.0 - beta2) * g * g
    new_state = {"step": t, "exp_avg": m, "exp_avg_sq": v}
    if amsgrad:
        v = torch.maximum(state.get("max_exp_avg_sq", torch.zeros_like(param)), v)
        new_state["max_exp_avg_sq"] = v
    bias1, bias2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
    denom = v.sqrt() / math.sqrt(bias2) + eps
    return param - (lr / bias1) * m / denom, new_state


STEPS = {"sgd": sgd_step, "adagrad": adagrad_step, "rmsprop": rmsprop_step,
         "adadelta": adadelta_step, "adam": adam_step}
TORCH_NAMES = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adadelta": "Adadelta", "adam": "Adam"}


# ------------------------------------------------------------------ trajectories
def run(step, grad_fn, x0, n_steps: int, **hyper) -> torch.Tensor:
    """Apply `step` (a `*_step` function or its name in STEPS) n_steps times from x0.

    grad_fn: x -> gradient at x. x0: (d,) -> trajectory (n_steps + 1, d), row 0 = x0.
    """
    step = STEPS[step] if isinstance(step, str) else step
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    x, state = torch.as_tensor(x0), {}
    path = [x]
    for _ in range(n_steps):
        x, state = step(x, grad_fn(x), state, **hyper)
        path.append(x)
    return torch.stack(path)


def torch_run(name: str, loss_fn, x0, n_steps: int, **hyper) -> torch.Tensor:
    """The same trajectory with the real `torch.optim` optimizer (name as in STEPS).

    loss_fn: x -> scalar loss, differentiated by autograd. Returns (n_steps + 1, d).
    """
    if name not in TORCH_NAMES:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(TORCH_NAMES)}")
    x = torch.as_tensor(x0).clone().requires_grad_(True)
    opt = getattr(torch.optim, TORCH_NAMES[name])([x], **hyper)
    path = [x.detach().clone()]
    for _ in range(n_steps):
        opt.zero_grad()
        loss_fn(x).backward()
        opt.step()
        path.append(x.detach().clone())
    return torch.stack(path)


# ------------------------------------------------------------- lecture test functions
QUADRATIC_CURVATURES = (1.0, 5.0)


def quadratic_2d(x: torch.Tensor) -> torch.Tensor:
    """f(x) = (1 * x1^2 + 5 * x2^2) / 2: a valley five times steeper across than along.

    x: (..., 2) -> (...). Gradient descent converges on it for 0 < lr < 2 / 5.
    """
    a, b = QUADRATIC_CURVATURES
    return 0.5 * (a * x[..., 0] ** 2 + b * x[..., 1] ** 2)


def quadratic_2d_grad(x: torch.Tensor) -> torch.Tensor:
    """Gradient of `quadratic_2d`: (x1, 5 * x2). x: (2,) -> (2,)."""
    return x * torch.tensor(QUADRATIC_CURVATURES, dtype=x.dtype, device=x.device)


def bumpy_1d(x: torch.Tensor) -> torch.Tensor:
    """f(x) = x^4 - 4 x^2 + x: a local minimum near x = 1.35, the global one near x = -1.47.

    Works elementwise on any shape.
    """
    return x ** 4 - 4 * x ** 2 + x


def bumpy_1d_grad(x: torch.Tensor) -> torch.Tensor:
    """f'(x) = 4 x^3 - 8 x + 1."""
    return 4 * x ** 3 - 8 * x + 1
