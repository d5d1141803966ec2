"""Run: the libraries the hidden tests import and call, as the grader keeps them INSIDE the
student's kernel (stdlib only): the import system and the libraries' namespaces.

Part of kernel_checks.py's table of hooks (CHECKS) and never imported into a kernel by name:
integrity.baseline_source executes this file's source and then kernel_checks.py's into the one
module `_dlg_<nonce>` (so the two share their names, `_state` included); the grader's side imports
both as modules.

* the import system: the working directory leaves sys.path before any student code runs, and
  sys.path, sys.meta_path and sys.path_hooks are put back before every test, so nothing the
  student can write is importable by a test;
* the libraries' namespaces (LIBRARY_MODULES and every module of the course's package but its
  instructor tools), the code, defaults and closures of every function found there, the attributes
  of their classes (torch.Tensor's methods included) and the modules' places in sys.modules,
  snapshotted whole; a course module first imported after the baseline is loaded afresh from the
  course's read-only files (`_adopt`), a library module is taken as it is.
"""
import builtins
import importlib
import importlib.util
import os
import sys
import types
from typing import Any, NamedTuple

# the libraries whose namespaces the hidden tests' comparisons go through (besides the course's own
# modules): each is snapshotted whole, with its functions' code, defaults and closures
LIBRARY_MODULES = ("math", "operator", "numpy", "numpy.testing", "numpy.testing._private.utils", "numpy._core.numeric",
                   "numpy._core.fromnumeric", "numpy._core.multiarray", "numpy._core.umath", "numpy.lib._function_base_impl",
                   "torch", "torch._tensor", "torch.functional", "torch.nn.functional", "torch.nn.modules.module",
                   "torch.testing", "torch.testing._comparison")
LIBRARY_CLASSES = (("torch", "Tensor"), ("torch.nn.modules.module", "Module"))
COURSE_PACKAGE = "dlcourse"
INSTRUCTOR_TOOLS = ("dlcourse.grading", "dlcourse.hub", "dlcourse.hub_access", "dlcourse.notebooks")   # never snapshotted nor reloaded

_state: dict = {}   # the kernel's run: nonce, shell, package folder, snapshots (kernel_checks.install)


def _trusted_file(path) -> bool:
    """Is `path` a file of the Python installation (read-only for the kernel: not the student's)?"""
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    real = os.path.realpath(str(path))
    return any(real.startswith(root + os.sep) for root in roots)


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
    code, defaults, kwdefaults, cells = state
    if f.__code__ is not code or f.__defaults__ is not defaults or f.__kwdefaults__ is not kwdefaults:
        return True
    closure = f.__closure__ or ()
    return len(closure) != len(cells) or any(_cell(c) is not v for c, v in zip(closure, cells))


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
    now = vars(saved.module)
    if any(now.get(k, _EMPTY) is not v for k, v in saved.names.items()):
        _accept_rewraps(saved)   # (it changes nothing where no name differs)
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
