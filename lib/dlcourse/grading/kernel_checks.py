"""Run: the grader's integrity checks as they run INSIDE the student's kernel (stdlib, numpy, IPython).

The grader never imports this module into a kernel by name: the hidden first cell executes this
file's source into a fresh module called `_dlg_<nonce>` (see integrity.baseline_source) and calls
`install(nonce)`, before any student code has run. From then on the grader calls, as user
expressions of empty execute requests (no cell: no input or AST transformer, no IPython event
and no student code sees them, and the answer comes back in the shell reply):

    sys.modules['_dlg_<nonce>'].guard()   before every graded test cell: put every hook back,
                                           answer "<nonce> [flags of what had to be restored]"
    sys.modules['_dlg_<nonce>'].check()   after the last cell: answer "<nonce> [flags of what differs]"

Every hook is described once, in CHECKS: the flag it raises, how to snapshot it, how to tell it
changed, how to restore it. install, guard and check all loop over that table. A hook that is
still changed after its restore makes the guard raise (the test cell then does not run).

What the hidden tests' comparisons rely on is snapshotted as a whole, not by a list of names,
and the import system is cut off from what the student can write: those two hooks live in
kernel_library.py, whose source the hidden first cell executes into the same module first (in a
kernel this file's names and kernel_library.py's are one namespace; the grader's side imports
them from there).
"""
import builtins
import importlib
import importlib.util
import json
import sys
import types
from typing import Any, Callable, NamedTuple

if not __name__.startswith("_dlg_"):   # imported by the grader: in a kernel, kernel_library.py's source ran here first
    from dlcourse.grading.kernel_library import (COURSE_PACKAGE, _adopt, _imports_changed, _imports_restore,
                                                 _imports_snapshot, _library_changed, _library_restore,
                                                 _library_snapshot, _state, _trusted_file, _writable_path)

BUILTIN_NAMES = ("abs", "all", "any", "bool", "float", "int", "isinstance", "len", "max", "min",
                 "print", "range", "repr", "round", "sorted", "str", "sum", "type", "zip", "AssertionError",
                 "__import__", "getattr", "hasattr", "callable", "list", "tuple", "dict", "set", "enumerate",
                 "Exception", "eval", "exec", "compile", "issubclass")
NUMPY_NAMES = ("allclose", "array_equal", "isclose", "all", "any", "abs", "asarray", "array", "max")
NUMPY_TESTING_NAMES = ("assert_allclose", "assert_array_equal")
TORCH_NAMES = ("allclose", "equal", "isclose", "eq", "all", "abs")
CHECK_NAMES = ("check_close", "check_equal", "check_shape", "to_numpy")
TRACEBACK_NAMES = ("showtraceback", "_showtraceback", "showsyntaxerror", "CustomTB")
# callbacks that libraries register on IPython's events themselves (matplotlib's inline backend
# flushes figures after each cell): a genuine one, as its module's file defines it, is no tampering
LIBRARY_CALLBACKS = (("matplotlib.pyplot", "_draw_all_if_interactive"),
                     ("matplotlib_inline.backend_inline", "flush_figures"),
                     ("matplotlib_inline.backend_inline", "configure_once"))
SHELL_METHODS = ("run_cell", "run_cell_async", "should_run_async", "transform_cell", "transform_ast",
                 "run_ast_nodes", "run_code", "user_expressions", "ev", "ex")


class Check(NamedTuple):
    flag: str                                  # what grades.csv says when this hook was touched
    snapshot: Callable[[Any], Any]             # shell -> saved state
    changed: Callable[[Any, Any], bool]        # shell, saved -> does the hook differ now?
    restore: Callable[[Any, Any], None]        # shell, saved -> put it back


# --- each hook: snapshot, changed, restore -------------------------------------------------------

def _trace_snapshot(ip):
    return sys.gettrace(), sys.getprofile()


def _trace_changed(ip, saved):
    return sys.gettrace() is not saved[0] or sys.getprofile() is not saved[1]


def _trace_restore(ip, saved):
    sys.settrace(saved[0])
    sys.setprofile(saved[1])


def _builtins_snapshot(ip):
    return {n: getattr(builtins, n) for n in BUILTIN_NAMES}


def _builtins_changed(ip, saved):
    return any(getattr(builtins, n, None) is not f for n, f in saved.items()) or \
        ip.user_ns.get("__builtins__", builtins) is not builtins


def _builtins_restore(ip, saved):
    for n, f in saved.items():
        setattr(builtins, n, f)
    ip.user_ns["__builtins__"] = builtins


_MISSING = object()


def _methods(names):
    """A check of the shell's methods `names`: replaced on the class, or set on the instance."""
    def snapshot(ip):
        return {n: (getattr(type(ip), n, None), vars(ip).get(n, _MISSING)) for n in names}

    def changed(ip, saved):
        return any(getattr(type(ip), n, None) is not cls_f or vars(ip).get(n, _MISSING) is not own
                   for n, (cls_f, own) in saved.items())

    def restore(ip, saved):
        for n, (cls_f, own) in saved.items():
            if getattr(type(ip), n, None) is not cls_f:
                setattr(type(ip), n, cls_f)
            if own is _MISSING:
                vars(ip).pop(n, None)
            else:
                vars(ip)[n] = own
    return snapshot, changed, restore


def _shadowing(ip, saved):
    """Instance attributes added since the snapshot that hide one of the shell's methods."""
    return [n for n in set(vars(ip)) - saved if callable(getattr(type(ip), n, None))]


def _instance_snapshot(ip):
    return set(vars(ip))


def _instance_changed(ip, saved):
    return bool(_shadowing(ip, saved))


def _instance_restore(ip, saved):
    for n in _shadowing(ip, saved):
        delattr(ip, n)


def _custom_tb_snapshot(ip):
    return ip.custom_exceptions, ip.CustomTB


def _custom_tb_changed(ip, saved):
    return (ip.custom_exceptions, ip.CustomTB) != saved


def _custom_tb_restore(ip, saved):
    ip.custom_exceptions, ip.CustomTB = saved


def _transformers_snapshot(ip):
    tm = ip.input_transformer_manager
    return tm, {"cleanup": list(ip.input_transformers_cleanup), "post": list(ip.input_transformers_post),
                "lines": list(tm.line_transforms), "tokens": list(tm.token_transformers)}


def _transformer_lists(ip, tm):
    return {"cleanup": ip.input_transformers_cleanup, "post": ip.input_transformers_post,
            "lines": tm.line_transforms, "tokens": tm.token_transformers}


def _transformers_changed(ip, saved):
    tm, lists = saved
    return ip.input_transformer_manager is not tm or \
        any(list(now) != lists[k] for k, now in _transformer_lists(ip, tm).items())


def _transformers_restore(ip, saved):
    tm, lists = saved
    ip.input_transformer_manager = tm
    for k, now in _transformer_lists(ip, tm).items():
        now[:] = lists[k]


def _ast_snapshot(ip):
    return list(ip.ast_transformers)


def _ast_changed(ip, saved):
    return list(ip.ast_transformers) != saved


def _ast_restore(ip, saved):
    ip.ast_transformers[:] = saved


_compiled: dict = {}   # file -> {function name: code object} as the file defines them


def _defined_code(path: str, name: str):
    """The code object of the top-level function `name` as `path`'s source defines it (None if absent)."""
    if path not in _compiled:
        with open(path, encoding="utf-8") as f:
            module_code = compile(f.read(), path, "exec")
        _compiled[path] = {c.co_name: c for c in module_code.co_consts if isinstance(c, types.CodeType)}
    return _compiled[path].get(name)


def _library_callback(f) -> bool:
    """Is `f` one of LIBRARY_CALLBACKS, exactly as its module's installed file defines it?"""
    for module_name, attr in LIBRARY_CALLBACKS:
        module = sys.modules.get(module_name)
        path = getattr(module, "__file__", None)
        if module is None or f is not vars(module).get(attr) or not isinstance(f, types.FunctionType):
            continue
        try:
            if path and _trusted_file(path) and f.__globals__ is vars(module) and f.__code__ == _defined_code(path, attr):
                return True
        except (OSError, SyntaxError, ValueError):
            return False
    return False


def _events_now(ip):
    return {k: [f for f in v if not _library_callback(f)] for k, v in ip.events.callbacks.items()}


def _events_snapshot(ip):
    return _events_now(ip)


def _events_changed(ip, saved):
    return _events_now(ip) != saved


def _events_restore(ip, saved):
    for k, v in ip.events.callbacks.items():   # the student's callbacks go; the libraries' own stay
        v[:] = list(saved.get(k, [])) + [f for f in v if _library_callback(f) and f not in saved.get(k, [])]


def _numpy_snapshot(ip):
    import numpy
    import numpy.testing
    return [(numpy, {n: getattr(numpy, n) for n in NUMPY_NAMES}),
            (numpy.testing, {n: getattr(numpy.testing, n) for n in NUMPY_TESTING_NAMES})]


def _numpy_changed(ip, saved):
    return any(getattr(mod, n, None) is not f for mod, names in saved for n, f in names.items())


def _numpy_restore(ip, saved):
    for mod, names in saved:
        for n, f in names.items():
            setattr(mod, n, f)


def _torch_originals():
    """{(module, name): the genuine function} for torch's comparisons, taken from their source
    (torch may be imported only after the snapshot, so nothing is saved for it)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    native = torch._C._VariableFunctions
    out = {(torch, n): getattr(native, n) for n in TORCH_NAMES}
    comparison = sys.modules.get("torch.testing._comparison")
    if comparison is not None:
        out[(torch.testing, "assert_close")] = comparison.assert_close
    return out


def _torch_changed(ip, saved):
    return any(getattr(mod, n, None) is not f for (mod, n), f in _torch_originals().items())


def _torch_restore(ip, saved):
    for (mod, n), f in _torch_originals().items():
        setattr(mod, n, f)


def _checks_module():
    """dlcourse.checks if imported, with the names of CHECK_NAMES it defines."""
    checks = sys.modules.get("dlcourse.checks")
    return (checks, [n for n in CHECK_NAMES if hasattr(checks, n)]) if checks is not None else (None, [])


def _course_checks_changed(ip, saved):
    checks, names = _checks_module()
    if checks is None:
        return False
    foreign = any(getattr(getattr(checks, n), "__code__", None) is None
                  or getattr(checks, n).__code__.co_filename != checks.__file__ for n in names)
    return foreign or any(n in ip.user_ns and ip.user_ns[n] is not getattr(checks, n) for n in names)


def _course_checks_restore(ip, saved):
    checks, names = _checks_module()
    if any(getattr(getattr(checks, n), "__code__", None) is None
           or getattr(checks, n).__code__.co_filename != checks.__file__ for n in names):
        checks = importlib.reload(checks)  # the functions as the file defines them
    for n in names:  # and the notebook's names for them
        if n in ip.user_ns:
            ip.user_ns[n] = getattr(checks, n)


def _nothing(ip):
    return None


CHECKS = (
    Check("import system (sys.path, sys.meta_path)", _imports_snapshot, _imports_changed, _imports_restore),
    Check("sys.settrace/setprofile", _trace_snapshot, _trace_changed, _trace_restore),
    Check("builtins", _builtins_snapshot, _builtins_changed, _builtins_restore),
    Check("IPython traceback display", *_methods(TRACEBACK_NAMES)),
    Check("IPython shell access", *_methods(SHELL_METHODS)),
    Check("IPython shell access", _instance_snapshot, _instance_changed, _instance_restore),
    Check("IPython traceback display", _custom_tb_snapshot, _custom_tb_changed, _custom_tb_restore),
    Check("IPython input transformers", _transformers_snapshot, _transformers_changed, _transformers_restore),
    Check("IPython AST transformers", _ast_snapshot, _ast_changed, _ast_restore),
    Check("IPython events", _events_snapshot, _events_changed, _events_restore),
    Check("replaced library function", _numpy_snapshot, _numpy_changed, _numpy_restore),
    Check("replaced library function", _nothing, _torch_changed, _torch_restore),
    Check("replaced library function", _library_snapshot, _library_changed, _library_restore),
    Check("replaced library function", _nothing, _course_checks_changed, _course_checks_restore),
)
LIBRARY = len(CHECKS) - 2   # the library snapshot's place in CHECKS (modules adopted later join it)

# --- the three entry points ------------------------------------------------------------------------

def install(nonce: str, preload=()) -> None:
    """Snapshot every hook (the hidden first cell calls this before any student code runs), after
    taking the working directory off sys.path and importing `preload` (what the assignment's
    notebooks import: their namespaces are snapshotted before any student code can change them)."""
    from IPython import get_ipython
    ip = get_ipython()
    sys.path[:] = [p for p in sys.path if not _writable_path(p)]
    spec = importlib.util.find_spec(COURSE_PACKAGE)
    _state.update(nonce=nonce, shell=ip,
                  package_dir=spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None)
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 -- the notebook then fails on it as it would without the grader
            continue
    _state["saved"] = [c.snapshot(ip) for c in CHECKS]
    _state["library"] = _state["saved"][LIBRARY]


def _changed() -> list[Check]:
    ip = _state["shell"]
    return [c for c, saved in zip(CHECKS, _state["saved"]) if c.changed(ip, saved)]


def _answer(flags) -> str:
    return f"{_state['nonce']} {json.dumps(sorted(set(flags)))}"


def guard() -> str:
    """Put every changed hook back; answer with the nonce and the flags of what had to be restored."""
    ip = _state["shell"]
    fixed = _adopt(course=True)
    restored = []
    for check, saved in zip(CHECKS, _state["saved"]):
        if check.changed(ip, saved):
            check.restore(ip, saved)
            fixed.append(check.flag)
            restored.append((check, saved))
    _adopt(course=False)   # what it adds is taken as it is now: unchanged
    still = [c.flag for c, saved in restored if c.changed(ip, saved)]
    if still:
        raise RuntimeError(f"the grader could not restore {sorted(set(still))}")
    return _answer(fixed)


def check() -> str:
    """Answer with the nonce and the flags of every hook that differs from the snapshot now."""
    return _answer(c.flag for c in _changed())
