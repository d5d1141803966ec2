"""dlcourse.conv against torch.nn.functional (float64, ATOL = RTOL = 1e-10; see helpers.py)."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse import conv
from helpers import DEVICES, assert_matches_torch

SLIDE_X = [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0], [0, 1, 0, 0, 0]]
SLIDE_K = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]


def randn(*shape, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device)


# ------------------------------------------------------------------ slide examples
def test_corr1d_slide_example_by_hand():
    # windows [1 1 1], [1 1 0], [1 0 0] against [1 0 1]: 1+1, 1+0, 1+0
    assert conv.corr1d([1, 1, 1, 0, 0], [1, 0, 1]).tolist() == [2, 1, 1]


def test_corr2d_slide_example_matches_torch_and_the_slide():
    out = conv.corr2d(SLIDE_X, SLIDE_K)
    expected = F.conv2d(torch.tensor(SLIDE_X)[None, None], torch.tensor(SLIDE_K)[None, None])[0, 0]
    assert out.tolist() == expected.tolist()
    assert out.tolist() == [[4, 3, 4], [2, 4, 3], [2, 3, 4], [2, 3, 1]]  # the deck's final slide


def test_convolution_flips_the_kernel():
    x, k = torch.tensor([1.0, 2.0, 4.0, 8.0]), torch.tensor([1.0, 0.0, -1.0])
    assert conv.corr1d(x, k).tolist() == [1 - 4, 2 - 8]
    assert conv.convolve1d(x, k).tolist() == [4 - 1, 8 - 2]
    # numpy.convolve(mode="valid") is the textbook convolution
    assert conv.convolve1d(x, k).tolist() == np.convolve(x.numpy(), k.numpy(), mode="valid").tolist()
    x2, k2 = randn(5, 6), randn(2, 3, seed=1)
    assert_matches_torch(conv.convolve2d(x2, k2), conv.corr2d(x2, torch.flip(k2, (0, 1))))


# ------------------------------------------------------------- against torch
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n, kw", [(5, 3), (7, 1), (4, 4), (12, 5)])
def test_corr1d_matches_torch(device, n, kw):
    x, k = randn(n, device=device), randn(kw, device=device, seed=1)
    expected = F.conv1d(x.view(1, 1, -1), k.view(1, 1, -1)).view(-1)
    assert_matches_torch(conv.corr1d(x, k), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape, kshape", [((6, 5), (3, 3)), ((4, 9), (1, 4)), ((3, 3), (3, 3)), ((8, 7), (2, 5))])
def test_corr2d_matches_torch(device, shape, kshape):
    x, k = randn(*shape, device=device), randn(*kshape, device=device, seed=1)
    assert_matches_torch(conv.corr2d(x, k), F.conv2d(x[None, None], k[None, None])[0, 0])


CONV_CASES = [
    # (N, C, H, W), (O, kh, kw), stride, padding
    ((2, 3, 9, 8), (4, 3, 3), 1, 0),
    ((1, 1, 6, 5), (1, 3, 3), 2, 1),
    ((3, 2, 7, 7), (5, 3, 2), (2, 3), (1, 2)),
    ((2, 4, 5, 6), (3, 5, 5), 1, 2),
    ((1, 3, 10, 4), (2, 1, 1), 3, 0),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", [conv.conv2d, conv.conv2d_loops], ids=["fast", "loops"])
@pytest.mark.parametrize("xshape, wshape, stride, padding", CONV_CASES)
def test_conv2d_matches_torch(device, impl, xshape, wshape, stride, padding):
    n, c, h, w = xshape
    o, kh, kw = wshape
    x, weight, bias = randn(*xshape, device=device), randn(o, c, kh, kw, device=device, seed=1), randn(o, device=device, seed=2)
    expected = F.conv2d(x, weight, bias, stride=stride, padding=padding)
    assert_matches_torch(impl(x, weight, bias, stride=stride, padding=padding), expected)
    assert_matches_torch(impl(x, weight, stride=stride, padding=padding), F.conv2d(x, weight, stride=stride, padding=padding))
    assert_matches_torch(impl(x[0], weight, bias, stride=stride, padding=padding), expected[0], what="unbatched (C, H, W) input")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", [conv.conv2d, conv.conv2d_loops], ids=["fast", "loops"])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("kshape", [(3, 3), (2, 2), (2, 5), (4, 1), (1, 1), (7, 7)])
def test_conv2d_string_padding_matches_torch(device, impl, padding, kshape):
    # even kernels: torch puts the extra zero after (right / bottom); a 7 x 7 kernel on a 5 x 6
    # image fits only with "same"
    x, weight, bias = randn(2, 3, 5, 6, device=device), randn(4, 3, *kshape, device=device, seed=1), randn(4, seed=2)
    bias = bias.to(device)
    if padding == "valid" and kshape == (7, 7):
        with pytest.raises(ValueError, match="does not fit"):
            impl(x, weight, bias, padding=padding)
        return
    with warnings.catch_warnings():  # torch warns that an even kernel needs a padded copy
        warnings.simplefilter("ignore", UserWarning)
        expected = F.conv2d(x, weight, bias, padding=padding)
    out = impl(x, weight, bias, padding=padding)
    assert_matches_torch(out, expected, what=f"padding={padding!r}, kernel {kshape}")
    if padding == "same":
        assert out.shape[-2:] == x.shape[-2:]


@pytest.mark.parametrize("impl", [conv.conv2d, conv.conv2d_loops], ids=["fast", "loops"])
@pytest.mark.parametrize("kwargs, message", [
    (dict(padding="same", stride=2), "not supported for strided convolutions"),
    (dict(padding="same", stride=(1, 2)), "not supported for strided convolutions"),
    (dict(padding="full"), "Invalid padding string"),
    (dict(padding="SAME"), "Invalid padding string"),
])
def test_conv2d_rejects_what_torch_rejects_with_a_runtime_error(impl, kwargs, message):
    x, weight = randn(1, 1, 5, 5), randn(1, 1, 3, 3, seed=1)
    with pytest.raises(RuntimeError):
        F.conv2d(x, weight, **kwargs)
    with pytest.raises(RuntimeError, match=message):
        impl(x, weight, **kwargs)


@pytest.mark.parametrize("impl", [conv.conv2d, conv.conv2d_loops], ids=["fast", "loops"])
@pytest.mark.parametrize("x_dtype, w_dtype, b_dtype, culprit", [
    (torch.float32, torch.float64, None, "weight is torch.float64"),
    (torch.float64, torch.float32, None, "weight is torch.float32"),
    (torch.float32, torch.float32, torch.float64, "bias is torch.float64"),
])
def test_conv2d_does_not_mix_dtypes_like_torch(impl, x_dtype, w_dtype, b_dtype, culprit):
    x, weight = randn(1, 2, 5, 5).to(x_dtype), randn(3, 2, 3, 3, seed=1).to(w_dtype)
    bias = None if b_dtype is None else randn(3, seed=2).to(b_dtype)
    with pytest.raises(RuntimeError):
        F.conv2d(x, weight, bias)
    with pytest.raises(RuntimeError, match=f"x is {x_dtype}.* but {culprit}"):
        impl(x, weight, bias)


def test_conv2d_in_float32_matches_torch():
    x, weight = randn(2, 3, 6, 6).float(), randn(4, 3, 3, 3, seed=1).float()
    # float32 sums of 27 products: a few ulps of float32
    assert_matches_torch(conv.conv2d(x, weight, padding="same"), F.conv2d(x, weight, padding="same"),
                         atol=1e-5, rtol=1e-5)


def test_conv2d_accepts_non_contiguous_input():
    x = randn(2, 8, 3, 6).permute(0, 2, 1, 3)  # (2, 3, 8, 6), not contiguous
    weight = randn(4, 3, 3, 3, seed=1)
    assert not x.is_contiguous()
    assert_matches_torch(conv.conv2d(x, weight, stride=2, padding=1), F.conv2d(x, weight, stride=2, padding=1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", [conv.max_pool2d, conv.max_pool2d_loops], ids=["fast", "loops"])
@pytest.mark.parametrize("shape, kernel, stride", [((2, 3, 8, 8), 2, None), ((1, 2, 7, 9), 3, 2), ((4, 5), (2, 3), (1, 2)), ((2, 1, 6, 6), 3, 1)])
def test_max_pool2d_matches_torch(device, impl, shape, kernel, stride):
    x = randn(*shape, device=device)
    assert_matches_torch(impl(x, kernel, stride), F.max_pool2d(x[None] if x.dim() == 2 else x, kernel, stride).view(impl(x, kernel, stride).shape))


def pool_value_and_grad(pool, x, kernel, stride, weights):
    x = x.clone().requires_grad_(True)
    out = pool(x, kernel, stride)
    (out * weights).sum().backward()
    return out.detach(), x.grad


def test_max_pool2d_gives_a_tied_gradient_to_the_first_maximum_like_torch():
    # each 2 x 2 window holds two or four equal maxima; torch passes the whole gradient to the
    # first of them in row-major order (checked against torch below, not assumed)
    x = torch.tensor([[[[1.0, 1.0, 0.0, 2.0], [1.0, 1.0, 2.0, 2.0], [3.0, 0.0, 5.0, 5.0], [3.0, 0.0, 1.0, 1.0]]]],
                     dtype=torch.float64)
    first_max = torch.tensor([[[[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]],
                             dtype=torch.float64)
    _, torch_grad = pool_value_and_grad(F.max_pool2d, x, 2, None, 1.0)
    assert torch.equal(torch_grad, first_max)
    for impl in (conv.max_pool2d, conv.max_pool2d_loops):
        out, grad = pool_value_and_grad(impl, x, 2, None, 1.0)
        assert out.flatten().tolist() == [1.0, 2.0, 3.0, 5.0]
        assert_matches_torch(grad, torch_grad, atol=0, rtol=0, what=f"{impl.__name__} gradient on ties")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", [conv.max_pool2d, conv.max_pool2d_loops], ids=["fast", "loops"])
@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 1), ((2, 3), (1, 2)), (3, 2)])
def test_max_pool2d_gradient_matches_torch_with_ties_nan_and_inf(device, impl, kernel, stride):
    # small integers make ties in almost every window; NaN and -inf entries follow torch's rules
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 3, (2, 3, 7, 8), generator=g).double()
    x[torch.rand(x.shape, generator=g) < 0.05] = float("nan")
    x[torch.rand(x.shape, generator=g) < 0.2] = -float("inf")
    x = x.to(device)
    weights = randn(*F.max_pool2d(x, kernel, stride).shape, device=device, seed=4)
    theirs, torch_grad = pool_value_and_grad(F.max_pool2d, x, kernel, stride, weights)
    ours, grad = pool_value_and_grad(impl, x, kernel, stride, weights)
    assert torch.equal(ours.isnan(), theirs.isnan()), "NaN positions differ from torch"
    assert_matches_torch(ours.nan_to_num(), theirs.nan_to_num(), atol=0, rtol=0, what="pooled values")
    # overlapping windows add several weights into one entry, in another order than torch's
    assert_matches_torch(grad, torch_grad, atol=1e-12, rtol=0, what="gradient")


@pytest.mark.parametrize("device", DEVICES)
def test_avg_pool2d_and_max_over_time(device):
    x = randn(2, 3, 8, 7, device=device)
    assert_matches_torch(conv.avg_pool2d(x, 2, 1), F.avg_pool2d(x, 2, 1))
    assert_matches_torch(conv.max_over_time(x), x.max(dim=-1).values)


# --------------------------------------------------------------- properties
sizes = st.integers(min_value=1, max_value=9)


@settings(deadline=None, max_examples=60)
@given(h=sizes, w=sizes, kh=sizes, kw=sizes, sh=st.integers(1, 4), sw=st.integers(1, 4),
       ph=st.integers(0, 3), pw=st.integers(0, 3), c=st.integers(1, 3), o=st.integers(1, 3))
def test_conv2d_shape_and_values_for_any_stride_and_padding(h, w, kh, kw, sh, sw, ph, pw, c, o):
    if kh > h + 2 * ph or kw > w + 2 * pw:
        with pytest.raises(ValueError, match="does not fit"):
            conv.conv2d(randn(1, c, h, w), randn(o, c, kh, kw), stride=(sh, sw), padding=(ph, pw))
        return
    x, weight = randn(1, c, h, w), randn(o, c, kh, kw, seed=1)
    out = conv.conv2d(x, weight, stride=(sh, sw), padding=(ph, pw))
    assert out.shape == (1, o, conv.conv_output_size(h, kh, sh, ph), conv.conv_output_size(w, kw, sw, pw))
    assert_matches_torch(out, F.conv2d(x, weight, stride=(sh, sw), padding=(ph, pw)))


@settings(deadline=None, max_examples=40)
@given(h=sizes, w=sizes, kh=sizes, kw=sizes, c=st.integers(1, 2), o=st.integers(1, 2))
def test_same_padding_keeps_the_size_for_any_kernel(h, w, kh, kw, c, o):
    x, weight = randn(1, c, h, w), randn(o, c, kh, kw, seed=1)
    out = conv.conv2d(x, weight, padding="same")
    assert out.shape == (1, o, h, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert_matches_torch(out, F.conv2d(x, weight, padding="same"))


@settings(deadline=None, max_examples=200)
@given(n=st.integers(1, 60), k=st.integers(1, 60), s=st.integers(1, 8), p=st.integers(0, 10))
def test_conv_output_size_counts_window_positions(n, k, s, p):
    if k > n + 2 * p:
        with pytest.raises(ValueError):
            conv.conv_output_size(n, k, s, p)
        return
    # count the start positions 0, s, 2s, ... at which a window of k fits in n + 2p
    assert conv.conv_output_size(n, k, s, p) == len(range(0, n + 2 * p - k + 1, s))


@settings(deadline=None, max_examples=50)
@given(n=st.integers(3, 12), kw=st.integers(1, 3), shift=st.integers(0, 5))
def test_corr1d_is_linear_and_shift_equivariant(n, kw, shift):
    x, y, k = randn(n), randn(n, seed=1), randn(kw, seed=2)
    assert_matches_torch(conv.corr1d(2 * x + y, k), 2 * conv.corr1d(x, k) + conv.corr1d(y, k))
    shifted = torch.cat([torch.zeros(shift, dtype=x.dtype), x])
    assert_matches_torch(conv.corr1d(shifted, k)[shift:], conv.corr1d(x, k))


# ---------------------------------------------------------- errors and counts
@pytest.mark.parametrize("call, message", [
    (lambda: conv.conv2d(randn(1, 3, 5, 5), randn(2, 2, 3, 3)), "3 channels but weight expects 2"),
    (lambda: conv.conv2d(randn(5, 5), randn(1, 1, 3, 3)), r"\(N, C, H, W\)"),
    (lambda: conv.conv2d(randn(1, 1, 5, 5), randn(2, 1, 3, 3), bias=randn(3)), "bias must have shape"),
    (lambda: conv.conv2d(randn(1, 1, 5, 5), randn(1, 1, 3, 3), stride=0), "stride must be at least 1"),
    (lambda: conv.conv2d(randn(1, 1, 5, 5), randn(1, 1, 3, 3), padding=-1), "padding must be >= 0"),
    (lambda: conv.corr2d(randn(2, 2), randn(3, 3)), "does not fit"),
    (lambda: conv.corr1d(randn(2, 2), randn(3)), "must be 1-D"),
    (lambda: conv.max_pool2d(randn(3), 2), "at least 2 dimensions"),
    (lambda: conv.conv_output_size(5, 3, 1.5), "stride must be an int"),
])
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_four_k_parameter_counts():
    pixels = 3840 * 2160
    assert pixels == 8_294_400
    assert conv.dense_layer_weights(pixels, pixels) == 68_797_071_360_000  # ~68.8 trillion, not 64
    assert conv.conv_layer_weights(16, 16, 1, 256, shared=False, n_positions=pixels) == 543_581_798_400
    assert conv.conv_layer_weights(16, 16, 1, 256) == 65_536
