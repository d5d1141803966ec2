"""Slide a kernel over an input one step at a time (lecture 04, "Convolution by hand").

    from dlcourse.widgets.conv import conv_explorer
    conv_explorer([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], ...], [[1, 0, 1], [0, 1, 0], [1, 0, 1]])

The pure parts compute what the widget shows and are tested without a browser:

* `conv_steps` walks the output positions in reading order and records, for each one, the
  window it covers, the products window * kernel, their running sum and the output so far;
* `explorer_frames` lists what each tick of the player shows (one output position, or one
  more product of the running sum);
* `step_equation` writes a step as the slide writes it: "1·1 + 1·0 + 1·1 + ... = 4".

`plot_step` draws one frame with matplotlib; `conv_explorer` wraps it in ipywidgets
(imported only when the explorer is built). The arithmetic is cross-correlation, as in
`dlcourse.conv.conv2d` and PyTorch; `flip=True` flips the kernel first (true convolution).
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dlcourse.conv import conv_output_size


@dataclass(frozen=True)
class ConvStep:
    """The state after the kernel has visited one output position.

    index: (i, j) output position; rows, cols: [start, stop) of the window in the *padded*
    input; window, products: (kh, kw); running_sums: (kh * kw,) cumulative sums of
    `products` in reading order, so running_sums[-1] is the output value; output: the
    whole (H_out, W_out) output as float64 with the positions not yet visited set to NaN.
    """

    index: tuple[int, int]
    rows: tuple[int, int]
    cols: tuple[int, int]
    window: torch.Tensor
    kernel: torch.Tensor
    products: torch.Tensor
    running_sums: torch.Tensor
    output: torch.Tensor

    @property
    def value(self) -> float:
        """out[i, j] = sum of the products in the window."""
        return float(self.running_sums[-1])


def _as_2d(x, name: str) -> tuple[torch.Tensor, bool]:
    """A 1-D sequence becomes one row (1, n); a 2-D image passes through. The explorer draws
    with matplotlib, so its tensors live on the CPU whatever the input's device."""
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    if t.dim() not in (1, 2):
        raise ValueError(f"{name} must be 1-D (a sequence) or 2-D (an image), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    return (t.unsqueeze(0), True) if t.dim() == 1 else (t, False)


def pad_input(x, padding: int = 0) -> torch.Tensor:
    """The input as the kernel sees it: 2-D, zero-padded by `padding` on each side.

    A 1-D input (n,) becomes one row (1, n + 2p): a sequence is padded at its two ends only.
    """
    t, is_1d = _as_2d(x, "x")
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    pad_rows = 0 if is_1d else padding
    return F.pad(t.to(torch.float64), (padding, padding, pad_rows, pad_rows))


def conv_steps(x, k, stride: int = 1, padding: int = 0, flip: bool = False) -> list[ConvStep]:
    """Every step of a valid cross-correlation, in reading order (row by row).

    out[i, j] = sum_{a,b} xpad[i*s + a, j*s + b] * k[a, b]; x: (n,) or (H, W), k of the same
    number of dimensions; flip=True uses k flipped in every axis (convolution as on the slides).
    All tensors in the steps are float64 on the CPU (they are for drawing).
    Returns H_out * W_out steps (a 1-D input counts as one row); the last step's `output`
    equals `dlcourse.conv.conv2d` of the same arguments.
    """
    xt, x_is_1d = _as_2d(x, "x")
    kt, k_is_1d = _as_2d(k, "k")
    if x_is_1d != k_is_1d:
        raise ValueError(f"x and k must have the same number of dimensions, got shapes "
                         f"{tuple(torch.as_tensor(x).shape)} and {tuple(torch.as_tensor(k).shape)}")
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be an int >= 1, got {stride!r}")
    xpad = pad_input(x, padding)
    kt = kt.to(torch.float64)
    if flip:
        kt = torch.flip(kt, dims=(0, 1))
    kh, kw = kt.shape
    pad_rows = 0 if x_is_1d else padding
    h_out = conv_output_size(xt.shape[0], kh, stride if not x_is_1d else 1, pad_rows)
    w_out = conv_output_size(xt.shape[1], kw, stride, padding)
    output = torch.full((h_out, w_out), float("nan"), dtype=torch.float64)
    steps = []
    for i in range(h_out):
        for j in range(w_out):
            r0, c0 = i * stride, j * stride
            window = xpad[r0 : r0 + kh, c0 : c0 + kw]
            products = window * kt
            running = torch.cumsum(products.flatten(), dim=0)
            output[i, j] = running[-1]
            steps.append(ConvStep((i, j), (r0, r0 + kh), (c0, c0 + kw), window.clone(), kt.clone(),
                                  products, running, output.clone()))
    return steps


def explorer_frames(n_steps: int, n_terms: int, per_term: bool) -> list[tuple[int, int]]:
    """What each tick of the player shows: (step, terms), `terms` products summed so far.

    per_term=False: one tick per output position, each showing its full sum (terms = n_terms).
    per_term=True: n_terms ticks per position, adding one product at a time.
    """
    if n_steps < 1 or n_terms < 1:
        raise ValueError(f"n_steps and n_terms must be at least 1, got {n_steps} and {n_terms}")
    if not per_term:
        return [(s, n_terms) for s in range(n_steps)]
    return [(s, t) for s in range(n_steps) for t in range(1, n_terms + 1)]


def _fmt(v) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else f"{v:.3g}"


def step_equation(step: ConvStep, terms: int | None = None) -> str:
    """The sum behind one output value, one kernel row per bracket, as on the slide:

    "(1·1 + 1·0 + 1·1) + (0·0 + 1·1 + 1·0) + (0·1 + 0·0 + 1·1) = 4".
    With `terms` only the first `terms` products appear and the right side is their running sum.
    """
    kh, kw = step.kernel.shape
    n = kh * kw if terms is None else terms
    if not 1 <= n <= kh * kw:
        raise ValueError(f"terms must be in [1, {kh * kw}], got {terms}")
    groups = []
    for a in range(kh):
        row = [f"{_fmt(step.window[a, b])}·{_fmt(step.kernel[a, b])}" for b in range(kw) if a * kw + b < n]
        if row:
            groups.append(" + ".join(row))
    lhs = " + ".join(f"({g})" for g in groups) if kh > 1 else groups[0]
    return f"{lhs} = {_fmt(step.running_sums[n - 1])}"


def _draw_grid(ax, values, title, cell_colors=None, labels=None):
    """Numbers in a grid of unit cells, (0, 0) at the top left."""
    import numpy as np

    h, w = values.shape
    ax.imshow(np.ones((h, w, 3)) if cell_colors is None else cell_colors, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    for r in range(h):
        for c in range(w):
            text = labels[r][c] if labels is not None else _fmt(values[r, c])
            ax.text(c, r, text, ha="center", va="center", fontsize=9)
    ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
    ax.grid(which="minor", color="0.6", linewidth=0.8)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_title(title, fontsize=9)


def plot_step(xpad: torch.Tensor, step: ConvStep, terms: int | None = None, padding: int = 0, fig=None):
    """Draw one frame: input (window in orange, products summed so far shaded), kernel,
    and the output so far (the current cell shows the running sum). Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    kh, kw = step.kernel.shape
    n = kh * kw if terms is None else terms
    xp = xpad.numpy()
    h, w = xp.shape
    colors = np.ones((h, w, 3))
    if padding:
        pad_rows = padding if h > 1 else 0  # a 1-D input is padded at its two ends only
        colors[:pad_rows], colors[h - pad_rows:] = 0.9, 0.9
        colors[:, :padding], colors[:, w - padding:] = 0.9, 0.9
    (r0, _), (c0, _) = step.rows, step.cols
    for t in range(n):
        colors[r0 + t // kw, c0 + t % kw] = (1.0, 0.85, 0.6)
    out = step.output.numpy().copy()
    i, j = step.index
    out_labels = [["" if np.isnan(v) else _fmt(v) for v in row] for row in out]
    out_labels[i][j] = _fmt(step.running_sums[n - 1])
    out_colors = np.ones(out.shape + (3,))
    out_colors[i, j] = (1.0, 0.85, 0.6)

    if fig is None:
        fig = plt.figure(figsize=(7, 1.0 + 0.25 * max(h, out.shape[0])))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [w, kw, out.shape[1]]})
    _draw_grid(axes[0], xp, "input" + (f" (padding {padding})" if padding else ""), colors)
    axes[0].add_patch(Rectangle((c0 - 0.5, r0 - 0.5), kw, kh, fill=False, edgecolor="tab:orange", linewidth=2.5))
    _draw_grid(axes[1], step.kernel.numpy(), "kernel")
    _draw_grid(axes[2], out, f"output, step {i},{j}", out_colors, out_labels)
    fig.tight_layout()
    return fig


def conv_explorer(x, k, stride: int = 1, padding: int = 0, flip: bool = False, per_term: bool = False):
    """An ipywidgets player that slides `k` over `x` (1-D or 2-D) one step at a time.

    Each frame shows the input with the current window highlighted, the kernel, the output
    filled in so far, and the sum behind the current value. per_term=True adds the products
    one at a time (the running sum); otherwise each tick moves to the next output position.
    Returns the widget (display it, or leave it as a cell's last expression).
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    steps = conv_steps(x, k, stride=stride, padding=padding, flip=flip)
    xpad = pad_input(x, padding)
    kh, kw = steps[0].kernel.shape
    frames = explorer_frames(len(steps), kh * kw, per_term)

    play = widgets.Play(min=0, max=len(frames) - 1, step=1, interval=700, description="play")
    slider = widgets.IntSlider(min=0, max=len(frames) - 1, step=1, value=0, description="step",
                               continuous_update=True)
    widgets.jslink((play, "value"), (slider, "value"))
    equation = widgets.HTML()
    picture = widgets.Output()

    def show(frame_index: int) -> None:
        s, terms = frames[frame_index]
        step = steps[s]
        label = "convolution (kernel flipped)" if flip else "cross-correlation"
        equation.value = (f"<code>out[{step.index[0]}, {step.index[1]}] = {step_equation(step, terms)}</code>"
                          f" &nbsp; ({label}, stride {stride}, padding {padding})")
        with picture:
            picture.clear_output(wait=True)
            fig = plot_step(xpad, step, terms, padding)
            display(fig)
            plt.close(fig)

    slider.observe(lambda change: show(change["new"]), names="value")
    show(0)
    return widgets.VBox([widgets.HBox([play, slider]), equation, picture])
