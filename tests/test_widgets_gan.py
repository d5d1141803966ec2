"""The GAN snapshot explorer's pure parts (dlcourse.widgets.gan) and the widget itself:
moving the slider must change what it shows."""
import math

import pytest
import torch

from dlcourse import gan
from dlcourse.widgets import gan as wgan


def small_history():
    torch.manual_seed(0)
    g, d = gan.MLPGenerator(2, 2, hidden=(8,)), gan.MLPDiscriminator(2, hidden=(8,))
    return gan.train_gan(g, d, gan.sample_ring, steps=20, batch_size=32, lr=1e-2,
                         generator=torch.Generator().manual_seed(0), snapshot_every=10,
                         grid=wgan.surface_grid(3.0, 11), progress=False)


def test_surface_grid_layout():
    grid = wgan.surface_grid(2.0, 5)
    assert grid.shape == (25, 2)
    assert grid[0].tolist() == [-2.0, -2.0] and grid[4].tolist() == [2.0, -2.0] and grid[-1].tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="n must be at least 2"):
        wgan.surface_grid(2.0, 1)


def test_snapshot_summary_counts_modes():
    centers = gan.ring_centers()
    collapsed = gan.Snapshot(7, centers[2] + 0.01 * torch.randn(100, 2, generator=torch.Generator().manual_seed(0)),
                             None, 1.25, 0.5)
    assert wgan.snapshot_summary(collapsed, centers, 0.05) == (
        "step 7, D loss 1.250, G loss 0.500: 1 of 8 modes covered, 100% of the samples near a mode")
    spread = gan.Snapshot(0, gan.sample_ring(4000, torch.Generator().manual_seed(1)), None, math.nan, math.nan)
    assert wgan.snapshot_summary(spread, centers, 0.05).startswith("step 0: 8 of 8 modes covered, 99%")


def test_plot_snapshot_draws_the_surface_and_both_clouds():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = small_history()
    fig = wgan.plot_snapshot(history.snapshots[-1], gan.sample_ring(200, torch.Generator().manual_seed(2)))
    try:
        ax = fig.axes[0]
        assert ax.get_title() == "step 20" and len(ax.images) == 1 and len(ax.collections) == 2
        assert ax.images[0].get_array().shape == (11, 11)
    finally:
        plt.close(fig)


def test_explorer_builds_and_moves():
    history = small_history()
    widget = wgan.snapshot_explorer(history, gan.sample_ring(200, torch.Generator().manual_seed(2)),
                                    centers=gan.ring_centers())
    slider, line, _picture = widget.children
    assert slider.max == len(history.snapshots) - 1 == 2
    assert line.value.startswith("step 0:")
    slider.value = slider.max
    assert line.value.startswith("step 20, D loss ")
    assert f"{history.snapshots[-1].d_loss:.3f}" in line.value


def test_explorer_needs_snapshots():
    with pytest.raises(ValueError, match="no snapshots"):
        wgan.snapshot_explorer(gan.GANHistory(), torch.zeros(3, 2))
