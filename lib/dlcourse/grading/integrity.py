"""Does a submission tamper with the machinery that grades it, and can it earn points that way?

Three independent defences; what they find is reported as flags in grades.csv (review by hand):

* `static_scan(sources)`: the source of every cell a student may edit is searched for hooks
  that can fake a passing test: sys.settrace, IPython's input/AST transformers, showtraceback
  and custom exception handlers, IPython events, sys.excepthook, builtins, replaced attributes
  of numpy/torch/math/operator/dlcourse, `__eq__` overrides, sys.modules.
* a baseline and a guard: the grader runs a hidden cell before the student's first cell that
  records these hooks (`baseline_source`) in a module named with a per-run random nonce, and,
  right before every graded test cell, evaluates `guard_expression` as a user expression of an
  empty execute request. That path runs no cell, so no input or AST transformer, no IPython
  event and no student cell sees it; the guard puts every hook back (transformer lists, shell
  methods, traceback display, events, trace function, builtins, numpy/torch comparisons and
  dlcourse.checks) and answers with the nonce and what it had to restore. A test whose guard
  does not answer that way is not run and scores 0 (see sandbox.SandboxedExecute).
* a final check: a hidden cell after the last one reports what still differs from the
  baseline (`check_source`); a missing or garbled report is itself a flag.

Test cells defend themselves as well: exact type checks before any comparison, so an object
whose `__eq__` is always true fails; nbgrader counts a test as failed from the kernel's reply
status, so a custom exception handler that hides the traceback does not earn the points.

Limits: all of this runs inside the student's own interpreter. Code written to find the
grader's module at run time, or a background thread that re-installs a hook between the guard
and the test, can still interfere; the static scan flags the names such code needs.
"""
import ast
import json
import re

HOOK_PATTERNS = {
    "sys.settrace/setprofile": r"\bset(trace|profile)\b",
    "IPython input transformers": r"input_transform|line_transforms|cleanup_transforms",
    "IPython AST transformers": r"ast_transformers",
    "IPython traceback display": r"showtraceback|showsyntaxerror|CustomTB|set_custom_exc|InteractiveTB",
    "IPython events": r"\.events\b|\bevents\.register",
    "IPython shell access": r"\bget_ipython\b",
    "sys.excepthook": r"excepthook",
    "builtins": r"\b__builtins__\b|\bbuiltins\b",
    "sys.modules": r"\bsys\.modules\b",
    "comparison override (__eq__)": r"__eq__|__ne__",
    "replaced library function": (r"(?m)^\s*(np|numpy|torch|math|operator|checks|dlcourse|nbgrader)"
                                  r"(\.\w+)+\s*=(?!=)|setattr\(\s*(np|numpy|torch|math|operator|checks|dlcourse)\b"),
}

BUILTIN_NAMES = ("abs", "all", "any", "bool", "float", "int", "isinstance", "len", "max", "min",
                 "print", "range", "repr", "round", "sorted", "str", "sum", "type", "zip", "AssertionError",
                 "__import__", "getattr", "hasattr", "callable", "list", "tuple", "dict", "set", "enumerate",
                 "Exception", "eval", "exec", "compile", "issubclass")
NUMPY_NAMES = ("allclose", "array_equal", "isclose", "all", "any", "abs", "asarray", "array", "max")
NUMPY_TESTING_NAMES = ("assert_allclose", "assert_array_equal")
TORCH_NAMES = ("allclose", "equal", "isclose", "eq", "all", "abs")
TRACEBACK_NAMES = ("showtraceback", "_showtraceback", "showsyntaxerror", "CustomTB")
CHECK_NAMES = ("check_close", "check_equal", "check_shape", "to_numpy")

MARK = "DLCOURSE-INTEGRITY"


def static_scan(sources: list[str]) -> list[str]:
    """Names of the hooks the given (student-editable) cell sources touch, e.g. ['sys.settrace/setprofile']."""
    text = "\n".join(sources)
    return [name for name, pattern in HOOK_PATTERNS.items() if re.search(pattern, text)]


SHELL_METHODS = ("run_cell", "run_cell_async", "should_run_async", "transform_cell", "transform_ast",
                 "run_ast_nodes", "run_code", "showtraceback", "_showtraceback", "showsyntaxerror",
                 "user_expressions", "ev", "ex")


def baseline_source(nonce: str) -> str:
    """Code for the hidden first cell: record the hooks in a module only this run can name, and
    a `restore()` there that puts them back (the guard calls it before every graded test cell)."""
    return f"""
def _dlg_snapshot():
    import sys, types, builtins, json, hashlib, importlib, numpy, numpy.testing
    ip = get_ipython()
    cls = type(ip)
    tm = ip.input_transformer_manager
    state = types.ModuleType("_dlg_{nonce}")
    state.trace, state.profile, state.excepthook = sys.gettrace(), sys.getprofile(), sys.excepthook
    state.showtraceback = cls.showtraceback
    state.methods = {{n: getattr(cls, n, None) for n in {SHELL_METHODS!r}}}
    state.instance_keys = set(vars(ip))
    state.custom, state.custom_tb = ip.custom_exceptions, ip.CustomTB
    state.manager = tm
    state.cleanup = list(ip.input_transformers_cleanup)
    state.post = list(ip.input_transformers_post)
    state.ast = list(ip.ast_transformers)
    state.lines, state.tokens = list(tm.line_transforms), list(tm.token_transformers)
    state.events = {{k: list(v) for k, v in ip.events.callbacks.items()}}
    state.builtins = {{n: getattr(builtins, n) for n in {BUILTIN_NAMES!r}}}
    state.numpy = {{n: getattr(numpy, n) for n in {NUMPY_NAMES!r}}}
    state.numpy_testing = {{n: getattr(numpy.testing, n) for n in {NUMPY_TESTING_NAMES!r}}}

    def restore():
        # put every hook a test relies on back to the baseline; return what had to be restored
        fixed = set()
        if sys.gettrace() is not state.trace or sys.getprofile() is not state.profile:
            sys.settrace(state.trace)
            sys.setprofile(state.profile)
            fixed.add("sys.settrace/setprofile")
        # sys.excepthook and sys.displayhook are swapped by IPython around each cell, so the guard
        # (outside any cell) leaves them alone; they cannot turn a failed test into a pass
        for n, f in state.builtins.items():
            if getattr(builtins, n, None) is not f:
                setattr(builtins, n, f)
                fixed.add("builtins")
        if ip.user_ns.get("__builtins__", builtins) is not builtins:
            ip.user_ns["__builtins__"] = builtins
            fixed.add("builtins")
        for n, f in state.methods.items():
            if getattr(cls, n, None) is not f:
                setattr(cls, n, f)
                fixed.add("IPython shell access")
        for n in set(vars(ip)) - state.instance_keys:
            if callable(getattr(cls, n, None)):  # an instance attribute that hides one of the shell's methods
                delattr(ip, n)
                fixed.add("IPython traceback display" if n in {TRACEBACK_NAMES!r} else "IPython shell access")
        if ip.custom_exceptions != state.custom or ip.CustomTB != state.custom_tb:
            ip.custom_exceptions, ip.CustomTB = state.custom, state.custom_tb
            fixed.add("IPython traceback display")
        if ip.input_transformer_manager is not state.manager:
            ip.input_transformer_manager = state.manager
            fixed.add("IPython input transformers")
        for now, then, flag in ((ip.input_transformers_cleanup, state.cleanup, "IPython input transformers"),
                                (ip.input_transformers_post, state.post, "IPython input transformers"),
                                (tm.line_transforms, state.lines, "IPython input transformers"),
                                (tm.token_transformers, state.tokens, "IPython input transformers"),
                                (ip.ast_transformers, state.ast, "IPython AST transformers")):
            if list(now) != then:
                now[:] = then
                fixed.add(flag)
        for k, v in ip.events.callbacks.items():
            if list(v) != state.events.get(k, []):
                v[:] = state.events.get(k, [])
                fixed.add("IPython events")
        for mod, saved in ((numpy, state.numpy), (numpy.testing, state.numpy_testing)):
            for n, f in saved.items():
                if getattr(mod, n, None) is not f:
                    setattr(mod, n, f)
                    fixed.add("replaced library function")
        torch = sys.modules.get("torch")
        if torch is not None:  # torch's comparisons are C functions: take them from their source again
            native = torch._C._VariableFunctions
            for n in {TORCH_NAMES!r}:
                if getattr(torch, n, None) is not getattr(native, n):
                    setattr(torch, n, getattr(native, n))
                    fixed.add("replaced library function")
            comparison = sys.modules.get("torch.testing._comparison")
            if comparison is not None and torch.testing.assert_close is not comparison.assert_close:
                torch.testing.assert_close = comparison.assert_close
                fixed.add("replaced library function")
        checks = sys.modules.get("dlcourse.checks")
        if checks is not None:  # the course's checks: reload them if any was replaced, rebind the notebook's names
            names = [n for n in {CHECK_NAMES!r} if hasattr(checks, n)]
            if any(getattr(getattr(checks, n), "__code__", None) is None
                   or getattr(checks, n).__code__.co_filename != checks.__file__ for n in names):
                checks = importlib.reload(checks)
                fixed.add("replaced library function")
            for n in names:
                if n in ip.user_ns and ip.user_ns[n] is not getattr(checks, n):
                    ip.user_ns[n] = getattr(checks, n)
                    fixed.add("replaced library function")
        return "{nonce} " + json.dumps(sorted(fixed))

    state.restore = restore
    sys.modules[state.__name__] = state
_dlg_snapshot()
del _dlg_snapshot
"""


def guard_expression(nonce: str) -> str:
    """The expression the grader evaluates (as a user expression: no cell, so no input or AST
    transformer and no IPython event sees it) right before each graded test cell."""
    return f"__import__('sys').modules['_dlg_{nonce}'].restore()"


def parse_guard(reply: dict | None, nonce: str) -> list[str] | None:
    """Hooks the guard restored (a list, maybe empty), or None when it did not answer properly."""
    if not reply or reply.get("content", {}).get("status") != "ok":
        return None
    value = reply["content"].get("user_expressions", {}).get("guard", {})
    if value.get("status") != "ok":
        return None
    text = value.get("data", {}).get("text/plain", "")
    try:
        text = ast.literal_eval(text)
        head, _, rest = text.partition(" ")
        found = json.loads(rest)
    except (ValueError, SyntaxError, TypeError):
        return None
    if head != nonce or not isinstance(found, list) or not all(isinstance(f, str) for f in found):
        return None
    return found


def check_source(nonce: str) -> str:
    """Code for the hidden last cell: print one line `MARK nonce {json}` listing what changed."""
    return f"""
def _dlg_check():
    import sys, json, builtins, numpy, numpy.testing
    found = []
    state = sys.modules.get("_dlg_{nonce}")
    ip = get_ipython()
    if state is None:
        found.append("grader baseline removed")
    else:
        if sys.gettrace() is not state.trace or sys.getprofile() is not state.profile:
            found.append("sys.settrace/setprofile")
        if sys.excepthook != state.excepthook:
            found.append("sys.excepthook")
        added = set(vars(ip)) - state.instance_keys
        if type(ip).showtraceback is not state.showtraceback or ip.custom_exceptions != state.custom \\
                or added.intersection(("showtraceback", "_showtraceback", "showsyntaxerror", "CustomTB")):
            found.append("IPython traceback display")
        if list(ip.input_transformers_cleanup) != state.cleanup or list(ip.input_transformers_post) != state.post:
            found.append("IPython input transformers")
        if list(ip.ast_transformers) != state.ast:
            found.append("IPython AST transformers")
        if {{k: list(v) for k, v in ip.events.callbacks.items()}} != state.events:
            found.append("IPython events")
        if any(getattr(builtins, n, None) is not f for n, f in state.builtins.items()):
            found.append("builtins")
        if any(getattr(numpy, n, None) is not f for n, f in state.numpy.items()) or \\
                any(getattr(numpy.testing, n, None) is not f for n, f in state.numpy_testing.items()):
            found.append("replaced library function")
    torch = sys.modules.get("torch")
    if torch is not None:
        native = type(len)
        if any(type(getattr(torch, n, None)) is not native for n in ("allclose", "equal", "isclose", "eq")):
            found.append("replaced library function")
        if not getattr(torch.testing.assert_close, "__module__", "").startswith("torch.testing"):
            found.append("replaced library function")
    print("{MARK}", "{nonce}", json.dumps(sorted(set(found))))
_dlg_check()
"""


def parse_check(outputs: list, nonce: str) -> list[str]:
    """Flags from the check cell's outputs; a missing report is a flag of its own."""
    for out in outputs:
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            for line in out.get("text", "").splitlines():
                parts = line.split(" ", 2)
                if len(parts) == 3 and parts[0] == MARK and parts[1] == nonce:
                    try:
                        found = json.loads(parts[2])
                    except ValueError:
                        break
                    if isinstance(found, list) and all(isinstance(f, str) for f in found):
                        return found
    return ["the grader's integrity check did not report (kernel hooks changed or the kernel died)"]
