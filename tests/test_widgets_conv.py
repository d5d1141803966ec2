"""The pure parts of the convolution explorer: its steps agree with dlcourse.conv and torch."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse import conv
from dlcourse.widgets.conv import conv_explorer, conv_steps, explorer_frames, step_equation
from helpers import assert_matches_torch

SLIDE_X = [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0], [0, 1, 0, 0, 0]]
SLIDE_K = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]


def test_slide_steps_and_equation():
    steps = conv_steps(SLIDE_X, SLIDE_K)
    assert len(steps) == 12
    assert step_equation(steps[0]) == "(1·1 + 1·0 + 1·1) + (0·0 + 1·1 + 1·0) + (0·1 + 0·0 + 1·1) = 4"
    assert step_equation(steps[0], terms=3) == "(1·1 + 1·0 + 1·1) = 2"  # running sum after one kernel row
    assert steps[-1].output.tolist() == [[4, 3, 4], [2, 4, 3], [2, 3, 4], [2, 3, 1]]
    assert torch.isnan(steps[0].output).sum() == 11  # not yet visited positions are blank
    assert [s.value for s in steps[:3]] == [4, 3, 4]


def test_one_dimensional_input_is_one_row():
    steps = conv_steps([1, 1, 1, 0, 0], [1, 0, 1])
    assert [s.value for s in steps] == [2, 1, 1]


@settings(deadline=None, max_examples=40)
@given(h=st.integers(3, 8), w=st.integers(3, 8), kh=st.integers(1, 3), kw=st.integers(1, 3),
       stride=st.integers(1, 3), padding=st.integers(0, 2), flip=st.booleans())
def test_last_step_equals_conv2d(h, w, kh, kw, stride, padding, flip):
    g = torch.Generator().manual_seed(h * 100 + w)
    x, k = torch.randn(h, w, generator=g, dtype=torch.float64), torch.randn(kh, kw, generator=g, dtype=torch.float64)
    kernel = torch.flip(k, (0, 1)) if flip else k
    expected = F.conv2d(x[None, None], kernel[None, None], stride=stride, padding=padding)[0, 0]
    steps = conv_steps(x, k, stride=stride, padding=padding, flip=flip)
    assert len(steps) == expected.numel()
    assert_matches_torch(steps[-1].output, expected)
    assert_matches_torch(steps[-1].output, conv.conv2d(x[None, None], kernel[None, None], stride=stride, padding=padding)[0, 0])


def test_frames():
    assert explorer_frames(3, 4, per_term=False) == [(0, 4), (1, 4), (2, 4)]
    assert explorer_frames(2, 2, per_term=True) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    with pytest.raises(ValueError, match="at least 1"):
        explorer_frames(0, 4, per_term=False)


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="1-D .* or 2-D"):
        conv_steps(torch.zeros(2, 2, 2), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="padding"):
        conv_steps(SLIDE_X, SLIDE_K, padding=-1)


def test_explorer_builds_and_moves():
    widget = conv_explorer(SLIDE_X, SLIDE_K)
    controls, equation, _picture = widget.children
    _play, slider = controls.children
    assert "= 4" in equation.value
    slider.value = slider.max
    assert "out[3, 2]" in equation.value and equation.value.split("</code>")[0].endswith("= 1")
