"""Adversarial examples and networks turned upside down (lecture 06).

    x_adv = fgsm(model, x, y, eps=0.1)                    # x + eps * sign(grad_x J(theta, x, y)), clamped
    x_tgt = fgsm(model, x, target, eps=0.1, targeted=True)  # x - eps * sign(grad_x J(theta, x, target))
    accuracy_under_attack(model, x, y, [0.0, 0.05, 0.1])

The fast gradient sign method (Goodfellow et al., 2015) moves every input value by +-eps in
the direction that increases the loss J of the true class: a step of fixed size in the max-norm.
A targeted attack moves against the gradient of the loss of the class it wants, towards it.

`class_prototype` and `daydream` run gradient ascent on the input instead of the weights: the
network stays fixed and the picture changes.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


@contextmanager
def eval_mode(model: nn.Module):
    """Run `model` in eval mode (dropout off, batch-norm statistics frozen) and put every
    submodule back in the mode it had, even after an error."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _check_attack(x, y, eps, clamp):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.long:
        raise TypeError(f"y must be a torch.long tensor of class indices, got {getattr(y, 'dtype', type(y).__name__)}")
    if y.shape != x.shape[:1]:
        raise ValueError(f"y must hold one class per input: x has {x.shape[0]} inputs, y has shape {tuple(y.shape)}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if clamp is not None and not clamp[0] < clamp[1]:
        raise ValueError(f"clamp must be (low, high) with low < high, got {clamp}")


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grad_x J(theta, x, y) for the mean cross-entropy J, in eval mode, without touching x
    (no .grad left on it) or the parameters' .grad. Shape of x. Works inside torch.no_grad():
    the gradient is taken under torch.enable_grad()."""
    x_ = x.detach().requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        loss = F.cross_entropy(model(x_), y)
        (grad,) = torch.autograd.grad(loss, x_)
    return grad


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, clamp=(0.0, 1.0),
         targeted: bool = False) -> torch.Tensor:
    """The fast gradient sign method.

    untargeted: clamp(x + eps * sign(grad_x J(theta, x, y)))  (y: the true classes)
    targeted:   clamp(x - eps * sign(grad_x J(theta, x, y)))  (y: the classes to reach)
    x: (N, ...) inputs; y: (N,) long; clamp: the valid range (low, high), or None.
    Returns a new tensor without a graph; x, its .grad, the parameters' .grad and the
    model's train/eval mode are left as they were (the gradient is taken in eval mode).
    Works inside torch.no_grad() too (the gradient is taken under torch.enable_grad()).
    """
    _check_attack(x, y, eps, clamp)
    step = eps * input_gradient(model, x, y).sign()
    x_adv = x.detach() - step if targeted else x.detach() + step
    if clamp is not None:
        x_adv = x_adv.clamp(*clamp)
    return x_adv


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows of x whose arg-max class is y (eval mode, no graph)."""
    with eval_mode(model), torch.no_grad():
        return (model(x).argmax(dim=1) == y).double().mean().item()


def accuracy_under_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_list, clamp=(0.0, 1.0)) -> list[float]:
    """Accuracy on fgsm(model, x, y, eps) for each eps in `eps_list` (eps = 0: the clean accuracy).
    Works inside torch.no_grad(), like fgsm."""
    return [accuracy(model, fgsm(model, x, y, eps, clamp=clamp), y) for eps in eps_list]


def digits_cnn(dropout: float = 0.0) -> nn.Sequential:
    """A small CNN for the 8x8 digits: (N, 1, 8, 8) -> 10 logits (2 conv layers, about 3k weights)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # -> (8, 4, 4)
        nn.Conv2d(8, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # -> (16, 2, 2)
        nn.Flatten(), nn.Dropout(dropout), nn.Linear(64, 10),
    )


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Smoothness prior: the mean squared difference of neighbouring pixels, (..., H, W) -> scalar."""
    return ((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean() + ((x[..., :, 1:] - x[..., :, :-1]) ** 2).mean()


def class_prototype(model: nn.Module, target: int, shape: tuple[int, ...], steps: int = 200, lr: float = 0.05,
                    smoothness: float = 1.0, start: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """"Given a label, synthesise an image": gradient ascent on the input for the class's
    logit minus `smoothness` times the total variation (neighbouring pixels correlate),
    kept in [0, 1]. shape: one input's shape, e.g. (1, 8, 8). Returns (*shape,).
    Starts from `start` or from a grey image with a little noise from `generator`.
    Works inside torch.no_grad() (the ascent runs under torch.enable_grad())."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    p = next(model.parameters())
    if start is None:
        start = 0.5 + 0.01 * torch.randn(shape, generator=generator, dtype=p.dtype)
    x = start.detach().clone().to(p.device, p.dtype).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    with eval_mode(model), torch.enable_grad():
        for _ in range(steps):
            objective = model(x.unsqueeze(0))[0, target] - smoothness * total_variation(x)
            optimizer.zero_grad()
            (-objective).backward()
            optimizer.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
    model.zero_grad(set_to_none=True)
    return x.detach()


def daydream(model: nn.Module, x: torch.Tensor, layer: nn.Module, steps: int = 20, lr: float = 0.02) -> list[torch.Tensor]:
    """Amplify what `layer` already sees in x: repeat x <- clamp(x + lr * g / mean|g|), with g
    the gradient of the squared activations of `layer`. The network is fixed; the picture
    changes. x: one input (C, H, W). Returns the pictures after each step (steps + 1 of them,
    the first is x). Works inside torch.no_grad() (the gradient is taken under torch.enable_grad())."""
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda module, inputs, output: seen.append(output))
    pictures = [x.detach().clone()]
    current = x.detach().clone()
    try:
        with eval_mode(model), torch.enable_grad():
            for _ in range(steps):
                seen.clear()
                image = current.clone().requires_grad_(True)
                model(image.unsqueeze(0))
                (grad,) = torch.autograd.grad((seen[-1] ** 2).mean(), image)
                current = (current + lr * grad / (grad.abs().mean() + 1e-12)).clamp(0.0, 1.0)
                pictures.append(current.clone())
    finally:
        hook.remove()
    return pictures
