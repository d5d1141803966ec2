"""Dropout and its inference-time correction (lecture 03, "Dropout").

During training every activation is dropped (set to 0) independently with probability
p, the *drop probability* (torch's convention; the slides call it alpha). Two ways keep
the activations a layer sees at inference on the same scale as in training:

* classic (non-inverted) dropout, as in the slides: train with x * mask, and at
  inference multiply by the keep probability 1 - p, because E[x * mask] = (1 - p) x;
* inverted dropout, as torch does it: train with x * mask / (1 - p), whose expectation
  is x itself, and leave inference alone.

`mask` is always a boolean tensor with True where the activation is *kept*. Random
draws come only from the `generator` passed in (on the device of `x`), so results are
reproducible; on the CPU `dropout(x, p, generator=torch.Generator().manual_seed(s))`
equals `torch.nn.functional.dropout(x, p)` after `torch.manual_seed(s)`.
"""
import torch


def _check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"p must be a number (the drop probability), got {type(p).__name__}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    return float(p)


def _check_x(x, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating-point dtype, got {x.dtype}")


def keep_mask(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean mask shaped like x: each entry is True (kept) with probability 1 - p.

    Independent Bernoulli(1 - p) draws on x's device, from `generator` if given.
    """
    _check_x(x)
    p = _check_p(p)
    return torch.empty_like(x).bernoulli_(1.0 - p, generator=generator).bool()


def inference_scale(p: float) -> float:
    """The factor that matches classic dropout's expected training activation: 1 - p.

    E[x * mask] = P(kept) * x = (1 - p) * x. (The slides' 1 / (1 + p) agrees with it
    only to first order in p: 1 / (1 + p) = 1 - p + p^2 - ...)
    """
    return 1.0 - _check_p(p)


def dropout_forward(x: torch.Tensor, p: float, training: bool = True,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverted dropout that also returns its mask (for the backward pass).

    training: out = x * mask / (1 - p), mask ~ Bernoulli(1 - p) elementwise, so E[out] = x;
              p = 1 drops everything: out = x * 0 (no division by zero), which, as in torch,
              stays in the autograd graph and turns inf and NaN into NaN.
    evaluation: out = x and mask is all True.
    x: any shape -> (out, mask), both shaped like x. Lecture 03, "Inverted dropout".
    """
    _check_x(x)
    p = _check_p(p)
    if not training or p == 0.0:
        return x, torch.ones_like(x, dtype=torch.bool)
    if p == 1.0:
        mask = torch.zeros_like(x, dtype=torch.bool)
        return x * mask, mask
    mask = keep_mask(x, p, generator)
    return x * mask * (1.0 / (1.0 - p)), mask


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted dropout with torch's semantics: `torch.nn.functional.dropout(x, p, training)`.

    p is the probability to DROP an activation (not to keep it). Training: each entry is
    zeroed with probability p and the survivors are scaled by 1 / (1 - p); evaluation:
    x unchanged. x: any shape -> same shape.
    """
    return dropout_forward(x, p, training, generator)[0]


def dropout_backward(grad_output: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """Gradient of inverted dropout (training mode) with respect to its input.

    out = x * mask / (1 - p) is linear in x, so dL/dx = dL/dout * mask / (1 - p):
    dropped entries get no gradient, kept ones the scaled gradient. When p = 1 the forward
    pass was x * 0, whose gradient is grad_output * 0 (NaN where grad_output is inf or NaN,
    as torch's). grad_output, mask: same shape -> same shape.
    """
    _check_x(grad_output, "grad_output")
    p = _check_p(p)
    if mask.shape != grad_output.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)} but grad_output has shape {tuple(grad_output.shape)}")
    if p == 1.0:
        return grad_output * torch.zeros_like(mask)
    return grad_output * mask * (1.0 / (1.0 - p))


def classic_dropout(x: torch.Tensor, p: float, training: bool = True,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Non-inverted dropout as on the slides, with the correct inference-time correction.

    training: out = x * mask (no rescaling), mask ~ Bernoulli(1 - p);
    evaluation: out = (1 - p) * x, the expected training-time activation.
    x: any shape -> same shape. Lecture 03, "Dropout and its correction".
    """
    _check_x(x)
    p = _check_p(p)
    if not training:
        return x * inference_scale(p)
    return x * keep_mask(x, p, generator)
