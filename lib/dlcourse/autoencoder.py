"""Autoencoders (lecture 06): compress, reconstruct, denoise, stack, and flag outliers.

    ae = Autoencoder(64, 8)                                   # undercomplete: 64 -> 8 -> 64
    train_autoencoder(ae, x, epochs=40, generator=g)          # minimise ||x - decode(encode(x))||^2
    scores = reconstruction_errors(ae, x_new)                  # (N,) outlier scores
    roc_auc(scores, is_outlier)                                # how well they rank the outliers

A linear autoencoder trained on the squared error spans the same subspace as the first
principal components (Baldi & Hornik, 1989), so `principal_angles` between its decoder's
columns and `pca_components` go to zero; a non-linear one can do better at the same code size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}


def _layers(sizes: list[int], activation: str | None, last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if activation is not None and (i < len(sizes) - 2 or last_activation):
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """x (N, n_in) -> code h (N, n_code) -> reconstruction (N, n_in).

    hidden: widths of extra layers between the input and the code (mirrored in the decoder).
    linear=True drops every non-linearity (the PCA-like autoencoder). Otherwise the hidden
    layers and the code use `activation`, and the output a sigmoid (data in [0, 1]).
    """

    def __init__(self, n_in: int, n_code: int, hidden: tuple[int, ...] = (), activation: str = "tanh",
                 linear: bool = False):
        super().__init__()
        if n_in < 1 or n_code < 1:
            raise ValueError(f"n_in and n_code must be positive, got {n_in} and {n_code}")
        if not linear and activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        act = None if linear else activation
        sizes = [n_in, *hidden, n_code]
        self.encoder = _layers(sizes, act, last_activation=True)
        self.decoder = _layers(sizes[::-1], act, last_activation=False)
        if not linear:
            self.decoder.append(nn.Sigmoid())
        self.linear = linear

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def _check_data(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or len(x) == 0:
        raise ValueError(f"x must be (N, features) with N > 0, got shape {tuple(x.shape)}")
    return x


def train_autoencoder(model: nn.Module, x: torch.Tensor, epochs: int = 30, lr: float = 1e-2, batch_size: int = 64,
                      noise_std: float = 0.0, target: torch.Tensor | None = None,
                      generator: torch.Generator | None = None, progress: bool = True,
                      desc: str = "autoencoder") -> list[float]:
    """Adam on the mean squared reconstruction error; returns the loss per epoch.

    noise_std > 0 makes it a denoising autoencoder: the input is x + N(0, noise_std^2) noise
    (drawn from `generator`), the target stays the clean x. `target` (default x) lets a layer
    of a stacked autoencoder learn to reproduce something other than its input.
    """
    x = _check_data(x)
    target = x if target is None else target
    if len(target) != len(x):
        raise ValueError(f"target has {len(target)} rows, x has {len(x)}")
    if epochs < 1 or batch_size < 1 or noise_std < 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, noise_std >= 0; got {epochs}, {batch_size}, {noise_std}")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in (bar := tqdm(range(epochs), desc=desc, disable=not progress)):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            xb = x[idx]
            if noise_std > 0:
                noise = torch.randn(xb.shape, generator=generator, dtype=xb.dtype).to(xb.device)
                xb = xb + noise_std * noise
            loss = F.mse_loss(model(xb), target[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        losses.append(total / len(x))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    return losses


def train_stacked(sizes: list[int], x: torch.Tensor, epochs: int = 30, lr: float = 1e-2, activation: str = "tanh",
                  generator: torch.Generator | None = None, progress: bool = True) -> nn.Sequential:
    """A stacked autoencoder trained one layer at a time, as in the lecture's deck.

    sizes = [n_in, h1, h2, ...]: first an autoencoder n_in -> h1 -> n_in on x; then a
    one-hidden-layer net h1 -> h2 -> n_in that reads the first codes and reproduces the
    original x; and so on. Returns the full network: the encoders in order, then the last
    decoder (each layer trained once, no fine-tuning) - an nn.Sequential from x to x.
    """
    x = _check_data(x)
    if len(sizes) < 2 or sizes[0] != x.shape[1]:
        raise ValueError(f"sizes must start with the input width {x.shape[1]} and name at least one code, got {sizes}")
    encoders: list[nn.Module] = []
    codes, decoder = x, None
    for depth, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        encoder = nn.Sequential(nn.Linear(a, b), _ACTIVATIONS[activation]()).to(x.device, x.dtype)
        decoder = nn.Sequential(nn.Linear(b, sizes[0]), nn.Sigmoid()).to(x.device, x.dtype)
        net = nn.Sequential(encoder, decoder)
        train_autoencoder(net, codes, epochs=epochs, lr=lr, target=x, generator=generator, progress=progress,
                          desc=f"layer {depth}: {a} -> {b} -> {sizes[0]}")
        encoders.append(encoder)
        with torch.no_grad():
            codes = encoder(codes)
    return nn.Sequential(*encoders, decoder).eval()


def reconstruction_errors(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Outlier scores: each row's mean squared reconstruction error, (N, features) -> (N,).

    Runs in eval mode without building a graph; the model's mode is restored afterwards."""
    x = _check_data(x)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return ((model(x) - x) ** 2).mean(dim=1)
    finally:
        model.train(was_training)


def _scores_labels(scores, labels) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.as_tensor(scores).detach().flatten().double().cpu()
    labels = torch.as_tensor(labels).detach().flatten().cpu()
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    if not torch.isin(labels.double(), torch.tensor([0.0, 1.0], dtype=torch.double)).all():
        raise ValueError("labels must be 0 (normal) or 1 (outlier)")
    labels = labels.bool()
    if labels.all() or not labels.any():
        raise ValueError("the AUC needs at least one outlier (1) and one normal point (0)")
    return scores, labels


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve: the probability that a random outlier (label 1) scores higher
    than a random normal point (label 0), ties counting one half. Computed from ranks
    (Mann-Whitney U): AUC = (sum of the outliers' ranks - n1 (n1 + 1) / 2) / (n1 n0),
    with tied scores given their average rank."""
    scores, labels = _scores_labels(scores, labels)
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    i = 0
    while i < len(scores):  # average rank over each run of ties (ranks start at 1)
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n1, n0 = int(labels.sum()), int((~labels).sum())
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def roc_curve(scores, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """(false positive rate, true positive rate) for every threshold, from (0, 0) to (1, 1);
    points with equal scores are taken together."""
    scores, labels = _scores_labels(scores, labels)
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], labels[order].double()
    last_of_run = torch.cat([s[1:] != s[:-1], torch.tensor([True])])
    tp, fp = torch.cumsum(y, 0)[last_of_run], torch.cumsum(1 - y, 0)[last_of_run]
    zero = torch.zeros(1, dtype=torch.double)
    return torch.cat([zero, fp / fp[-1]]), torch.cat([zero, tp / tp[-1]])


def pca_components(x: torch.Tensor, k: int) -> torch.Tensor:
    """The first k principal directions of x (N, d) as the columns of a (d, k) matrix
    (right singular vectors of the centred data, largest variance first)."""
    x = _check_data(x)
    if not 1 <= k <= min(x.shape):
        raise ValueError(f"k must be between 1 and {min(x.shape)}, got {k}")
    _, _, vh = torch.linalg.svd(x - x.mean(dim=0), full_matrices=False)
    return vh[:k].T


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angles (radians, ascending) between the column spaces of a (d, k) and b (d, m):
    with orthonormal bases Qa, Qb, the cosines are the singular values of Qa^T Qb.
    All zero when the two matrices span the same subspace."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must be (d, k) and (d, m) with the same d, got {tuple(a.shape)} and {tuple(b.shape)}")
    qa, _ = torch.linalg.qr(a)
    qb, _ = torch.linalg.qr(b.to(a.dtype))
    cosines = torch.linalg.svdvals(qa.T @ qb).clamp(max=1.0)
    return torch.arccos(cosines).sort().values
