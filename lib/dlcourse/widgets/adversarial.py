"""Pick a test digit and an eps, see FGSM's adversarial image (lecture 06).

    from dlcourse.widgets.adversarial import attack_explorer
    attack_explorer(model, split.x_test, split.y_test)

`attack` computes what is shown (no browser needed): the adversarial image, the perturbation
and the model's prediction and confidence before and after. `plot_attack` draws the three
pictures; `attack_explorer` wraps them in ipywidgets.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dlcourse.adversarial import eval_mode, fgsm


@dataclass
class Attack:
    image: torch.Tensor        # (C, H, W) the clean input
    adversarial: torch.Tensor  # (C, H, W) fgsm(x) (clamped to [0, 1])
    label: int                 # the true class
    before: tuple[int, float]  # (predicted class, its probability) on the clean image
    after: tuple[int, float]   # the same on the adversarial image

    @property
    def perturbation(self) -> torch.Tensor:
        return self.adversarial - self.image


def attack(model, x: torch.Tensor, y: torch.Tensor, index: int, eps: float, target: int | None = None) -> Attack:
    """FGSM on test image `index` (untargeted, or towards `target`)."""
    if not 0 <= index < len(x):
        raise IndexError(f"index must be between 0 and {len(x) - 1}, got {index}")
    image, label = x[index : index + 1], y[index : index + 1]
    goal = label if target is None else torch.tensor([target], device=y.device)
    adversarial = fgsm(model, image, goal, eps, targeted=target is not None)
    with eval_mode(model), torch.no_grad():
        p = model(torch.cat([image, adversarial])).softmax(-1)
    top = [(int(row.argmax()), float(row.max())) for row in p]
    return Attack(image[0], adversarial[0], int(label), top[0], top[1])


def summary(a: Attack, eps: float) -> str:
    (c0, p0), (c1, p1) = a.before, a.after
    verdict = "fooled" if c1 != a.label else "not fooled"
    return (f"true {a.label}: predicted {c0} ({p0:.0%}) -> with eps = {eps:.2f}: {c1} ({p1:.0%}), {verdict}; "
            f"largest pixel change {a.perturbation.abs().max():.2f}")


def plot_attack(a: Attack, fig=None):
    """The clean image, the perturbation (red +, blue -) and the adversarial image."""
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(6.6, 2.3))
    axes = fig.subplots(1, 3)
    limit = max(float(a.perturbation.abs().max()), 1e-6)
    panels = [(a.image, "gray_r", 0, 1, f"clean: {a.before[0]} ({a.before[1]:.0%})"),
              (a.perturbation, "coolwarm", -limit, limit, "perturbation"),
              (a.adversarial, "gray_r", 0, 1, f"adversarial: {a.after[0]} ({a.after[1]:.0%})")]
    for ax, (img, cmap, lo, hi, title) in zip(axes, panels):
        ax.imshow(img[0].cpu().numpy(), cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def attack_explorer(model, x: torch.Tensor, y: torch.Tensor, eps: float = 0.1, eps_max: float = 0.5):
    """Sliders for the test image and eps, a dropdown for the target (none = untargeted)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    index = widgets.IntSlider(min=0, max=len(x) - 1, value=0, description="test digit", continuous_update=False)
    strength = widgets.FloatSlider(min=0.0, max=eps_max, step=0.01, value=eps, description="eps",
                                   continuous_update=False)
    target = widgets.Dropdown(options=[("untargeted", None)] + [(str(c), c) for c in range(10)],
                              value=None, description="target")
    line = widgets.HTML()
    picture = widgets.Output()

    def show(_change=None) -> None:
        a = attack(model, x, y, index.value, strength.value, target.value)
        line.value = summary(a, strength.value)
        with picture:
            picture.clear_output(wait=True)
            fig = plot_attack(a)
            display(fig)
            plt.close(fig)

    for control in (index, strength, target):
        control.observe(show, names="value")
    show()
    container = widgets.VBox([widgets.HBox([index, strength, target]), line, picture])
    container.add_class("dlcourse-widget")
    return container
