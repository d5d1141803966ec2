"""The kernel-sliding explorer's pure parts (dlcourse.widgets.conv): the step-by-step state
must agree with the slides' hand computation and with torch.nn.functional.conv2d.

Values are float64 sums of a few products: ATOL = RTOL = 1e-10 (helpers.py) is ample."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse import conv
from dlcourse.widgets import conv as wconv
from helpers import DEVICES, assert_matches_torch

SLIDE_X = [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0], [0, 1, 0, 0, 0]]
SLIDE_K = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]


# ------------------------------------------------------------------ slide examples
def test_1d_slide_example_step_by_step():
    steps = wconv.conv_steps([1, 1, 1, 0, 0], [1, 0, 1])
    # windows [1 1 1], [1 1 0], [1 0 0] against [1 0 1]; the slide leaves the last one as "?"
    assert [s.value for s in steps] == [2.0, 1.0, 1.0]
    assert [s.cols for s in steps] == [(0, 3), (1, 4), (2, 5)]
    assert [s.running_sums.tolist() for s in steps] == [[1, 1, 2], [1, 1, 1], [1, 1, 1]]
    assert wconv.step_equation(steps[2]) == "1·1 + 0·0 + 0·1 = 1"


def test_2d_slide_example_all_twelve_values():
    steps = wconv.conv_steps(SLIDE_X, SLIDE_K)
    assert len(steps) == 12
    assert steps[-1].output.tolist() == [[4, 3, 4], [2, 4, 3], [2, 3, 4], [2, 3, 1]]  # the deck's last slide
    # the slide's worked first value, row by row: (1+0+1) + (0+1+0) + (0+0+1) = 4
    assert wconv.step_equation(steps[0]) == "(1·1 + 1·0 + 1·1) + (0·0 + 1·1 + 1·0) + (0·1 + 0·0 + 1·1) = 4"
    assert steps[0].running_sums.tolist() == [1, 1, 2, 2, 3, 3, 3, 3, 4]
    # the orange 1 of the last slide: window with top-left corner at row 3, column 2
    assert steps[-1].index == (3, 2) and steps[-1].rows == (3, 6) and steps[-1].cols == (2, 5)


def test_output_fills_in_reading_order():
    steps = wconv.conv_steps(SLIDE_X, SLIDE_K)
    for n, step in enumerate(steps):
        filled = ~torch.isnan(step.output)
        assert int(filled.sum()) == n + 1, f"step {n}: {int(filled.sum())} values filled, expected {n + 1}"
        assert step.index == (n // 3, n % 3)
        assert step.output[step.index] == step.value


def test_partial_equation_shows_the_running_sum():
    step = wconv.conv_steps(SLIDE_X, SLIDE_K)[1]  # window rows 0-2, columns 1-3
    assert wconv.step_equation(step, terms=4) == "(1·1 + 1·0 + 0·1) + (1·0) = 1"
    assert wconv.step_equation(step, terms=5) == "(1·1 + 1·0 + 0·1) + (1·0 + 1·1) = 2"
    with pytest.raises(ValueError, match=r"terms must be in \[1, 9\], got 10"):
        wconv.step_equation(step, terms=10)


def test_flip_gives_true_convolution():
    x, k = [1.0, 2.0, 4.0, 8.0], [1.0, 0.0, -1.0]
    corr = wconv.conv_steps(x, k)[-1].output[0].tolist()
    true_conv = wconv.conv_steps(x, k, flip=True)[-1].output[0].tolist()
    assert corr == [1 - 4, 2 - 8]
    assert true_conv == [4 - 1, 8 - 2]


# ------------------------------------------------------------- against torch
@pytest.mark.parametrize("device", DEVICES)
@given(h=st.integers(1, 7), w=st.integers(1, 7), kh=st.integers(1, 4), kw=st.integers(1, 4),
       stride=st.integers(1, 3), padding=st.integers(0, 2), flip=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_last_step_matches_torch_conv2d(device, h, w, kh, kw, stride, padding, flip, seed):
    if kh > h + 2 * padding or kw > w + 2 * padding:
        return  # the kernel does not fit: covered by test_errors
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(h, w, generator=g, dtype=torch.float64).to(device)
    k = torch.randn(kh, kw, generator=g, dtype=torch.float64).to(device)
    steps = wconv.conv_steps(x, k, stride=stride, padding=padding, flip=flip)
    k_used = torch.flip(k, (0, 1)) if flip else k
    expected = F.conv2d(x[None, None], k_used[None, None], stride=stride, padding=padding)[0, 0].cpu()
    assert len(steps) == expected.numel()
    assert_matches_torch(steps[-1].output, expected, what="output after the last step")
    ours = conv.conv2d(x[None, None], k_used[None, None], stride=stride, padding=padding)[0, 0].cpu()
    assert_matches_torch(steps[-1].output, ours, what="explorer vs dlcourse.conv.conv2d")
    for step in steps:  # every running sum ends at its output value
        assert math.isclose(float(step.running_sums[-1]), float(expected[step.index]), rel_tol=1e-10, abs_tol=1e-10)


@given(n=st.integers(1, 12), kw=st.integers(1, 5), stride=st.integers(1, 3), padding=st.integers(0, 2))
@settings(max_examples=40, deadline=None)
def test_1d_matches_torch_conv1d(n, kw, stride, padding):
    if kw > n + 2 * padding:
        return
    g = torch.Generator().manual_seed(n * 100 + kw)
    x, k = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(kw, generator=g, dtype=torch.float64)
    steps = wconv.conv_steps(x, k, stride=stride, padding=padding)
    expected = F.conv1d(x.view(1, 1, -1), k.view(1, 1, -1), stride=stride, padding=padding).view(1, -1)
    assert_matches_torch(steps[-1].output, expected, what="1-D output after the last step")
    assert wconv.pad_input(x, padding).shape == (1, n + 2 * padding)  # a sequence is padded at its ends only


# ------------------------------------------------------------- frames and errors
def test_explorer_frames():
    assert wconv.explorer_frames(3, 9, per_term=False) == [(0, 9), (1, 9), (2, 9)]
    frames = wconv.explorer_frames(2, 3, per_term=True)
    assert frames == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    with pytest.raises(ValueError, match="at least 1"):
        wconv.explorer_frames(0, 9, per_term=True)


@pytest.mark.parametrize("x, k, kwargs, message", [
    ([[1, 2]], [1, 2], {}, "same number of dimensions"),
    ([[[1]]], [[1]], {}, r"x must be 1-D \(a sequence\) or 2-D \(an image\), got shape \(1, 1, 1\)"),
    ([1, 2], [1, 2, 3], {}, "kernel of length 3 does not fit"),
    ([1, 2, 3], [1], {"stride": 0}, "stride must be an int >= 1, got 0"),
    ([1, 2, 3], [1], {"padding": -1}, "padding must be an int >= 0, got -1"),
    ([], [1], {}, "x must not be empty"),
])
def test_errors(x, k, kwargs, message):
    with pytest.raises(ValueError, match=message):
        wconv.conv_steps(x, k, **kwargs)


def test_plot_step_draws_three_panels():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = wconv.conv_steps(SLIDE_X, SLIDE_K, padding=1)
    fig = wconv.plot_step(wconv.pad_input(SLIDE_X, 1), steps[4], terms=5, padding=1)
    try:
        assert [ax.get_title() for ax in fig.axes] == ["input (padding 1)", "kernel", "output, step 0,4"]
    finally:
        plt.close(fig)


def test_explorer_builds_and_moves():
    widget = wconv.conv_explorer(SLIDE_X, SLIDE_K)
    controls, equation, _picture = widget.children
    _play, slider = controls.children
    assert "out[0, 0]" in equation.value and "= 4</code>" in equation.value
    slider.value = slider.max  # the last frame: the slide's highlighted out[3, 2] = 1
    assert "out[3, 2]" in equation.value and "= 1</code>" in equation.value


def test_explorer_per_term_has_one_frame_per_product():
    widget = wconv.conv_explorer([1, 1, 1, 0, 0], [1, 0, 1], per_term=True)
    controls, equation, _picture = widget.children
    _play, slider = controls.children
    assert slider.max == 3 * 3 - 1  # 3 positions x 3 products
    slider.value = 1  # two products of the first window: 1·1 + 1·0
    assert "= 1·1 + 1·0 = 1</code>" in equation.value
