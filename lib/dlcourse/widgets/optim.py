"""An explorer for lecture 03: pick an optimizer, a learning rate and a momentum, and
watch its path on the contour plot of `dlcourse.optim.quadratic_2d`.

    from dlcourse.widgets.optim import OptimizerExplorer
    OptimizerExplorer()          # the last line of a cell displays it

The "momentum" slider sets SGD's and RMSProp's momentum and Adam's beta1; AdaGrad and
AdaDelta have no momentum, so the slider is disabled for them.
"""
import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from dlcourse import optim

LABELS = {"sgd": "SGD (momentum)", "adagrad": "AdaGrad", "rmsprop": "RMSProp", "adadelta": "AdaDelta", "adam": "Adam"}


def hyperparameters(name: str, lr: float, momentum: float) -> dict:
    """The keyword arguments of `optim.<name>_step` that the explorer's sliders set."""
    if name in ("sgd", "rmsprop"):
        return {"lr": lr, "momentum": momentum}
    if name == "adam":
        return {"lr": lr, "betas": (momentum, 0.999)}
    if name in ("adagrad", "adadelta"):
        return {"lr": lr}
    raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(LABELS)}")


def plot_paths(ax, paths: dict, lim: float = 5.0) -> None:
    """Contours of quadratic_2d on [-lim, lim]^2 and one line per trajectory (label -> (T, 2))."""
    grid = torch.linspace(-lim, lim, 101, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    zz = optim.quadratic_2d(torch.stack([xx, yy], dim=-1))
    ax.contour(xx.numpy(), yy.numpy(), zz.numpy(), levels=12, colors="0.75", linewidths=0.7)
    for label, path in paths.items():
        p = path.detach().cpu().numpy()
        ax.plot(p[:, 0], p[:, 1], ".-", markersize=3, linewidth=1, label=label)
    ax.plot([0], [0], "k*", markersize=8)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("$w_1$")
    ax.set_ylabel("$w_2$")
    ax.legend(fontsize=7, loc="upper right")


class OptimizerExplorer:
    """Dropdown + two sliders + a plot; `path` holds the trajectory currently shown."""

    def __init__(self, x0=(-4.0, 2.0), n_steps: int = 40):
        self.x0 = torch.tensor(x0, dtype=torch.float64)
        self.n_steps = n_steps
        self.name = widgets.Dropdown(options=[(v, k) for k, v in LABELS.items()], value="sgd", description="optimizer")
        self.lr = widgets.FloatLogSlider(value=0.05, base=10, min=-3, max=1.5, step=0.05, description="lr",
                                         readout_format=".3f")
        self.momentum = widgets.FloatSlider(value=0.0, min=0.0, max=0.99, step=0.01, description="momentum")
        self.output = widgets.Output()
        self.path = None
        for control in (self.name, self.lr, self.momentum):
            control.observe(self.update, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.name, self.lr, self.momentum]), self.output])
        self.update()

    def update(self, change=None) -> None:
        """Recompute the trajectory for the current settings and redraw it."""
        name = self.name.value
        self.momentum.disabled = name in ("adagrad", "adadelta")
        hyper = hyperparameters(name, self.lr.value, self.momentum.value)
        self.path = optim.run(name, optim.quadratic_2d_grad, self.x0, self.n_steps, **hyper)
        final = optim.quadratic_2d(self.path[-1]).item()
        fig, ax = plt.subplots(figsize=(5, 3.5))
        plot_paths(ax, {LABELS[name]: self.path})
        ok = bool(torch.isfinite(self.path).all()) and final < optim.quadratic_2d(self.x0).item()
        ax.set_title(f"{LABELS[name]}: f after {self.n_steps} steps = {final:.3g}" if ok else
                     f"{LABELS[name]}: diverged", fontsize=9)
        with self.output:
            self.output.clear_output(wait=True)
            display(fig)
        plt.close(fig)

    def _ipython_display_(self):
        display(self.widget)
