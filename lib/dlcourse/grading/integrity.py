"""Does a submission tamper with the machinery that grades it?

Two independent looks, both reported as flags in grades.csv (the instructor reviews flagged work):

* `static_scan(nb, locked_ids)`: the source of every cell a student may edit is searched for
  hooks that can fake a passing test: sys.settrace, IPython's input/AST transformers,
  showtraceback and custom exception handlers, IPython events, sys.excepthook, builtins,
  replaced attributes of numpy/torch/math/operator/dlcourse, `__eq__` overrides, sys.modules.
* a runtime check: the grader runs a hidden cell before the student's first cell that records
  these hooks (`baseline_source`) and one after the last that reports what changed
  (`check_source`). The report carries a per-run random nonce; a missing or garbled report
  (a transformer that swallowed the check, a dead kernel) is itself a flag.

Test cells defend themselves as well: exact type checks before any comparison, so an object
whose `__eq__` is always true fails; nbgrader counts a test as failed from the kernel's reply
status, so a custom exception handler that hides the traceback does not earn the points.
"""
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
                 "print", "range", "repr", "round", "sorted", "str", "sum", "type", "zip", "AssertionError")

MARK = "DLCOURSE-INTEGRITY"


def static_scan(sources: list[str]) -> list[str]:
    """Names of the hooks the given (student-editable) cell sources touch, e.g. ['sys.settrace/setprofile']."""
    text = "\n".join(sources)
    return [name for name, pattern in HOOK_PATTERNS.items() if re.search(pattern, text)]


def baseline_source(nonce: str) -> str:
    """Code for the hidden first cell: record the hooks in a module only this run can name."""
    return f"""
def _dlg_snapshot():
    import sys, types, builtins, numpy, numpy.testing
    ip = get_ipython()
    state = types.ModuleType("_dlg_{nonce}")
    state.trace, state.profile, state.excepthook = sys.gettrace(), sys.getprofile(), sys.excepthook
    state.showtraceback = type(ip).showtraceback
    state.instance_keys = set(vars(ip))
    state.custom = ip.custom_exceptions
    state.cleanup = list(ip.input_transformers_cleanup)
    state.post = list(ip.input_transformers_post)
    state.ast = list(ip.ast_transformers)
    state.events = {{k: list(v) for k, v in ip.events.callbacks.items()}}
    state.builtins = {{n: getattr(builtins, n) for n in {BUILTIN_NAMES!r}}}
    state.numpy = {{n: getattr(numpy, n) for n in ("allclose", "array_equal", "isclose", "all", "abs")}}
    state.numpy_testing = {{n: getattr(numpy.testing, n) for n in ("assert_allclose", "assert_array_equal")}}
    sys.modules[state.__name__] = state
_dlg_snapshot()
del _dlg_snapshot
"""


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
