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
            raise AssertionError(f"{name}: expected {_fmt(exp_np, expected)}, got {_fmt(got_np, got)}")
        bad = np.argwhere(~ok)
        first = tuple(int(i) for i in bad[0])
        raise AssertionError(
            f"{name}: {len(bad)} of {ok.size} values are wrong; first at index {first}: "
            f"expected {_fmt(exp_np[first], expected)}, got {_fmt(got_np[first], got)}"
        )


def check_equal(got, expected, name: str = "value") -> None:
    """Fail unless `got == expected` (for ints, tuples and strings)."""
    if got != expected:
        raise AssertionError(f"{name}: expected {expected!r}, got {got!r}")


def _fmt(x, source=None) -> str:
    """One value for a message: as an integer when `source` (the tensor, array or list it came from) holds
    integers (`expected -100, got 1`), else as a float (`2.0`, `0.333333`)."""
    x = float(x)
    if _holds_integers(source) and x.is_integer():
        return repr(int(x))
    return repr(int(x)) + ".0" if x.is_integer() and abs(x) < 1e15 else f"{x:.6g}"


def _holds_integers(source) -> bool:
    """True for integer or bool tensors and arrays, and for Python ints (or lists of them)."""
    if isinstance(source, torch.Tensor):
        return not (source.is_floating_point() or source.is_complex())
    if isinstance(source, np.ndarray):
        return source.dtype.kind in "iub"
    if isinstance(source, (bool, int, np.integer)):
        return True
    if isinstance(source, (list, tuple)) and source:
        return all(_holds_integers(item) for item in source)
    return False


class ReferenceUsedError(AssertionError):
    """A graded function called a reference implementation that the exercise asks the
    student to write. Subclasses AssertionError so nbgrader scores the part 0."""


def _resolve(target: str):
    """'torch.nn.functional.conv2d' -> [(owner, attribute, object, name)]; a module -> its public
    callables (and those of its already-imported submodules, for a package: the others are
    blocked as they are imported, see _BlockOnImport)."""
    import importlib
    import sys

    try:
        module = importlib.import_module(target)
    except ImportError:
        module = None
    if module is not None:
        prefix = module.__name__ + "."
        modules = [module] + [m for name, m in list(sys.modules.items()) if name.startswith(prefix) and m is not None]
        return [found for mod in modules for found in _callables(mod, module.__name__)]
    owner_name, _, attr = target.rpartition(".")
    owner = importlib.import_module(owner_name)
    if not hasattr(owner, attr):
        return []
    return [(owner, attr, getattr(owner, attr), target)]


def _callables(mod, root: str):
    """The public functions and classes that module `mod` defines itself (within package `root`)."""
    import inspect
    found = []
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


class _BlockOnImport:
    """A sys.meta_path finder for the length of a block: a submodule of a forbidden package that
    is first imported inside the block (`from dlcourse import conv` in the student's function) is
    blocked as soon as it has loaded, so the package's other modules need not be imported ahead.
    While such a module runs its own top-level code, blocked functions run as usual: an import is
    not a call by the student (blocking ahead never saw it either); in that thread alone, so
    that another thread of the student's gains nothing by it."""

    def __init__(self, packages: list[str], block):
        self.packages, self.block, self.loading = packages, block, {}   # thread id -> imports under way

    def importing(self) -> bool:
        import threading
        return self.loading.get(threading.get_ident(), 0) > 0

    def find_spec(self, fullname, path=None, target=None):
        import sys
        if not any(fullname.startswith(p + ".") for p in self.packages):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _LoadThenBlock(spec.loader, self)
                return spec
        return None


class _LoadThenBlock:
    """The module's own loader, then its callables blocked (see _BlockOnImport)."""

    def __init__(self, loader, hook: _BlockOnImport):
        self.loader, self.hook = loader, hook

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        import threading
        me, loading = threading.get_ident(), self.hook.loading
        loading[me] = loading.get(me, 0) + 1
        try:
            self.loader.exec_module(module)
        finally:
            loading[me] -= 1
            module.__loader__ = self.loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self.loader
        root = next(p for p in self.hook.packages if module.__name__.startswith(p + "."))
        self.hook.block(_callables(module, root))


# The aten operators that each forbidden PyTorch reference is (torch.ops.aten.<name>, whatever
# overload): references_forbidden watches every torch call with a TorchFunctionMode, PyTorch's
# own interception point, which sees the object called whatever door the student's code took
# (torch.ops.aten.*, torch._C._VariableFunctions.*, a Tensor method, a default argument bound
# before the block, the forward of an nn.Module). (A TorchDispatchMode would see one level
# deeper, but its first use imports some 800 modules of torch: a second per grading kernel.)
_CONV = ("convolution", "_convolution", "conv1d", "conv2d", "convolution_overrideable", "mkldnn_convolution",
         "_slow_conv2d_forward", "thnn_conv2d", "_conv_depthwise2d", "slow_conv_dilated2d")
_POOL = ("max_pool2d", "max_pool2d_with_indices", "mkldnn_max_pool2d", "quantized_max_pool2d")
_DROPOUT = ("dropout", "dropout_", "native_dropout", "feature_dropout", "feature_dropout_")
_BCE = ("binary_cross_entropy",)
_BCE_LOGITS = ("binary_cross_entropy_with_logits",)
_SDPA = ("scaled_dot_product_attention", "_scaled_dot_product_attention_math", "_scaled_dot_product_flash_attention",
         "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
         "_scaled_dot_product_cudnn_attention", "_fused_sdp_choice")
_MHA = ("_native_multi_head_attention",)
ATEN_OPS = {
    "torch.nn.functional.conv1d": _CONV, "torch.nn.functional.conv2d": _CONV, "torch.conv1d": _CONV,
    "torch.conv2d": _CONV, "torch.nn.Conv1d": _CONV, "torch.nn.Conv2d": _CONV,
    "torch.nn.functional.max_pool2d": _POOL, "torch.max_pool2d": _POOL, "torch.nn.MaxPool2d": _POOL,
    "torch.nn.functional.unfold": ("im2col",), "torch.nn.Unfold": ("im2col",),
    "torch.nn.functional.dropout": _DROPOUT, "torch.dropout": _DROPOUT, "torch.nn.Dropout": _DROPOUT,
    "torch.logsumexp": ("logsumexp",),
    "torch.nn.functional.binary_cross_entropy": _BCE, "torch.nn.BCELoss": _BCE,
    "torch.nn.functional.binary_cross_entropy_with_logits": _BCE_LOGITS, "torch.nn.BCEWithLogitsLoss": _BCE_LOGITS,
    "torch.nn.functional.scaled_dot_product_attention": _SDPA,
    "torch.nn.functional.multi_head_attention_forward": _MHA, "torch.nn.MultiheadAttention": _MHA,
    "torch.lstm": ("lstm",), "torch.lstm_cell": ("lstm_cell",), "torch.gru": ("gru",), "torch.gru_cell": ("gru_cell",),
    "torch.rnn_tanh": ("rnn_tanh",), "torch.rnn_tanh_cell": ("rnn_tanh_cell",), "torch.rnn_relu_cell": ("rnn_relu_cell",),
    "torch.nn.LSTM": ("lstm",), "torch.nn.LSTMCell": ("lstm_cell",), "torch.nn.GRU": ("gru",),
    "torch.nn.GRUCell": ("gru_cell",), "torch.nn.RNN": ("rnn_tanh", "rnn_relu"),
    "torch.nn.RNNCell": ("rnn_tanh_cell", "rnn_relu_cell"),
}


def _op_name(func) -> str | None:
    """'convolution' for aten.convolution.default or torch.ops.aten.convolution; None for others."""
    packet = getattr(func, "overloadpacket", func)
    name = getattr(packet, "_qualified_op_name", None)
    return name.split("::", 1)[1] if isinstance(name, str) and name.startswith("aten::") else None


class _ForbiddenOps:
    """The torch side of references_forbidden: a TorchFunctionMode that sees every torch function,
    Tensor method and torch.ops call by the object called. `objects`: {id(callable): target};
    `ops`: {aten operator name: target}; `refuse(target, door)` raises (and remembers the call);
    `importing()`: a module imported in the block runs its own code (not the student's call)."""

    def __init__(self, objects: dict, ops: dict, refuse, importing):
        from torch.overrides import TorchFunctionMode
        watch = self

        class Watch(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                target = watch.objects.get(id(func)) or watch.ops.get(_op_name(func) or "")
                if target and not watch.importing():
                    watch.refuse(target, _door(func))
                return func(*args, **(kwargs or {}))

        self.objects, self.ops, self.refuse, self.importing = objects, ops, refuse, importing
        self.mode = Watch()

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)
        return False


def _door(func) -> str:
    """How a student's code reached a torch callable, in words for the message."""
    op = _op_name(func)
    if op:
        return f"torch.ops.aten.{op}"
    owner = getattr(func, "__objclass__", None)
    if owner is not None and issubclass(owner, torch._C.TensorBase):
        return f"the Tensor method .{func.__name__}"
    module = getattr(func, "__module__", None) or "torch"
    return f"{module}.{getattr(func, '__name__', func)}"


@contextmanager
def references_forbidden(*targets: str, namespace: dict | None = None, part: str = "this part"):
    """Run the code in the block with the given reference implementations made unusable.

    `targets` are dotted names of functions or classes ("torch.nn.functional.conv2d",
    "torch.optim.SGD") or of whole modules ("torch.optim", "dlcourse"; a package covers its
    submodules, those imported before the block and those first imported inside it). Inside
    the block every one of them raises ReferenceUsedError, whether it is reached through its
    module or through a name the notebook imported it under (pass the notebook's `globals()`
    as `namespace`). A call is remembered even when
    the student's code catches the error, and reported when the block ends.

        with references_forbidden("torch.nn.functional.conv2d", "dlcourse", namespace=globals(),
                                  part="conv2d"):
            out = conv2d(x, w)
    """
    import importlib
    import sys

    calls: list[str] = []

    def blocked(name, original):
        def refuse(*args, **kwargs):
            if hook.importing():   # a module imported in the block runs its own top-level code
                return original(*args, **kwargs)
            calls.append(name)
            raise ReferenceUsedError(_reference_message(name, part))
        refuse.__name__ = name.rpartition(".")[2]
        return refuse

    patched = []            # (owner, attribute, original)
    originals = {}          # id(original) -> replacement

    def block(found):
        for owner, attr, obj, name in found:
            replacement = originals.setdefault(id(obj), blocked(name, obj))
            patched.append((owner, attr, obj))
            setattr(owner, attr, replacement)

    packages = []
    for target in targets:
        try:
            if hasattr(importlib.import_module(target), "__path__"):
                packages.append(target)
        except ImportError:
            pass
    hook = _BlockOnImport(packages, block)
    objects, ops = {}, {}
    torch_targets = [t for t in targets if t.startswith("torch.")]
    for target in torch_targets:
        for *_, obj, _name in _resolve(target):
            objects[id(obj)] = target
            method = getattr(torch.Tensor, target.rpartition(".")[2], None)
            if target.count(".") == 1 and method is not None:   # torch.logsumexp: also z.logsumexp()
                objects[id(method)] = target
        ops.update({op: target for op in ATEN_OPS.get(target, ())})

    def refuse_op(target, door):
        calls.append(target if door.endswith(target) else f"{target} (through {door})")
        raise ReferenceUsedError(_reference_message(calls[-1], part))
    watch = _ForbiddenOps(objects, ops, refuse_op, hook.importing) if torch_targets else None
    try:
        for target in targets:
            block(_resolve(target))
        if packages:
            sys.meta_path.insert(0, hook)
        renamed = []
        if namespace is not None:
            for key, value in list(namespace.items()):
                if id(value) in originals and not key.startswith("__"):
                    renamed.append((key, value))
                    namespace[key] = originals[id(value)]
        try:
            if watch is None:
                yield
            else:
                with watch:
                    yield
        finally:
            for key, value in renamed:
                namespace[key] = value
    finally:
        if hook in sys.meta_path:
            sys.meta_path.remove(hook)
        for owner, attr, obj in reversed(patched):
            setattr(owner, attr, obj)
    if calls:
        raise ReferenceUsedError(_reference_message(calls[0], part))


def _reference_message(name: str, part: str) -> str:
    return (f"{part}: your code calls {name}, a reference implementation that this exercise asks "
            f"you to write yourself, so this part scores 0. Rewrite it with basic tensor operations "
            f"(see the rules at the top of the notebook).")


# ------------------------------------------------------- types, dtypes and in-place changes
def check_tensor(value, dtype: torch.dtype | None = None, shape=None, name: str = "output",
                 hint: str | None = None) -> None:
    """Fail unless `value` is a torch.Tensor (of `dtype` and `shape` when given).

    Call it before comparing numbers, so that a NumPy array, a list or a float mask is
    reported as what it is instead of as a raw TypeError/RuntimeError further down.
    `hint` (what to change) is appended to a dtype message.

        >>> check_tensor(np.zeros(2), name="out")
        Traceback (most recent call last):
        ...
        AssertionError: out: expected a torch.Tensor, got numpy.ndarray (build the result with torch operations, or convert it with torch.as_tensor)
        >>> check_tensor(torch.ones(2), dtype=torch.bool, name="mask", hint="make it with a comparison, e.g. u >= p")
        Traceback (most recent call last):
        ...
        AssertionError: mask: expected dtype torch.bool, got torch.float32: make it with a comparison, e.g. u >= p
    """
    if value is None:
        raise AssertionError(f"{name}: expected a torch.Tensor, got None (did the function forget to `return`?)")
    if not isinstance(value, torch.Tensor):
        kind = type(value)
        kind = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
        raise AssertionError(f"{name}: expected a torch.Tensor, got {kind} (build the result with torch "
                             f"operations, or convert it with torch.as_tensor)")
    if dtype is not None and value.dtype != dtype:
        raise AssertionError(f"{name}: expected dtype {dtype}, got {value.dtype}" + (f": {hint}" if hint else ""))
    if shape is not None:
        check_shape(value, shape, name)


def check_dtype_like(value, source: torch.Tensor, name: str = "output", source_name: str = "x") -> None:
    """Fail unless `value` is a tensor with the dtype of the input `source`, naming both dtypes.

        >>> check_dtype_like(torch.zeros(2), torch.zeros(2, dtype=torch.float64), name="conv2d(x, w)")
        Traceback (most recent call last):
        ...
        AssertionError: conv2d(x, w): your output is torch.float32 but the input x was torch.float64: create buffers with dtype=x.dtype (e.g. torch.zeros(..., dtype=x.dtype)); a float32 buffer keeps only about 7 digits
    """
    check_tensor(value, name=name)
    if value.dtype != source.dtype:
        raise AssertionError(
            f"{name}: your output is {value.dtype} but the input {source_name} was {source.dtype}: create buffers "
            f"with dtype={source_name}.dtype (e.g. torch.zeros(..., dtype={source_name}.dtype))"
            + ("; a float32 buffer keeps only about 7 digits" if value.dtype == torch.float32 else ""))


class InputModifiedError(AssertionError):
    """A graded function changed one of its input tensors in place although the exercise
    forbids it. Subclasses AssertionError so nbgrader scores the part 0."""


def _changed_entries(now: torch.Tensor, before: torch.Tensor) -> str | None:
    """None if `now` holds the values of `before` (NaN equals NaN), else what changed."""
    if now.shape != before.shape or now.dtype != before.dtype:
        return "its shape or dtype"
    same = now == before
    if now.is_floating_point() or now.is_complex():
        same = same | (now.isnan() & before.isnan())
    n_changed = int((~same).sum())
    return f"{n_changed} of {now.numel()} entries" if n_changed else None


@contextmanager
def inputs_unchanged(part: str = "this part", **inputs):
    """Fail if the code in the block changes any of the named tensors in place.

        with inputs_unchanged("sgd_momentum_step", param=w, grad=g, velocity=v):
            new_w, new_v = sgd_momentum_step(w, g, v, lr=0.1, momentum=0.9)

    Copies of the tensors are taken on entry and compared on exit (NaN equals NaN);
    names that are not tensors are ignored. An error raised in the block propagates.
    """
    copies = {key: value.detach().clone() for key, value in inputs.items() if isinstance(value, torch.Tensor)}
    yield
    for key, before in copies.items():
        changed = _changed_entries(inputs[key].detach(), before)
        if changed:
            raise InputModifiedError(
                f"{part}: your code changed its input `{key}` in place ({changed}), which the exercise forbids: "
                f"the caller still needs the old values, so this part scores 0. Compute a new tensor instead "
                f"(`new = 0.9 * {key}` makes one; `{key} *= 0.9`, `{key}.mul_(0.9)`, `{key}.sub_(...)` and "
                f"`{key}[...] = ...` overwrite the caller's tensor)")


def check_not_mistake(got, mistaken, explanation: str, name: str = "output",
                      atol: float = 1e-6, rtol: float = 1e-6) -> None:
    """Fail with `explanation` when `got` equals `mistaken`, the result a known mistake gives
    (e.g. the flipped kernel's). Call it before check_close, so that this mistake is named
    instead of reported as wrong numbers.

        >>> check_not_mistake([1.0, 4.0], [1.0, 4.0], "your code flips the kernel", name="corr1d(x, k)")
        Traceback (most recent call last):
        ...
        AssertionError: corr1d(x, k): your code flips the kernel (got [1.0, 4.0])
    """
    got_np, bad = to_numpy(got, name), to_numpy(mistaken, "mistaken")
    if got_np.shape == bad.shape and np.allclose(got_np, bad, atol=atol, rtol=rtol, equal_nan=True):
        shown = np.round(got_np, 6).tolist() if got_np.size <= 12 else f"an array of shape {got_np.shape}"
        raise AssertionError(f"{name}: {explanation} (got {shown})")
