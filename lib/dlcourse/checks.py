"""Comparisons that exercise tests call, so that a wrong answer explains itself.

Each check raises AssertionError with a message a student can act on: what was
checked, the expected and the actual shape, the first wrong position, and both values
there. On success it returns quietly (tests print their own "passed" line).

    >>> check_close([1.0, 2.0], [1.0, 2.5], name="corr1d([1, 2], [1])")
    Traceback (most recent call last):
    ...
    AssertionError: corr1d([1, 2], [1]): 1 of 2 values are wrong; first at index (1,): expected 2.5, got 2.0
"""
from contextlib import contextmanager

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


class ReferenceUsedError(AssertionError):
    """A graded function called a reference implementation that the exercise asks the
    student to write. Subclasses AssertionError so nbgrader scores the part 0."""


def _resolve(target: str):
    """'torch.nn.functional.conv2d' -> [(owner, attribute, object)], a module -> its public
    callables (and those of its already-imported submodules, for a package)."""
    import importlib
    import inspect
    import sys

    try:
        module = importlib.import_module(target)
    except ImportError:
        module = None
    if module is not None:
        if hasattr(module, "__path__"):     # a package: load its plain modules so none escapes
            import pkgutil
            for info in pkgutil.iter_modules(module.__path__, module.__name__ + "."):
                if not info.ispkg:
                    try:
                        importlib.import_module(info.name)
                    except Exception:   # an optional module that cannot load is not reachable either
                        continue
        found = []
        prefix = module.__name__ + "."
        root = module.__name__.split(".")[0]
        modules = [module] + [m for name, m in list(sys.modules.items())
                              if name.startswith(prefix) and m is not None]
        for mod in modules:
            for attr, obj in list(vars(mod).items()):
                if attr.startswith("_") or inspect.ismodule(obj) or not callable(obj):
                    continue
                if mod.__name__ == __name__ or (inspect.isclass(obj) and issubclass(obj, BaseException)):
                    continue        # the checks themselves and exception types stay usable
                home = getattr(obj, "__module__", None)
                if isinstance(home, str) and not home.startswith(root):
                    continue        # imported from elsewhere (contextlib, numpy, typing, ...)
                found.append((mod, attr, obj, f"{mod.__name__}.{attr}"))
        return found
    owner_name, _, attr = target.rpartition(".")
    owner = importlib.import_module(owner_name)
    if not hasattr(owner, attr):
        return []
    return [(owner, attr, getattr(owner, attr), target)]


@contextmanager
def references_forbidden(*targets: str, namespace: dict | None = None, part: str = "this part"):
    """Run the code in the block with the given reference implementations made unusable.

    `targets` are dotted names of functions or classes ("torch.nn.functional.conv2d",
    "torch.optim.SGD") or of whole modules ("torch.optim", "dlcourse"; a package covers its
    imported submodules). Inside the block every one of them raises ReferenceUsedError,
    whether it is reached through its module or through a name the notebook imported it
    under (pass the notebook's `globals()` as `namespace`). A call is remembered even when
    the student's code catches the error, and reported when the block ends.

        with references_forbidden("torch.nn.functional.conv2d", "dlcourse", namespace=globals(),
                                  part="conv2d"):
            out = conv2d(x, w)
    """
    calls: list[str] = []

    def blocked(name):
        def refuse(*args, **kwargs):
            calls.append(name)
            raise ReferenceUsedError(_reference_message(name, part))
        refuse.__name__ = name.rpartition(".")[2]
        return refuse

    patched = []            # (owner, attribute, original)
    originals = {}          # id(original) -> replacement
    try:
        for target in targets:
            for owner, attr, obj, name in _resolve(target):
                replacement = originals.setdefault(id(obj), blocked(name))
                patched.append((owner, attr, obj))
                setattr(owner, attr, replacement)
        renamed = []
        if namespace is not None:
            for key, value in list(namespace.items()):
                if id(value) in originals and not key.startswith("__"):
                    renamed.append((key, value))
                    namespace[key] = originals[id(value)]
        try:
            yield
        finally:
            for key, value in renamed:
                namespace[key] = value
    finally:
        for owner, attr, obj in reversed(patched):
            setattr(owner, attr, obj)
    if calls:
        raise ReferenceUsedError(_reference_message(calls[0], part))


def _reference_message(name: str, part: str) -> str:
    return (f"{part}: your code calls {name}, a reference implementation that this exercise asks "
            f"you to write yourself, so this part scores 0. Rewrite it with basic tensor operations "
            f"(see the rules at the top of the notebook).")
