"""Step through a sequence and watch an LSTM's gates (lecture 08, "A gate explorer").

    from dlcourse.widgets.rnn import gate_explorer, lstm_trace
    trace = lstm_trace(model, x)            # a trained dlcourse.sequences.SequenceClassifier (LSTM)
    gate_explorer(trace, tokens=["France", "...", ...])

The pure parts compute what the widget shows and are tested without a browser:

* `lstm_trace` runs the model's LSTM one step at a time with `dlcourse.rnn.lstm_gates`
  (PyTorch's weights and gate order i, f, g, o) and records every gate, c and h;
* `step_summary` says in one line what the chosen units do at step t.

`plot_trace` draws the gates as heat maps (time on the x axis, units on the y axis) with the
current step marked; `gate_explorer` wraps it in ipywidgets (imported only when it is built).
"""
from dataclasses import dataclass

import torch

from dlcourse.rnn import lstm_cell, lstm_gates

GATE_NAMES = {"i": "input gate i", "f": "forget gate f", "g": "candidate g", "o": "output gate o",
              "c": "cell state c", "h": "hidden state h"}


@dataclass(frozen=True)
class LSTMTrace:
    """The activations of one sequence, each (T, H) float64 on the CPU: gates i, f, g, o at
    every step, and the states c_t, h_t after it. `tokens` labels the T steps."""
    i: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    o: torch.Tensor
    c: torch.Tensor
    h: torch.Tensor
    tokens: tuple

    def __len__(self) -> int:
        return self.i.shape[0]


def lstm_trace(model, x, tokens=None) -> LSTMTrace:
    """Run the LSTM of `model` (embedding `model.embed`, one-layer `model.rnn`) on one sequence.

    x: (T,) long ids. The states start at zero, as in nn.LSTM; tokens default to the ids.
    The last h equals what nn.LSTM returns (checked in the tests).
    """
    rnn = model.rnn
    if not isinstance(rnn, torch.nn.LSTM) or rnn.num_layers != 1 or rnn.bidirectional:
        raise TypeError("lstm_trace needs a model whose .rnn is a one-layer, one-directional nn.LSTM")
    x = torch.as_tensor(x)
    if x.dim() != 1:
        raise ValueError(f"x must be one sequence of ids (T,), got shape {tuple(x.shape)}")
    weights = [getattr(rnn, f"{name}_l0", None) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    records = {k: [] for k in "ifgoch"}
    with torch.no_grad():
        inputs = model.embed(x)
        h = inputs.new_zeros(rnn.hidden_size)
        c = inputs.new_zeros(rnn.hidden_size)
        for x_t in inputs:
            gates = lstm_gates(x_t, h, c, *weights)
            h, c = lstm_cell(x_t, h, c, *weights)
            for name, value in zip("ifgoch", (*gates, c, h)):
                records[name].append(value.double().cpu())
    labels = tuple(str(t) for t in (x.tolist() if tokens is None else tokens))
    if len(labels) != len(x):
        raise ValueError(f"got {len(labels)} tokens for a sequence of length {len(x)}")
    return LSTMTrace(**{k: torch.stack(v) for k, v in records.items()}, tokens=labels)


def step_summary(trace: LSTMTrace, t: int, units=None) -> str:
    """One line about step t: the token and the mean of each gate over `units` (default: all)."""
    if not 0 <= t < len(trace):
        raise ValueError(f"t must be in [0, {len(trace) - 1}], got {t}")
    sel = slice(None) if units is None else list(units)
    parts = [f"{name} {getattr(trace, name)[t, sel].mean().item():.2f}" for name in "ifgo"]
    return f"step {t} ({trace.tokens[t]}): mean " + ", ".join(parts)


def plot_trace(trace: LSTMTrace, t: int, units=None, fig=None):
    """Heat maps of i, f, g, o and c over time for the chosen units, step t outlined. Returns the figure."""
    import matplotlib.pyplot as plt

    units = list(range(trace.i.shape[1])) if units is None else list(units)
    if fig is None:
        fig = plt.figure(figsize=(7, 5))
    axes = fig.subplots(5, 1, sharex=True)
    for ax, name in zip(axes, "ifgoc"):
        values = getattr(trace, name)[:, units].T.numpy()
        lo, hi = (-1, 1) if name in "gc" else (0, 1)
        ax.imshow(values, aspect="auto", cmap="RdBu_r" if name in "gc" else "viridis", vmin=lo, vmax=hi,
                  interpolation="nearest")
        ax.axvline(t, color="tab:orange", linewidth=2)
        ax.set_ylabel(name, rotation=0, labelpad=10)
        ax.set_yticks([])
    axes[-1].set_xticks(range(len(trace)))
    axes[-1].set_xticklabels(trace.tokens, rotation=90, fontsize=7)
    axes[0].set_title(f"gates of {len(units)} units over time (orange: step {t})", fontsize=9)
    fig.tight_layout()
    return fig


def gate_explorer(trace: LSTMTrace, units=None):
    """An ipywidgets player over the steps of `trace`: heat maps plus a one-line summary.

    Returns the widget (display it, or leave it as a cell's last expression).
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    play = widgets.Play(min=0, max=len(trace) - 1, step=1, interval=600, description="play")
    slider = widgets.IntSlider(min=0, max=len(trace) - 1, step=1, value=0, description="step")
    widgets.jslink((play, "value"), (slider, "value"))
    summary = widgets.HTML()
    picture = widgets.Output()

    def show(t: int) -> None:
        summary.value = f"<code>{step_summary(trace, t, units)}</code>"
        with picture:
            picture.clear_output(wait=True)
            fig = plot_trace(trace, t, units)
            display(fig)
            plt.close(fig)

    slider.observe(lambda change: show(change["new"]), names="value")
    show(0)
    return widgets.VBox([widgets.HBox([play, slider]), summary, picture])


# ------------------------------------------------------------ lecture 07: gradients through time
def bptt_norms(scale: float, steps: int, nonlinearity: str = "tanh", hidden: int = 16, seed: int = 4) -> torch.Tensor:
    """||dL/dh_t|| by distance T - t (index 0 = the last state), for an RNN with W_ih = I and
    W_hh = scale * Q (Q a seeded random orthogonal matrix), inputs 0.5 N(0, 1), L = sum(h_T).
    nonlinearity: "tanh" (the RNN of the lecture), "relu" or "linear". Returns (steps + 1,)."""
    from dlcourse.rnn import rnn_cell, state_gradient_norms

    if nonlinearity not in ("tanh", "relu", "linear"):
        raise ValueError(f"nonlinearity must be 'tanh', 'relu' or 'linear', got {nonlinearity!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(hidden, hidden, generator=g, dtype=torch.float64))
    xs = 0.5 * torch.randn(steps, 1, hidden, generator=g, dtype=torch.float64)
    w_ih, w_hh = torch.eye(hidden, dtype=torch.float64), scale * q
    h0 = torch.zeros(1, hidden, dtype=torch.float64)
    if nonlinearity == "linear":
        def step(x_t, h):
            return x_t @ w_ih.T + h @ w_hh.T
    else:
        def step(x_t, h):
            return rnn_cell(x_t, h, w_ih, w_hh, nonlinearity=nonlinearity)
    return state_gradient_norms(step, xs, h0).flip(0)


def bptt_summary(norms: torch.Tensor) -> str:
    ratio = (norms[-1] / norms[0]).item()
    verdict = "vanishes" if ratio < 1e-3 else "explodes" if ratio > 1e3 else "survives"
    return (f"|dL/dh| at distance {len(norms) - 1} is {ratio:.2e} times its value at the last step: "
            f"the gradient {verdict}")


def bptt_explorer(scale: float = 1.0, steps: int = 40, nonlinearity: str = "tanh"):
    """Sliders for the scale of W_hh and the length T, a dropdown for the non-linearity:
    the gradient's norm against the distance back in time (log scale)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    scale_slider = widgets.FloatSlider(value=scale, min=0.1, max=2.0, step=0.05, description="scale s",
                                       continuous_update=False)
    steps_slider = widgets.IntSlider(value=steps, min=5, max=100, description="steps T", continuous_update=False)
    kind = widgets.Dropdown(options=["tanh", "relu", "linear"], value=nonlinearity, description="h = f(...)")
    line = widgets.HTML()
    picture = widgets.Output()

    def show(_change=None) -> None:
        norms = bptt_norms(scale_slider.value, steps_slider.value, kind.value)
        line.value = bptt_summary(norms)
        with picture:
            picture.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6, 2.8))
            ax.semilogy(norms.numpy())
            ax.set_xlabel("distance T - t")
            ax.set_ylabel("|dL/dh_t|")
            ax.set_title(f"W_hh = {scale_slider.value:.2f} x orthogonal, {kind.value}", fontsize=9)
            display(fig)
            plt.close(fig)

    for control in (scale_slider, steps_slider, kind):
        control.observe(show, names="value")
    show()
    container = widgets.VBox([widgets.HBox([scale_slider, steps_slider, kind]), line, picture])
    container.add_class("dlcourse-widget")
    return container
