"""Comparisons that exercise tests call, so that a wrong answer explains itself.

Each check raises AssertionError with a message a student can act on: what was
checked, the expected and the actual shape, the first wrong position, and both values
there. On success it returns quietly (tests print their own "passed" line).

    >>> check_close([1.0, 2.0], [1.0, 2.5], name="corr1d([1, 2], [1])")
    Traceback (most recent call last):
    ...
    AssertionError: corr1d([1, 2], [1]): 1 of 2 values are wrong; first at index (1,): expected 2.5, got 2.0
"""
import numpy as np
import torch


def to_numpy(value, name: str = "value") -> np.ndarray:
    """A float64 NumPy copy of a tensor, array, list or number (detached, on the CPU)."""
    if value is None:
        raise AssertionError(f"{name}: expected an array, got None (did the function forget to `return`?)")
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise AssertionError(f"{name}: expected numbers, got {type(value).__name__} ({err})") from None


def check_shape(got, expected_shape, name: str = "output") -> None:
    """Fail unless `got` has exactly `expected_shape`."""
    shape = tuple(to_numpy(got, name).shape)
    expected_shape = tuple(expected_shape)
    if shape != expected_shape:
        raise AssertionError(f"{name}: expected shape {expected_shape}, got {shape}")


def check_close(got, expected, name: str = "output", atol: float = 1e-6, rtol: float = 1e-6) -> None:
    """Fail unless `got` matches `expected` in shape and, entry by entry, within
    |got - expected| <= atol + rtol * |expected| (NaN matches only NaN)."""
    got_np, exp_np = to_numpy(got, name), to_numpy(expected, "expected")
    check_shape(got_np, exp_np.shape, name)
    ok = np.isclose(got_np, exp_np, atol=atol, rtol=rtol, equal_nan=True)
    if not ok.all():
        if ok.ndim == 0:
            raise AssertionError(f"{name}: expected {_fmt(exp_np)}, got {_fmt(got_np)}")
        bad = np.argwhere(~ok)
        first = tuple(int(i) for i in bad[0])
        raise AssertionError(
            f"{name}: {len(bad)} of {ok.size} values are wrong; first at index {first}: "
            f"expected {_fmt(exp_np[first])}, got {_fmt(got_np[first])}"
        )


def check_equal(got, expected, name: str = "value") -> None:
    """Fail unless `got == expected` (for ints, tuples and strings)."""
    if got != expected:
        raise AssertionError(f"{name}: expected {expected!r}, got {got!r}")


def _fmt(x) -> str:
    x = float(x)
    return repr(int(x)) + ".0" if x.is_integer() and abs(x) < 1e15 else f"{x:.6g}"
