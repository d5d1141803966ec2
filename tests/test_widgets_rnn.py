"""The gate explorer's pure parts (dlcourse.widgets.rnn) against nn.LSTM, and the widget itself.

Float64 model, a dozen steps: ATOL = RTOL = 1e-10 (helpers.py) is ample."""
import pytest
import torch

from dlcourse.sequences import SequenceClassifier
from dlcourse.widgets import rnn as wrnn
from helpers import assert_matches_torch


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SequenceClassifier(vocab_size=9, n_classes=3, embed=4, hidden=5, cell="lstm").double()


X = torch.tensor([1, 5, 6, 7, 5, 8, 6, 6, 7, 5, 8, 2])


def test_trace_matches_nn_lstm_and_the_cell_update(model):
    trace = wrnn.lstm_trace(model, X)
    assert len(trace) == len(X) and trace.i.shape == (len(X), 5)
    with torch.no_grad():
        states, (h_n, c_n) = model.rnn(model.embed(X)[None])
    assert_matches_torch(trace.h, states[0], what="h over time vs nn.LSTM")
    assert_matches_torch(trace.c[-1], c_n[0, 0], what="last c vs nn.LSTM")
    c_prev = torch.cat([torch.zeros(1, 5, dtype=torch.float64), trace.c[:-1]])
    assert_matches_torch(trace.c, trace.f * c_prev + trace.i * trace.g, what="c_t = f c_{t-1} + i g")
    assert_matches_torch(trace.h, trace.o * torch.tanh(trace.c), what="h_t = o tanh(c_t)")
    for name in "ifo":
        assert ((getattr(trace, name) > 0) & (getattr(trace, name) < 1)).all(), f"{name} is a sigmoid"
    assert (trace.g.abs() < 1).all()


def test_trace_tokens_and_errors(model):
    words = ["France"] + ["..."] * (len(X) - 2) + ["fluent"]
    assert wrnn.lstm_trace(model, X, tokens=words).tokens[0] == "France"
    assert wrnn.lstm_trace(model, X).tokens[:3] == ("1", "5", "6")
    with pytest.raises(ValueError, match="tokens"):
        wrnn.lstm_trace(model, X, tokens=["a"])
    with pytest.raises(ValueError, match=r"one sequence of ids \(T,\)"):
        wrnn.lstm_trace(model, X[None])
    torch.manual_seed(0)
    with pytest.raises(TypeError, match="nn.LSTM"):
        wrnn.lstm_trace(SequenceClassifier(9, 3, cell="gru"), X)


def test_step_summary_reports_the_step_and_gate_means(model):
    trace = wrnn.lstm_trace(model, X)
    line = wrnn.step_summary(trace, 3, units=[0, 2])
    assert line.startswith("step 3 (7): mean i ")
    assert f"f {trace.f[3, [0, 2]].mean().item():.2f}" in line
    with pytest.raises(ValueError, match=r"t must be in \[0, 11\]"):
        wrnn.step_summary(trace, 12)


def test_plot_has_one_panel_per_gate_and_the_cell(model):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = wrnn.plot_trace(wrnn.lstm_trace(model, X), t=4, units=[1, 3])
    assert [ax.get_ylabel() for ax in fig.axes] == list("ifgoc")
    assert fig.axes[0].images[0].get_array().shape == (2, len(X))
    plt.close(fig)


def test_explorer_builds_and_moving_the_slider_changes_the_view(model):
    widget = wrnn.gate_explorer(wrnn.lstm_trace(model, X))
    controls, summary, _picture = widget.children
    _play, slider = controls.children
    assert slider.max == len(X) - 1
    first = summary.value
    assert "step 0 (1)" in first
    slider.value = 5
    assert "step 5 (8)" in summary.value and summary.value != first


# ------------------------------------------------------------ lecture 07: gradients through time
def test_bptt_norms_of_a_linear_rnn_scale_by_s_per_step():
    from dlcourse.widgets.rnn import bptt_norms

    for s in (0.5, 1.0, 1.3):
        norms = bptt_norms(s, 20, "linear")
        assert norms.shape == (21,)
        assert torch.allclose(norms[20], s ** 20 * norms[0], rtol=1e-9)   # orthogonal W_hh: exactly s per step
    assert bptt_norms(0.5, 30, "tanh")[-1] < bptt_norms(0.5, 30, "linear")[-1]   # tanh' <= 1 shrinks it further
    with pytest.raises(ValueError, match="nonlinearity"):
        bptt_norms(1.0, 5, "sigmoid")


def test_bptt_explorer_controls_move_it():
    import matplotlib

    matplotlib.use("Agg")
    from dlcourse.widgets.rnn import bptt_explorer

    w = bptt_explorer(scale=0.5, steps=40, nonlinearity="linear")
    (scale, steps, kind), line = w.children[0].children, w.children[1]
    assert "dlcourse-widget" in w._dom_classes
    assert f"{0.5 ** 40:.2e}" in line.value and "vanishes" in line.value
    scale.value = 1.5
    assert "explodes" in line.value
    steps.value = 10
    assert f"{1.5 ** 10:.2e}" in line.value
    kind.value = "tanh"
    assert "explodes" not in line.value or f"{1.5 ** 10:.2e}" not in line.value
