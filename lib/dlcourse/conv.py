"""Convolution, stride, padding and pooling (lecture 04, "Convolution by hand").

Two versions of each operation sit side by side:

* the *readable* one (`corr1d`, `corr2d`, `conv2d_loops`, `max_pool2d_loops`) loops over
  output positions exactly as the slides do, one window at a time;
* the *fast* one (`conv2d`, `max_pool2d`) cuts all windows out at once with
  `Tensor.unfold` and reduces them with one `einsum` / `amax`.

Tests check that both agree with each other and with `torch.nn.functional`.

Deep-learning libraries call *cross-correlation* "convolution": the kernel slides over
the input without being flipped. The textbook convolution of the slides,
(f * g)[i] = sum_m f[i - m] g[m], flips it; `convolve1d` / `convolve2d` compute that.
All functions run on the device of their input.
"""
import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------- helpers
def _tensor(x, name: str) -> torch.Tensor:
    """`x` as a tensor (lists and NumPy arrays are converted; tensors pass through)."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor, array or nested list of numbers, got {type(x).__name__}") from err


def _pair(value, name: str) -> tuple[int, int]:
    """An int or a pair of ints as (rows, cols)."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair


def _check_dims(t: torch.Tensor, ndim: int, name: str, what: str) -> None:
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D ({what}), got shape {tuple(t.shape)}")


def _common_dtype(x: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.promote_types(x.dtype, k.dtype)
    return x.to(dtype), k.to(dtype)


# ------------------------------------------------------------------ output size
def conv_output_size(n: int, k: int, stride: int = 1, padding: int = 0) -> int:
    """Length of a convolution's output along one axis: floor((n + 2p - k) / s) + 1.

    n: input length, k: kernel length, s: stride, p: zero padding added on *each* side.
    `conv_output_size(5, 3)` is 3 (the slide's 1-D example); with p = (k - 1) / 2 and
    s = 1 the output keeps the input's length ("same" padding).
    Pooling uses the same formula with k = window size.
    """
    for label, v in (("n", n), ("k", k), ("stride", stride), ("padding", padding)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{label} must be an int, got {v!r}")
    if n < 1 or k < 1:
        raise ValueError(f"n and k must be at least 1, got n={n}, k={k}")
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if k > n + 2 * padding:
        raise ValueError(f"kernel of length {k} does not fit in an input of length {n} padded by {padding} on each side")
    return (n + 2 * padding - k) // stride + 1


# ------------------------------------------------------- readable 1-D / 2-D versions
def corr1d(x, k) -> torch.Tensor:
    """Valid 1-D cross-correlation: out[i] = sum_m x[i + m] * k[m].

    x: (n,), k: (kw,) -> (n - kw + 1,). Lecture 04, "1-D convolution".
    >>> corr1d([1, 1, 1, 0, 0], [1, 0, 1])
    tensor([2, 1, 1])
    """
    x, k = _common_dtype(_tensor(x, "x"), _tensor(k, "k"))
    _check_dims(x, 1, "x", "a sequence")
    _check_dims(k, 1, "k", "a 1-D kernel")
    n_out = conv_output_size(x.shape[0], k.shape[0])
    out = torch.zeros(n_out, dtype=x.dtype, device=x.device)
    for i in range(n_out):
        out[i] = (x[i : i + k.shape[0]] * k).sum()
    return out


def corr2d(x, k) -> torch.Tensor:
    """Valid 2-D cross-correlation: out[i, j] = sum_{a,b} x[i + a, j + b] * k[a, b].

    x: (H, W), k: (kh, kw) -> (H - kh + 1, W - kw + 1). Lecture 04, "2-D convolution".
    """
    x, k = _common_dtype(_tensor(x, "x"), _tensor(k, "k"))
    _check_dims(x, 2, "x", "an image H x W")
    _check_dims(k, 2, "k", "a kernel kh x kw")
    kh, kw = k.shape
    out = torch.zeros(conv_output_size(x.shape[0], kh), conv_output_size(x.shape[1], kw), dtype=x.dtype, device=x.device)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = (x[i : i + kh, j : j + kw] * k).sum()
    return out


def convolve1d(x, k) -> torch.Tensor:
    """Valid 1-D *convolution* as on the slides: (f * g)[i] = sum_m f[i - m] g[m].

    It equals cross-correlation with the kernel flipped: corr1d(x, k[::-1]).
    x: (n,), k: (kw,) -> (n - kw + 1,).
    """
    return corr1d(x, torch.flip(_tensor(k, "k"), dims=(0,)))


def convolve2d(x, k) -> torch.Tensor:
    """Valid 2-D convolution: cross-correlation with the kernel flipped in both axes.

    x: (H, W), k: (kh, kw) -> (H - kh + 1, W - kw + 1).
    """
    return corr2d(x, torch.flip(_tensor(k, "k"), dims=(0, 1)))


# ------------------------------------------------------------- multi-channel conv2d
def _check_conv_args(x, weight, bias):
    x, weight = _tensor(x, "x"), _tensor(weight, "weight")
    if x.dim() not in (3, 4):
        raise ValueError(f"x must be (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    _check_dims(weight, 4, "weight", "out_channels x in_channels x kh x kw")
    if x.shape[-3] != weight.shape[1]:
        raise ValueError(
            f"x has {x.shape[-3]} channels but weight expects {weight.shape[1]} (weight shape {tuple(weight.shape)})"
        )
    named = [("weight", weight)]
    if bias is not None:
        bias = _tensor(bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},) to match weight, got {tuple(bias.shape)}")
        named.append(("bias", bias))
    for name, t in named:  # torch does not mix dtypes here either, and raises a RuntimeError
        if t.dtype != x.dtype:
            raise RuntimeError(f"x is {x.dtype} but {name} is {t.dtype}: conv2d, like torch's, needs one dtype; "
                               f"convert one of them first, e.g. x.to({name}.dtype)")
    return x, weight, bias


def _padding(padding, kernel: tuple[int, int], size: tuple[int, int], stride: tuple[int, int]) -> tuple[int, ...]:
    """Zeros to add as (left, right, top, bottom), the order `F.pad` takes.

    An int or a pair pads both sides of an axis alike; "valid" pads nothing; "same" pads
    k - 1 in all, (k - 1) // 2 before and the rest after (an even kernel gets the extra zero
    on the right / bottom, as in torch), so that the output keeps the input's size.
    Like torch, "same" works only with stride 1 and raises a RuntimeError otherwise.
    """
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise RuntimeError(f"Invalid padding string: {padding!r}; use 'same', 'valid', an int or a pair of ints")
        if padding == "valid":
            padding = 0
        elif stride != (1, 1):
            raise RuntimeError(f"padding='same' is not supported for strided convolutions (got stride {stride}): "
                               "the output could not keep the input's size; pass the padding as numbers")
        else:
            (kh, kw) = kernel
            return ((kw - 1) // 2, kw - 1 - (kw - 1) // 2, (kh - 1) // 2, kh - 1 - (kh - 1) // 2)
    ph, pw = _pair(padding, "padding")
    for n, k, s, p in zip(size, kernel, stride, (ph, pw)):
        conv_output_size(n, k, s, p)  # a clear error for a negative padding or a kernel that does not fit
    return (pw, pw, ph, ph)


def _prepare_conv(x, weight, bias, stride, padding):
    """Checked, batched and zero-padded input for both versions of conv2d."""
    x, weight, bias = _check_conv_args(x, weight, bias)
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    stride = _pair(stride, "stride")
    pads = _padding(padding, tuple(weight.shape[-2:]), tuple(x.shape[-2:]), stride)
    return F.pad(x, pads), weight, bias, stride, unbatched


def conv2d_loops(x, weight, bias=None, stride=1, padding=0) -> torch.Tensor:
    """Readable multi-channel convolution (cross-correlation), same contract as `conv2d`.

    out[n, o, i, j] = bias[o] + sum_{c,a,b} xpad[n, c, i*sh + a, j*sw + b] * weight[o, c, a, b]
    """
    xpad, weight, bias, (sh, sw), unbatched = _prepare_conv(x, weight, bias, stride, padding)
    n, _, h, w = xpad.shape
    o, _, kh, kw = weight.shape
    h_out, w_out = conv_output_size(h, kh, sh), conv_output_size(w, kw, sw)
    out = torch.zeros(n, o, h_out, w_out, dtype=xpad.dtype, device=xpad.device)
    for i in range(h_out):
        for j in range(w_out):
            window = xpad[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]  # (N, C, kh, kw)
            out[:, :, i, j] = (window.unsqueeze(1) * weight).sum(dim=(2, 3, 4))  # (N, O)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out[0] if unbatched else out


def conv2d(x, weight, bias=None, stride=1, padding=0) -> torch.Tensor:
    """Multi-channel 2-D convolution (cross-correlation) with stride and zero padding.

    x: (N, C, H, W) or (C, H, W); weight: (O, C, kh, kw); bias: (O,) or None
    -> (N, O, H_out, W_out), H_out = floor((H + 2p - kh) / s) + 1 (likewise W_out).
    Same arguments and result as `torch.nn.functional.conv2d`: stride and padding an int
    or a pair, or padding="valid" (none) or "same" (output as large as the input; stride 1
    only). x, weight and bias must share one dtype (a RuntimeError otherwise, as in torch).

    All windows at once: `unfold` gives (N, C, H_out, W_out, kh, kw) without copying,
    and one einsum sums channels and kernel positions for every output channel.
    """
    xpad, weight, bias, (sh, sw), unbatched = _prepare_conv(x, weight, bias, stride, padding)
    kh, kw = weight.shape[-2:]
    windows = xpad.unfold(2, kh, sh).unfold(3, kw, sw)  # (N, C, H_out, W_out, kh, kw)
    out = torch.einsum("nchwab,ocab->nohw", windows, weight)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out[0] if unbatched else out


# ----------------------------------------------------------------------- pooling
def _pool_args(x, kernel_size, stride):
    x = _tensor(x, "x")
    if x.dim() < 2:
        raise ValueError(f"x must have at least 2 dimensions (..., H, W), got shape {tuple(x.shape)}")
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = (kh, kw) if stride is None else _pair(stride, "stride")
    conv_output_size(x.shape[-2], kh, sh)  # raises a clear error if the window does not fit
    conv_output_size(x.shape[-1], kw, sw)
    return x, (kh, kw), (sh, sw)


def _max_of_windows(windows: torch.Tensor) -> torch.Tensor:
    """Max of each window (..., kh, kw) -> (...), taken from ONE element per window.

    The gradient then flows to that element only, as in torch: the first maximum in
    row-major order when several entries tie, the last NaN when the window holds NaNs.
    (`amax` would split the gradient evenly among tied entries.)
    """
    flat = windows.flatten(-2)  # (..., kh * kw)
    index = flat.argmax(dim=-1, keepdim=True)  # first maximum; NaN counts as the largest
    nan = flat.isnan()
    if nan.any():  # torch keeps the last NaN it meets
        last_nan = flat.shape[-1] - 1 - nan.flip(-1).to(torch.uint8).argmax(dim=-1, keepdim=True)
        index = torch.where(nan.any(dim=-1, keepdim=True), last_nan, index)
    return flat.gather(-1, index).squeeze(-1)


def max_pool2d_loops(x, kernel_size, stride=None) -> torch.Tensor:
    """Readable max pooling: out[..., i, j] = max_{a,b} x[..., i*sh + a, j*sw + b]."""
    x, (kh, kw), (sh, sw) = _pool_args(x, kernel_size, stride)
    h_out, w_out = conv_output_size(x.shape[-2], kh, sh), conv_output_size(x.shape[-1], kw, sw)
    out = torch.empty(*x.shape[:-2], h_out, w_out, dtype=x.dtype, device=x.device)
    for i in range(h_out):
        for j in range(w_out):
            out[..., i, j] = _max_of_windows(x[..., i * sh : i * sh + kh, j * sw : j * sw + kw])
    return out


def max_pool2d(x, kernel_size, stride=None) -> torch.Tensor:
    """Max pooling over (kh, kw) windows; stride defaults to the window size.

    x: (..., H, W) -> (..., H_out, W_out), H_out = floor((H - kh) / s) + 1.
    Same result and gradient as `torch.nn.functional.max_pool2d(x, kernel_size, stride)`
    (no padding): each window passes its gradient to one maximal entry, the first in
    row-major order on ties. No weights: pooling only summarises each window.
    Lecture 04, "Pooling".
    """
    x, (kh, kw), (sh, sw) = _pool_args(x, kernel_size, stride)
    return _max_of_windows(x.unfold(-2, kh, sh).unfold(-2, kw, sw))


def avg_pool2d(x, kernel_size, stride=None) -> torch.Tensor:
    """Mean pooling over (kh, kw) windows; same shapes as `max_pool2d`.

    Matches `torch.nn.functional.avg_pool2d(x, kernel_size, stride)` (no padding).
    """
    x, (kh, kw), (sh, sw) = _pool_args(x, kernel_size, stride)
    return x.unfold(-2, kh, sh).unfold(-2, kw, sw).mean(dim=(-2, -1))


def max_over_time(c) -> torch.Tensor:
    """Max-over-time pooling of a text CNN: o = max_i c_i along the last axis.

    c: (..., T) feature maps over T positions -> (...,). Lecture 05.
    """
    c = _tensor(c, "c")
    if c.dim() < 1 or c.shape[-1] == 0:
        raise ValueError(f"c must have at least one position along its last axis, got shape {tuple(c.shape)}")
    return c.amax(dim=-1)


# ----------------------------------------------------------------- parameter counts
def dense_layer_weights(n_inputs: int, n_outputs: int) -> int:
    """Weights of a fully connected layer (no biases): n_inputs * n_outputs."""
    return n_inputs * n_outputs


def conv_layer_weights(kh: int, kw: int, in_channels: int, out_channels: int, shared: bool = True,
                       n_positions: int = 1) -> int:
    """Weights of a convolutional layer (no biases).

    shared=True: one kernel per (output, input) channel pair, reused at every position:
    kh * kw * in_channels * out_channels. shared=False ("locally connected"): every one
    of the `n_positions` output positions has its own copy.
    """
    per_position = kh * kw * in_channels * out_channels
    return per_position if shared else per_position * n_positions
