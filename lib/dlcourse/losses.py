"""Loss functions of lecture 01 ("Cross-entropy vs square loss").

For one example with target t (one-hot, or any probability vector) and predicted
probabilities y over C classes:

    square loss     l(t, y) = sum_j (t_j - y_j)^2
    cross-entropy   l(t, y) = -sum_j t_j log y_j

The deck's example t = (0, 1, 0, 0), y = (0.25, 0.3, 0.4, 0.05) gives 0.715 and
-log 0.3 = 1.204. Shapes: y, t: (C,) or (N, C). `reduction` ("mean" over examples,
"sum", or "none" for one loss per example) follows torch's naming.

Torch counterparts: `square_loss(y, t, "sum") == F.mse_loss(y, t, reduction="sum")`
(torch's default "mean" divides by N * C instead of N); `cross_entropy(softmax(z), t)
== F.cross_entropy(z, t)`: torch's takes *logits* z, so `cross_entropy_with_logits` is the
version to train with (log-softmax never takes the log of an underflowed 0).
"""
import torch

REDUCTIONS = ("mean", "sum", "none")


def _as_float(x) -> torch.Tensor:
    """Tensors keep their dtype and device; lists and arrays become float64."""
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float64)
    return x if torch.is_floating_point(x) else x.double()


def _check(y, t, y_name: str):
    y = _as_float(y)
    t = _as_float(t).to(y.device)
    if y.dim() not in (1, 2):
        raise ValueError(f"{y_name} must be (C,) or (N, C), got shape {tuple(y.shape)}")
    if t.shape != y.shape:
        raise ValueError(f"t must have the shape of {y_name} {tuple(y.shape)}, got {tuple(t.shape)}")
    return y, t.to(y.dtype)


def _reduce(per_example: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_example
    if reduction == "sum":
        return per_example.sum()
    if reduction == "mean":
        return per_example.mean()
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def square_loss(y, t, reduction: str = "mean") -> torch.Tensor:
    """l = sum_j (t_j - y_j)^2 per example, then reduced over examples.

    y, t: (C,) or (N, C) -> scalar, or (N,) / () with reduction="none".
    """
    y, t = _check(y, t, "y")
    return _reduce(((t - y) ** 2).sum(dim=-1), reduction)


def cross_entropy(y, t, reduction: str = "mean") -> torch.Tensor:
    """l = -sum_j t_j log y_j per example, with y probabilities (each in [0, 1]).

    Terms with t_j = 0 count 0 even where y_j = 0 (0 log 0 = 0, via `torch.xlogy`).
    y, t: (C,) or (N, C). Readable version: use `cross_entropy_with_logits` to train.
    """
    y, t = _check(y, t, "y")
    if ((y < 0) | (y > 1)).any():
        raise ValueError(f"y must hold probabilities in [0, 1], got values from {y.min().item():.4g} to {y.max().item():.4g}")
    return _reduce(-torch.xlogy(t, y).sum(dim=-1), reduction)


def softmax(z, dim: int = -1) -> torch.Tensor:
    """softmax(z)_j = e^{z_j - max z} / sum_k e^{z_k - max z} (shifting by max z changes nothing but avoids overflow)."""
    z = _as_float(z)
    e = torch.exp(z - z.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def _as_target(target) -> torch.Tensor:
    """Class indices (torch.int64 or torch.uint8, as torch's cross_entropy takes) or probabilities.

    Lists and arrays are converted: integers become int64 class indices, floats float64
    probabilities. A tensor of another integer dtype (or bool) raises a RuntimeError, as in torch.
    """
    if not isinstance(target, torch.Tensor):
        probe = torch.as_tensor(target)
        return _as_float(target) if torch.is_floating_point(probe) else probe.long()
    if not torch.is_floating_point(target) and target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(f"class-index targets must be torch.int64 (long) or torch.uint8, as in torch, "
                           f"got {target.dtype}: convert them with target.long()")
    return target


def _nll_of_classes(log_probs: torch.Tensor, target: torch.Tensor, ignore_index: int, reduction: str):
    """-log_probs[target] per example; examples whose target is ignore_index count 0 and are
    left out of the mean (NaN if every example is ignored, as in torch)."""
    n_classes = log_probs.shape[-1]
    if target.shape != log_probs.shape[:-1]:
        raise ValueError(f"class-index target must have shape {tuple(log_probs.shape[:-1])}, got {tuple(target.shape)}")
    target = target.long()
    counted = target != ignore_index
    outside = counted & ((target < 0) | (target >= n_classes))
    if outside.any():
        raise IndexError(f"target {target[outside][0].item()} is out of bounds: class indices must be in "
                         f"[0, {n_classes - 1}] (or ignore_index={ignore_index} to skip an example)")
    picked = log_probs.gather(-1, torch.where(counted, target, 0).unsqueeze(-1)).squeeze(-1)
    per_example = torch.where(counted, -picked, 0.0)
    if reduction == "mean":
        return per_example.sum() / counted.sum().to(per_example.dtype)
    return _reduce(per_example, reduction)


def cross_entropy_with_logits(z, target, reduction: str = "mean", ignore_index: int = -100) -> torch.Tensor:
    """Cross-entropy of softmax(z): -sum_j t_j log_softmax(z)_j, same as `F.cross_entropy(z, target)`.

    z: (N, C) or (C,) logits; target: class indices (N,) / () (int64 or uint8, as in torch) or
    probabilities shaped like z. log_softmax(z)_j = z_j - max z - log sum_k e^{z_k - max z}:
    no overflow, no log 0. With class indices the loss reads only log_softmax(z)_target, so a
    logit of -inf on another class leaves it finite; examples whose target is `ignore_index`
    count 0 and "mean" averages over the others only (torch's rule).
    """
    z = _as_float(z)
    if z.dim() not in (1, 2):
        raise ValueError(f"z must be (C,) or (N, C), got shape {tuple(z.shape)}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    target = _as_target(target).to(z.device)
    shifted = z - z.amax(dim=-1, keepdim=True)
    log_probs = shifted - torch.logsumexp(shifted, dim=-1, keepdim=True)
    if not torch.is_floating_point(target):
        return _nll_of_classes(log_probs, target, ignore_index, reduction)
    if ignore_index >= 0:
        raise RuntimeError(f"ignore_index={ignore_index} is not supported for probability targets (as in torch): "
                           "give those examples class indices, or zero weight in the mean yourself")
    _, t = _check(z, target, "z")
    return _reduce(-(t * log_probs).sum(dim=-1), reduction)
