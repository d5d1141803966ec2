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

What the hidden tests' comparisons rely on is snapshotted as a whole, not by a list of names:
the namespaces of the libraries they call (LIBRARY_MODULES, every module of the course's package
but its instructor tools), the code, defaults and closures of every function found there, the
attributes of their classes (torch.Tensor's methods included) and the modules' places in
sys.modules. The import system is cut off from what the student can write: the working directory
leaves sys.path before any student code runs, and sys.path, sys.meta_path and sys.path_hooks are
put back before every test. A course module that was first imported after the baseline is loaded
afresh from the course's read-only files by the next guard, so a module planted or changed by the
student never reaches a test.
"""
import builtins
import importlib
import importlib.util
import json
import os
import sys
import types
from typing import Any, Callable, NamedTuple

BUILTIN_NAMES = ("abs", "all", "any", "bool", "float", "int", "isinstance", "len", "max", "min",
                 "print", "range", "repr", "round", "sorted", "str", "sum", "type", "zip", "AssertionError",
                 "__import__", "getattr", "hasattr", "callable", "list", "tuple", "dict", "set", "enumerate",
                 "Exception", "eval", "exec", "compile", "issubclass")
NUMPY_NAMES = ("allclose", "array_equal", "isclose", "all", "any", "abs", "asarray", "array", "max")
NUMPY_TESTING_NAMES = ("assert_allclose", "assert_array_equal")
TORCH_NAMES = ("allclose", "equal", "isclose", "eq", "all", "abs")
CHECK_NAMES = ("check_close", "check_equal", "check_shape", "to_numpy")
TRACEBACK_NAMES = ("showtraceback", "_showtraceback", "showsyntaxerror", "CustomTB")
# the libraries whose namespaces the hidden tests' comparisons go through (besides the course's own
# modules): each is snapshotted whole, with its functions' code, defaults and closures
LIBRARY_MODULES = ("math", "operator", "numpy", "numpy.testing", "numpy.testing._private.utils", "numpy._core.numeric",
                   "numpy._core.fromnumeric", "numpy._core.multiarray", "numpy._core.umath", "numpy.lib._function_base_impl",
                   "torch", "torch._tensor", "torch.functional", "torch.nn.functional", "torch.nn.modules.module",
                   "torch.testing", "torch.testing._comparison")
LIBRARY_CLASSES = (("torch", "Tensor"), ("torch.nn.modules.module", "Module"))
COURSE_PACKAGE = "dlcourse"
INSTRUCTOR_TOOLS = ("dlcourse.grading", "dlcourse.hub", "dlcourse.hub_access", "dlcourse.notebooks")   # never snapshotted nor reloaded
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


def _trusted_file(path) -> bool:
    """Is `path` a file of the Python installation (read-only for the kernel: not the student's)?"""
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    real = os.path.realpath(str(path))
    return any(real.startswith(root + os.sep) for root in roots)


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


# --- the import system: nothing the student can write is importable by a test ---------------------

def _writable_path(entry: str) -> bool:
    """The sys.path entry of the working directory ('' or its path: the kernel's scratch folder,
    the student's to write), which ipykernel puts first."""
    return os.path.realpath(entry or ".") == os.path.realpath(os.getcwd())


def _imports_snapshot(ip):
    sys.path[:] = [p for p in sys.path if not _writable_path(p)]   # before any student code runs
    return list(sys.path), list(sys.meta_path), list(sys.path_hooks)


def _imports_changed(ip, saved):
    return (sys.path, sys.meta_path, sys.path_hooks) != saved


def _imports_restore(ip, saved):
    sys.path[:], sys.meta_path[:], sys.path_hooks[:] = (list(x) for x in saved)
    for key in [k for k in sys.path_importer_cache if k not in saved[0]]:
        del sys.path_importer_cache[key]


# --- the libraries the tests compare with: namespaces, functions, classes ----------------------------

_EMPTY = object()


def _cell(cell):
    try:
        return cell.cell_contents
    except ValueError:
        return _EMPTY


def _function_state(f) -> tuple:
    return f.__code__, f.__defaults__, f.__kwdefaults__, tuple(_cell(c) for c in f.__closure__ or ())


def _function_changed(f, state) -> bool:
    now = _function_state(f)
    return any(a is not b for a, b in zip(now[:3], state[:3])) or \
        len(now[3]) != len(state[3]) or any(a is not b for a, b in zip(now[3], state[3]))


def _function_restore(f, state) -> None:
    f.__code__, f.__defaults__, f.__kwdefaults__ = state[:3]
    for cell, value in zip(f.__closure__ or (), state[3]):
        if value is not _EMPTY:
            cell.cell_contents = value


class _Module(NamedTuple):
    module: Any
    names: dict          # the namespace as it was
    functions: list      # (function, _function_state) of every function in it or in its classes
    classes: list        # (class, its namespace as it was)


def _functions_of(namespace: dict) -> list:
    found = []
    for value in namespace.values():
        value = getattr(value, "__func__", value)   # staticmethod, classmethod
        if isinstance(value, types.FunctionType):
            found.append((value, _function_state(value)))
    return found


def _take(module, classes=()) -> _Module:
    names = dict(vars(module))
    if module.__name__.startswith(COURSE_PACKAGE + "."):   # the course's own classes (its layers, its errors)
        classes = [*classes, *(v for v in names.values()
                               if isinstance(v, type) and v.__dict__.get("__module__") == module.__name__)]
    kept = [(c, dict(vars(c))) for c in classes]
    functions = _functions_of(names) + [f for _, namespace in kept for f in _functions_of(namespace)]
    return _Module(module, names, functions, kept)


def _course_module(name: str) -> bool:
    return (name == COURSE_PACKAGE or name.startswith(COURSE_PACKAGE + ".")) and \
        not any(name == t or name.startswith(t + ".") for t in INSTRUCTOR_TOOLS)


def _library_names() -> list:
    return [n for n in LIBRARY_MODULES if sys.modules.get(n) is not None] + \
        sorted(n for n, m in list(sys.modules.items()) if n.startswith(COURSE_PACKAGE) and m is not None and _course_module(n))


def _library_take(names) -> dict:
    extra = {}
    for module_name, attr in LIBRARY_CLASSES:
        if module_name in names:
            extra.setdefault(module_name, []).append(getattr(sys.modules[module_name], attr))
    return {n: _take(sys.modules[n], extra.get(n, ())) for n in names}


def _library_snapshot(ip):
    return _library_take(_library_names())


def _added(saved: _Module) -> list:
    """Names added to a module since the snapshot that could change what its functions do: in a
    course module any but a submodule; in a library (which adds names of its own as it loads
    lazily) those that shadow a builtin its functions would otherwise find."""
    now = vars(saved.module)
    course = _course_module(saved.module.__name__)
    return [k for k in now.keys() - saved.names.keys()
            if k != "__warningregistry__" and not isinstance(now[k], types.ModuleType)
            and (course or k in vars(builtins))]


def _shadowing_attributes(cls, names: dict) -> list:
    """Attributes added to class `cls` since the snapshot that hide one of its bases' (torch.Tensor.detach)."""
    return [k for k in vars(cls).keys() - names.keys()
            if any(k in vars(base) for base in cls.__mro__[1:])]


def _library_rewrap(old, new) -> bool:
    """Is `new` the library's own wrapper around `old` (functools.wraps in a function of the
    installation, e.g. torch._dynamo wrapping torch.manual_seed when it is first imported)?"""
    code = getattr(new, "__code__", None)
    return getattr(new, "__wrapped__", None) is old and code is not None and _trusted_file(code.co_filename)


def _accept_rewraps(saved: _Module) -> None:
    """Take the libraries' own re-wrapping of a name into the snapshot: it is no tampering."""
    now = vars(saved.module)
    for k, v in list(saved.names.items()):
        new = now.get(k, _EMPTY)
        if new is not v and _library_rewrap(v, new):
            saved.names[k] = new
            saved.functions.extend(_functions_of({k: new}))


def _module_changed(name: str, saved: _Module) -> bool:
    _accept_rewraps(saved)
    now = vars(saved.module)
    return sys.modules.get(name) is not saved.module or len(now) != len(saved.names) and bool(_added(saved)) \
        or any(now.get(k, _EMPTY) is not v for k, v in saved.names.items()) \
        or any(_function_changed(f, state) for f, state in saved.functions) \
        or any(vars(c).get(k, _EMPTY) is not v for c, names in saved.classes for k, v in names.items()) \
        or any(_shadowing_attributes(c, names) for c, names in saved.classes if len(vars(c)) != len(names))


def _library_changed(ip, saved):
    return any(_module_changed(n, m) for n, m in saved.items())


def _set_in_parent(name: str, module) -> None:
    parent, _, child = name.rpartition(".")
    if parent and sys.modules.get(parent) is not None:
        setattr(sys.modules[parent], child, module)


def _library_restore(ip, saved):
    for name, m in saved.items():
        if sys.modules.get(name) is not m.module:
            sys.modules[name] = m.module
            _set_in_parent(name, m.module)
        now = vars(m.module)
        for k in _added(m):
            del now[k]
        for k, v in m.names.items():
            if now.get(k, _EMPTY) is not v:
                now[k] = v
        for f, state in m.functions:
            if _function_changed(f, state):
                _function_restore(f, state)
        for c, names in m.classes:
            for k in _shadowing_attributes(c, names):
                delattr(c, k)
            for k, v in names.items():
                if vars(c).get(k, _EMPTY) is not v:
                    setattr(c, k, v)


def _genuine_module(name: str):
    """The course's module `name` executed afresh from the course's read-only files (None where
    that cannot be done), and put in sys.modules and its package in place of what was there."""
    root = _state.get("package_dir")
    if not root:
        return None
    base = os.path.join(root, *name.split(".")[1:])
    if os.path.isfile(os.path.join(base, "__init__.py")):
        spec = importlib.util.spec_from_file_location(name, os.path.join(base, "__init__.py"),
                                                      submodule_search_locations=[base])
    elif os.path.isfile(base + ".py"):
        spec = importlib.util.spec_from_file_location(name, base + ".py")
    else:
        return None
    module = importlib.util.module_from_spec(spec)
    before = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 -- leave the module as it was; the test then fails as it would
        if before is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = before
        return None
    _set_in_parent(name, module)
    return module


def _differs_from(old, new) -> bool:
    """Does module `old` (first imported after the baseline) differ from its genuine twin `new`
    in a function or class that the file defines?"""
    if old is None:
        return False
    old_names = vars(old)
    for k, v in vars(new).items():
        mine = old_names.get(k, _EMPTY)
        if isinstance(v, types.FunctionType):
            if not isinstance(mine, types.FunctionType) or mine.__code__ != v.__code__:
                return True
        elif isinstance(v, type) and v.__dict__.get("__module__") == new.__name__:
            if not isinstance(mine, type) or mine.__qualname__ != v.__qualname__:
                return True
    return False


def _adopt(course: bool) -> list[str]:
    """Modules of the libraries first imported since the baseline join the snapshot. A course
    module (course=True) is loaded afresh from the course's files first, and the notebook's names
    for what the student's copy held point to the genuine objects (flagged where that copy
    differed); a library module (course=False, after the guard's restores) is taken as it is."""
    saved, flags = _state["library"], []
    for name in _library_names():
        if name in saved or _course_module(name) != course:
            continue
        if course:
            old = sys.modules.get(name)
            new = _genuine_module(name)
            if new is not None and old is not None:
                if _differs_from(old, new):
                    flags.append("replaced library function")
                _rebind(_state["shell"].user_ns, old, new)
        saved.update(_library_take([name]))
    return flags


def _rebind(namespace: dict, old, new) -> None:
    """Names in `namespace` bound to a function or class of module `old` (or to `old`) now name
    those of module `new`."""
    mine = {id(v): k for k, v in vars(old).items() if isinstance(v, (types.FunctionType, type))}
    for key, value in list(namespace.items()):
        if id(value) in mine and mine[id(value)] in vars(new):
            namespace[key] = vars(new)[mine[id(value)]]
        elif value is old:
            namespace[key] = new


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

_state: dict = {}


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
