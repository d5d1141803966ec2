"""Generative adversarial networks (lecture 11, "GANs").

A generator G maps noise z to samples; a discriminator D maps a sample to the logit of
"this is real". The decks' two-player game (Goodfellow et al., 2014) is

    min_G max_D V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))],   D = sigmoid(logit).

Both players' losses are binary cross-entropies, computed here from *logits* with
softplus, which stays finite for every finite logit:

    -log sigmoid(l)     = softplus(-l)        (label 1, "real")
    -log(1 - sigmoid(l)) = softplus(l)        (label 0, "fake")

Naming: the course keeps PyTorch's `generator=` for a `torch.Generator` (the random
numbers), so the two networks are called `g_net` and `d_net`. Every function runs on
the device of its input.
"""
from dataclasses import dataclass, field
import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


# --------------------------------------------------------------------------- helpers
def _float_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    return x


def _same_device(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.device != b.device:
        raise ValueError(f"{names} must be on the same device, got {a.device} and {b.device}")


def _nonnegative_pair(a, b, names: tuple[str, str], what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float tensors of one shape and device with entries >= 0 (densities, probabilities)."""
    a, b = _float_tensor(a, names[0]), _float_tensor(b, names[1])
    _same_device(a, b, f"{names[0]} and {names[1]}")
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if (a < 0).any() or (b < 0).any():
        raise ValueError(f"{what} must be >= 0")
    return a, b


# ---------------------------------------------------------------------------- losses
def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's loss: BCE(real, 1) + BCE(fake, 0), each averaged over its own batch.

    = mean softplus(-real_logits) + mean softplus(fake_logits) = -V(D, G) on the batch.
    real_logits: any shape (N, ...), fake_logits: any shape (M, ...) -> scalar.
    Lecture 11, "The two losses".

    >>> discriminator_loss(torch.tensor([0.0]), torch.tensor([0.0]))  # D(x) = 1/2: 2 log 2
    tensor(1.3863)
    """
    real_logits = _float_tensor(real_logits, "real_logits")
    fake_logits = _float_tensor(fake_logits, "fake_logits")
    _same_device(real_logits, fake_logits, "real_logits and fake_logits")
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor, saturating: bool = False) -> torch.Tensor:
    """G's loss on the discriminator's logits for generated samples.

    saturating=False (practice): -mean log D(G(z)) = mean softplus(-l)   (BCE(fake, 1))
    saturating=True (the minimax game): mean log(1 - D(G(z))) = -mean softplus(l)
    fake_logits: any shape -> scalar. Lecture 11, "Saturating vs non-saturating".
    """
    fake_logits = _float_tensor(fake_logits, "fake_logits")
    if not isinstance(saturating, bool):
        raise TypeError(f"saturating must be True or False, got {saturating!r}")
    if saturating:
        return -F.softplus(fake_logits).mean()
    return F.softplus(-fake_logits).mean()


def gan_value(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """V(D, G) = mean log D(x) + mean log(1 - D(G(z))) on a batch (= -discriminator_loss)."""
    return -discriminator_loss(real_logits, fake_logits)


# ------------------------------------------------------- the optimal discriminator
def optimal_discriminator(p_data: torch.Tensor, p_g: torch.Tensor) -> torch.Tensor:
    """D*(x) = p_data(x) / (p_data(x) + p_g(x)), elementwise.

    p_data, p_g: densities (>= 0) at the same points, same shape -> same shape.
    Where both densities are 0 every value of D is optimal; we return 1/2 there.
    Lecture 11, "The optimal discriminator".

    >>> optimal_discriminator(torch.tensor([1.0, 2.0, 0.0]), torch.tensor([3.0, 2.0, 0.0]))
    tensor([0.2500, 0.5000, 0.5000])
    """
    p_data, p_g = _nonnegative_pair(p_data, p_g, ("p_data", "p_g"), "densities")
    total = p_data + p_g
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, p_data / safe, torch.full_like(total, 0.5))


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence of two discrete distributions (natural log), last axis.

    JSD(p, q) = KL(p || m) / 2 + KL(q || m) / 2 with m = (p + q) / 2, 0 log 0 = 0;
    0 <= JSD <= log 2. For densities on a grid pass p(x_i) dx and q(x_i) dx.
    At D*, V(D*, G) = -log 4 + 2 JSD(p_data, p_g). p, q: (..., K) -> (...).
    """
    p, q = _nonnegative_pair(p, q, ("p", "q"), "probabilities")
    for name, t in (("p", p), ("q", q)):
        total = t.sum(dim=-1)
        if not torch.allclose(total, torch.ones_like(total), atol=1e-6):
            raise ValueError(f"{name} must sum to 1 along its last axis, got sums {total.flatten()[:3].tolist()}")
    m = (p + q) / 2
    kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(dim=-1)
    kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(dim=-1)
    return (kl_pm + kl_qm) / 2


# ------------------------------------------------------------------------- networks
class MLPGenerator(nn.Module):
    """G: z (N, latent_dim) -> x (N, out_dim), Linear + ReLU layers.

    out_activation: None (any real output), "sigmoid" (pixels in [0, 1]) or "tanh".
    """

    def __init__(self, latent_dim: int, out_dim: int, hidden=(64, 64), out_activation: str | None = None):
        super().__init__()
        if out_activation not in (None, "sigmoid", "tanh"):
            raise ValueError(f"out_activation must be None, 'sigmoid' or 'tanh', got {out_activation!r}")
        self.latent_dim, self.out_dim = latent_dim, out_dim
        layers, width = [], latent_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, out_dim))
        if out_activation == "sigmoid":
            layers.append(nn.Sigmoid())
        elif out_activation == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (N, {self.latent_dim}), got {tuple(z.shape)}")
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """D: x (N, in_dim) -> logits (N / pack,), Linear + LeakyReLU(0.2) layers.

    pack > 1 is PacGAN (Lin et al., 2018): D judges `pack` samples at once, concatenated
    into one input of pack * in_dim numbers, so it can see that a batch lacks variety,
    a remedy for mode collapse. N must then be a multiple of pack.
    """

    def __init__(self, in_dim: int, hidden=(64, 64), pack: int = 1):
        super().__init__()
        if not isinstance(pack, int) or pack < 1:
            raise ValueError(f"pack must be an int >= 1, got {pack!r}")
        self.in_dim, self.pack = in_dim, pack
        layers, width = [], in_dim * pack
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x must have shape (N, {self.in_dim}), got {tuple(x.shape)}")
        if x.shape[0] % self.pack:
            raise ValueError(f"the batch size {x.shape[0]} must be a multiple of pack={self.pack}")
        return self.net(x.reshape(x.shape[0] // self.pack, -1)).squeeze(-1)


# -------------------------------------------------------------------------- training
def sample_latent(n: int, latent_dim: int, generator: torch.Generator | None = None,
                  device=None, dtype=torch.float32) -> torch.Tensor:
    """z ~ N(0, I): (n, latent_dim). The random numbers come from `generator` (on the CPU),
    then move to `device`, so a seed gives the same z on every device."""
    return torch.randn(n, latent_dim, generator=generator, dtype=dtype).to(device or "cpu")


def d_step(g_net: nn.Module, d_net: nn.Module, real: torch.Tensor, z: torch.Tensor,
           opt_d: torch.optim.Optimizer) -> float:
    """One step of D on real data and on G(z).detach(): no gradient reaches G. Returns D's loss."""
    with torch.no_grad():
        fake = g_net(z)
    d_loss = discriminator_loss(d_net(real), d_net(fake))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    return d_loss.item()


def g_step(g_net: nn.Module, d_net: nn.Module, z: torch.Tensor, opt_g: torch.optim.Optimizer,
           saturating: bool = False) -> float:
    """One step of G against the current D (only opt_g steps; D's weights stay). Returns G's loss."""
    g_loss = generator_loss(d_net(g_net(z)), saturating=saturating)
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return g_loss.item()


def train_step(g_net: nn.Module, d_net: nn.Module, real: torch.Tensor, z: torch.Tensor,
               opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
               saturating: bool = False) -> tuple[float, float]:
    """One alternating step: D first, then G against the updated D. Returns (d_loss, g_loss).

    D's step sees G(z) detached: its loss must not send gradients into G. G's step
    evaluates the updated D on G(z) and only opt_g steps.
    real: (N, d) data batch, z: (M, latent_dim) noise. Lecture 11, "Training".
    """
    d_loss = d_step(g_net, d_net, real, z, opt_d)
    return d_loss, g_step(g_net, d_net, z, opt_g, saturating=saturating)


@dataclass
class Snapshot:
    """The state of a GAN after `step` training steps (on the CPU, for plotting).

    samples: G(fixed_z), (n_fixed, out_dim); d_on_grid: sigmoid(D(grid)), (n_grid,), or None.
    """

    step: int
    samples: torch.Tensor
    d_on_grid: torch.Tensor | None
    d_loss: float
    g_loss: float


@dataclass
class GANHistory:
    """Per-step losses and the snapshots recorded while training."""

    d_loss: list = field(default_factory=list)
    g_loss: list = field(default_factory=list)
    snapshots: list = field(default_factory=list)


@torch.no_grad()
def take_snapshot(g_net: nn.Module, d_net: nn.Module, step: int, fixed_z: torch.Tensor,
                  grid: torch.Tensor | None = None, d_loss: float = math.nan, g_loss: float = math.nan) -> Snapshot:
    """G(fixed_z) and, if a grid (n_grid, d) is given, D's probability of "real" on it."""
    device = next(g_net.parameters()).device
    samples = g_net(fixed_z.to(device)).cpu()
    d_on_grid = None
    if grid is not None:
        d_on_grid = torch.sigmoid(d_net(grid.to(device))).cpu() if getattr(d_net, "pack", 1) == 1 else None
    return Snapshot(step, samples, d_on_grid, d_loss, g_loss)


def train_gan(g_net: nn.Module, d_net: nn.Module, data, steps: int, batch_size: int = 64,
              lr: float = 2e-4, betas=(0.5, 0.999), saturating: bool = False,
              generator: torch.Generator | None = None, snapshot_every: int = 0,
              fixed_z: torch.Tensor | None = None, grid: torch.Tensor | None = None,
              progress: bool = True, desc: str = "GAN", d_steps: int = 1, g_steps: int = 1) -> GANHistory:
    """Train a GAN with Adam for `steps` rounds of d_steps steps of D, then g_steps of G.

    data: a tensor (N, d) of real samples (each batch draws rows at random) or a function
    (n, generator) -> (n, d). Batches and noise come from `generator`; the networks'
    device decides where they go. With snapshot_every > 0, a `Snapshot` of G(fixed_z)
    (and of D on `grid`) is recorded at step 0, every snapshot_every steps and at the end.
    d_steps = g_steps = 1 is `train_step`; Goodfellow et al. (2014) take k = d_steps >= 1
    and warn that training G much more than D (g_steps > d_steps) collapses many z onto
    one x: mode collapse. Returns a GANHistory with the last D and G losses of each round.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got {steps} and {batch_size}")
    if d_steps < 1 or g_steps < 1:
        raise ValueError(f"d_steps and g_steps must be at least 1, got {d_steps} and {g_steps}")
    if snapshot_every < 0:
        raise ValueError(f"snapshot_every must be >= 0, got {snapshot_every}")
    if isinstance(data, torch.Tensor):
        table = data
        data = lambda n, gen: table[torch.randint(len(table), (n,), generator=gen)]  # noqa: E731
    elif not callable(data):
        raise TypeError(f"data must be a tensor (N, d) or a function (n, generator) -> samples, got {type(data).__name__}")
    device = next(g_net.parameters()).device
    latent_dim = g_net.latent_dim
    opt_g = torch.optim.Adam(g_net.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(d_net.parameters(), lr=lr, betas=betas)
    if snapshot_every and fixed_z is None:
        fixed_z = sample_latent(256, latent_dim, generator)
    history = GANHistory()
    if snapshot_every:
        history.snapshots.append(take_snapshot(g_net, d_net, 0, fixed_z, grid))
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=0.5)
    for step in bar:
        for _ in range(d_steps):
            real = data(batch_size, generator).to(device)
            z = sample_latent(batch_size, latent_dim, generator, device)
            d_loss = d_step(g_net, d_net, real, z, opt_d)
        for _ in range(g_steps):
            z = sample_latent(batch_size, latent_dim, generator, device)
            g_loss = g_step(g_net, d_net, z, opt_g, saturating=saturating)
        history.d_loss.append(d_loss)
        history.g_loss.append(g_loss)
        if snapshot_every and (step % snapshot_every == 0 or step == steps):
            history.snapshots.append(take_snapshot(g_net, d_net, step, fixed_z, grid, d_loss, g_loss))
        if step % 100 == 0 or step == steps:
            bar.set_postfix(d_loss=f"{d_loss:.3f}", g_loss=f"{g_loss:.3f}")
    return history


# ------------------------------------------------------- a 2-D mixture of Gaussians
def ring_centers(n_modes: int = 8, radius: float = 2.0) -> torch.Tensor:
    """Centres of n_modes Gaussians evenly spaced on a circle: (n_modes, 2), float32."""
    angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def sample_ring(n: int, generator: torch.Generator | None = None, n_modes: int = 8,
                radius: float = 2.0, std: float = 0.05) -> torch.Tensor:
    """n points from an equal mixture of Gaussians (std `std`) on a ring: (n, 2), float32."""
    centers = ring_centers(n_modes, radius)
    which = torch.randint(n_modes, (n,), generator=generator)
    return centers[which] + std * torch.randn(n, 2, generator=generator)


@dataclass
class ModeCoverage:
    """How generated samples spread over the modes of a mixture.

    counts: (K,) samples within n_std * std of each centre; fractions = counts / n;
    covered: modes holding at least a quarter of their fair share 1/K;
    good: fraction of samples near *some* mode (the rest fall between modes);
    nearest: (K,) fraction of all samples whose nearest centre is each mode, however far.
    """

    counts: torch.Tensor
    fractions: torch.Tensor
    covered: int
    good: float
    nearest: torch.Tensor


def mode_coverage(samples: torch.Tensor, centers: torch.Tensor, std: float, n_std: float = 3.0) -> ModeCoverage:
    """Assign each sample (N, d) to its nearest centre (K, d) if it lies within n_std * std."""
    samples, centers = _float_tensor(samples, "samples"), _float_tensor(centers, "centers")
    dist = torch.cdist(samples.double(), centers.to(samples.device).double())  # (N, K)
    nearest = dist.min(dim=1)
    near = nearest.values <= n_std * std
    counts = torch.bincount(nearest.indices[near], minlength=len(centers)).cpu()
    fractions = counts.double() / len(samples)
    covered = int((fractions >= 0.25 / len(centers)).sum())
    nearest_share = torch.bincount(nearest.indices, minlength=len(centers)).cpu().double() / len(samples)
    return ModeCoverage(counts, fractions, covered, float(near.double().mean()), nearest_share)
