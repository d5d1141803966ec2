"""Gram matrices, style and texture (lecture 06, deck 003's "neural networks for arts").

A convolutional layer's output F, C channels by H x W positions, describes *what* is *where*. Its
Gram matrix G = F F^T / (H W) keeps only which channels fire together, averaged over all positions:
where things are is gone, the statistics of the texture stay. Style transfer (Gatys et al., 2015)
matches the Gram matrices of a style image while keeping the features of a content image; texture
synthesis matches the Gram matrices alone, starting from noise.

    feats = random_features(image[None, None], generator=g)       # list of (1, C, H, W)
    image = synthesize_texture(target, steps=300, generator=g)    # an image with target's Gram matrices
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """G[c, c'] = (1 / (H W)) sum_{i,j} F[c, i, j] F[c', i, j].

    features: (C, H, W) or (N, C, H, W) -> (C, C) or (N, C, C). Lecture 06.

    >>> gram_matrix(torch.tensor([[[1., 2.]], [[3., 0.]]]))
    tensor([[2.5000, 1.5000],
            [1.5000, 4.5000]])
    """
    if features.dim() not in (3, 4):
        raise ValueError(f"features must be (C, H, W) or (N, C, H, W), got shape {tuple(features.shape)}")
    flat = features.flatten(-2)                       # (..., C, H W)
    return flat @ flat.transpose(-1, -2) / flat.shape[-1]


def gram_matrix_loops(features: torch.Tensor) -> torch.Tensor:
    """The same for one (C, H, W) map, written as the formula's sums (for reading, not for speed)."""
    C, H, W = features.shape
    G = torch.zeros(C, C, dtype=features.dtype)
    for c in range(C):
        for c2 in range(C):
            G[c, c2] = sum(features[c, i, j] * features[c2, i, j] for i in range(H) for j in range(W)) / (H * W)
    return G


def random_filters(channels=(1, 16, 32), kernel_size: int = 3, generator: torch.Generator | None = None):
    """Fixed random convolution filters, one (out, in, k, k) tensor per layer, scaled by 1/sqrt(fan-in).
    Random filters already give useful texture statistics (Ustyuzhaninov et al., 2017)."""
    return [torch.randn(c_out, c_in, kernel_size, kernel_size, generator=generator) / (c_in * kernel_size ** 2) ** 0.5
            for c_in, c_out in zip(channels[:-1], channels[1:])]


def random_features(image: torch.Tensor, filters) -> list[torch.Tensor]:
    """Each layer's ReLU feature map for image (N, C, H, W): conv with circular padding (so a shifted
    texture has exactly the same statistics), ReLU, then the next layer."""
    out, x = [], image
    for w in filters:
        pad = w.shape[-1] // 2
        x = F.relu(F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="circular"), w))
        out.append(x)
    return out


def style_loss(features, target_features) -> torch.Tensor:
    """sum over layers of the mean squared difference of the Gram matrices."""
    return sum(F.mse_loss(gram_matrix(a), gram_matrix(b)) for a, b in zip(features, target_features))


def synthesize_texture(target: torch.Tensor, filters, steps: int = 300, lr: float = 0.05,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[float]]:
    """Texture synthesis: start from noise and follow the gradient of the style loss with Adam.

    target: (H, W) grey image -> (image (H, W), style loss per step).
    """
    target_feats = [f.detach() for f in random_features(target[None, None], filters)]
    image = (0.5 + 0.1 * torch.randn(target.shape, generator=generator)).requires_grad_()
    optimizer = torch.optim.Adam([image], lr=lr)
    losses = []
    for _ in range(steps):
        loss = style_loss(random_features(image[None, None], filters), target_feats)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return image.detach(), losses
