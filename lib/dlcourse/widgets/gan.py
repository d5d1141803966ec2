"""Scrub through the training snapshots of a 2-D GAN (lecture 11, "A GAN on a ring of Gaussians").

    from dlcourse.widgets.gan import snapshot_explorer, surface_grid
    grid = surface_grid(extent=3.0, n=41)
    history = gan.train_gan(..., snapshot_every=100, grid=grid)
    snapshot_explorer(history, data, extent=3.0, centers=gan.ring_centers(), std=0.05)

The pure parts are tested without a browser: `surface_grid` lays out the points where the
discriminator is evaluated, `snapshot_summary` writes one snapshot as a line of numbers
(losses, modes covered, share of samples near a mode), `plot_snapshot` draws D's surface
with the data and G's samples on top. `snapshot_explorer` wraps them in ipywidgets
(imported only when the explorer is built).
"""
import math

import torch

from dlcourse.gan import GANHistory, Snapshot, mode_coverage


def surface_grid(extent: float = 3.0, n: int = 41) -> torch.Tensor:
    """n x n points covering [-extent, extent]^2, row by row (y outer, x inner): (n * n, 2)."""
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    if extent <= 0:
        raise ValueError(f"extent must be > 0, got {extent}")
    axis = torch.linspace(-extent, extent, n)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=1)


def snapshot_summary(snapshot: Snapshot, centers: torch.Tensor, std: float) -> str:
    """One line of numbers: the step, both losses, and how the samples cover the modes."""
    cov = mode_coverage(snapshot.samples, centers, std)
    losses = ("" if math.isnan(snapshot.d_loss) else
              f", D loss {snapshot.d_loss:.3f}, G loss {snapshot.g_loss:.3f}")
    return (f"step {snapshot.step}{losses}: {cov.covered} of {len(centers)} modes covered, "
            f"{cov.good:.0%} of the samples near a mode")


def plot_snapshot(snapshot: Snapshot, data: torch.Tensor, extent: float = 3.0, ax=None):
    """D's probability of "real" as a coloured surface, the data (grey) and G's samples (red)."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(3.6, 3.4))
    else:
        fig = ax.figure
    if snapshot.d_on_grid is not None:
        n = math.isqrt(len(snapshot.d_on_grid))
        if n * n != len(snapshot.d_on_grid):
            raise ValueError(f"d_on_grid has {len(snapshot.d_on_grid)} values, not a square grid (use surface_grid)")
        surface = ax.imshow(snapshot.d_on_grid.reshape(n, n).numpy(), origin="lower", cmap="coolwarm_r",
                            vmin=0, vmax=1, extent=(-extent, extent, -extent, extent), alpha=0.6)
        if len(fig.axes) == 1:
            fig.colorbar(surface, ax=ax, fraction=0.046, label="D(x)")
    ax.scatter(data[:, 0], data[:, 1], s=2, c="grey", alpha=0.3, label="data")
    ax.scatter(snapshot.samples[:, 0], snapshot.samples[:, 1], s=3, c="red", label="G(z)")
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_title(f"step {snapshot.step}")
    return fig


def snapshot_explorer(history: GANHistory, data: torch.Tensor, extent: float = 3.0,
                      centers: torch.Tensor | None = None, std: float = 0.05):
    """A slider over `history.snapshots`: D's surface, the data and G's samples at each one.

    With `centers` (the mixture's modes) the line above the picture counts the modes covered.
    Returns the widget (display it, or leave it as a cell's last expression).
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    snapshots = history.snapshots
    if not snapshots:
        raise ValueError("the history has no snapshots: train with snapshot_every > 0")
    slider = widgets.IntSlider(min=0, max=len(snapshots) - 1, value=0, description="snapshot",
                               continuous_update=False)
    line = widgets.HTML()
    picture = widgets.Output()

    def show(index: int) -> None:
        snapshot = snapshots[index]
        line.value = (snapshot_summary(snapshot, centers, std) if centers is not None
                      else f"step {snapshot.step}")
        with picture:
            picture.clear_output(wait=True)
            fig = plot_snapshot(snapshot, data, extent)
            display(fig)
            plt.close(fig)

    slider.observe(lambda change: show(change["new"]), names="value")
    show(0)
    return widgets.VBox([slider, line, picture])
