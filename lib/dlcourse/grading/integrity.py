"""Run: does a submission tamper with the machinery that grades it, and can it earn points that way?

Three independent defences; what they find is reported as flags in grades.csv (review by hand):

* `static_scan(sources)`: the source of every cell a student may edit is searched for hooks
  that can fake a passing test: sys.settrace, IPython's input/AST transformers, showtraceback
  and custom exception handlers, IPython events, sys.excepthook, builtins, replaced attributes
  of numpy/torch/math/operator/dlcourse, `__eq__` overrides, sys.modules, the import system
  (sys.path, meta_path), a function's internals (`__globals__`, `__code__`, defaults, closures)
  and torch's function and dispatch modes (the door that references_forbidden guards).
* a baseline and a guard: the grader's hidden first cell executes kernel_library.py and
  kernel_checks.py (real modules; the table CHECKS names every hook once, with how to snapshot, compare and restore it)
  into a module named with a per-run random nonce and snapshots the hooks (`baseline_source`).
  Right before every graded test cell the grader evaluates `guard_expression` as a user
  expression of an empty execute request. That path runs no cell, so no input or AST
  transformer, no IPython event and no student cell sees it; the guard puts every hook back and
  answers with the nonce and what it had to restore. A test whose guard does not answer that
  way is not run and scores 0 (see sandbox.SandboxedExecute).
* a final check: after the last cell `check_expression` is evaluated the same way and answers
  with what still differs from the baseline; a missing or garbled answer is itself a flag.
  Answers travel in the shell reply of their own request. (An earlier version printed the
  final report from a hidden cell: anything else writing to the kernel's stdout at that moment,
  such as a child process an honest student had started, could break the printed line apart,
  and an honest submission was flagged.)

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
from pathlib import Path

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
    "import system (sys.path, sys.meta_path)": r"\bsys\.path\b|\bmeta_path\b|\bpath_hooks\b|\bpath_importer_cache\b",
    "function internals": r"__(globals|code|closure|defaults|kwdefaults|func|wrapped)__|\bcell_contents\b",
    "torch function or dispatch modes": (r"\bTorch(Function|Dispatch)Mode\b|_Disable(Torch|Functionalization)|"
                                         r"\b_pop_(torch_function_|torch_dispatch_)?mode|_python_dispatch|DisableTorchFunction"),
    "comparison override (__eq__)": r"__eq__|__ne__",
    "replaced library function": (r"(?m)^\s*(np|numpy|torch|math|operator|checks|dlcourse|nbgrader)"
                                  r"(\.\w+)+\s*=(?!=)|setattr\(\s*(np|numpy|torch|math|operator|checks|dlcourse)\b"),
}

def static_scan(sources: list[str]) -> list[str]:
    """Names of the hooks the given (student-editable) cell sources touch, e.g. ['sys.settrace/setprofile']."""
    text = "\n".join(sources)
    return [name for name, pattern in HOOK_PATTERNS.items() if re.search(pattern, text)]


KERNEL_CHECKS = Path(__file__).with_name("kernel_checks.py")
KERNEL_LIBRARY = Path(__file__).with_name("kernel_library.py")   # executed first, into the same module
CHECK_MISSING = "the grader's integrity check did not answer (kernel hooks changed or the kernel died)"


def module_name(nonce: str) -> str:
    return f"_dlg_{nonce}"


def kernel_source() -> str:
    """The source the hidden first cell executes as one module: kernel_library.py, then kernel_checks.py."""
    return KERNEL_LIBRARY.read_text() + "\n\n" + KERNEL_CHECKS.read_text()


def baseline_source(nonce: str, preload: list[str] | tuple = ()) -> str:
    """Code for the hidden first cell: execute kernel_library.py's source and then kernel_checks.py's
    into one fresh module that only this run can name, import `preload` (what the assignment's
    notebooks import) and snapshot every hook there (before any student code has run)."""
    return (f"def _dlg_boot(source, name, nonce, preload):\n"
            f"    import sys, types\n"
            f"    module = types.ModuleType(name)\n"
            f"    exec(compile(source, '<grader>', 'exec'), module.__dict__)\n"
            f"    module.install(nonce, preload)\n"
            f"    sys.modules[name] = module\n"
            f"_dlg_boot({kernel_source()!r}, {module_name(nonce)!r}, {nonce!r}, {list(preload)!r})\n"
            f"del _dlg_boot\n")


def guard_expression(nonce: str) -> str:
    """The expression the grader evaluates (as a user expression: no cell, so no input or AST
    transformer and no IPython event sees it) right before each graded test cell."""
    return f"__import__('sys').modules[{module_name(nonce)!r}].guard()"


def check_expression(nonce: str) -> str:
    """The expression the grader evaluates the same way after the last cell: what still differs."""
    return f"__import__('sys').modules[{module_name(nonce)!r}].check()"


def parse_answer(reply: dict | None, nonce: str, key: str = "guard") -> list[str] | None:
    """The flags in a guard's or check's answer (a list, maybe empty), or None when it did not
    answer properly: an error, another nonce, or anything but a list of strings. The answer comes
    in the shell reply of its own request, never through the kernel's output stream (which other
    writers share: a child process's output could break a printed report apart)."""
    if not reply or reply.get("content", {}).get("status") != "ok":
        return None
    value = reply["content"].get("user_expressions", {}).get(key, {})
    if value.get("status") != "ok":
        return None
    text = value.get("data", {}).get("text/plain", "")
    try:
        text = ast.literal_eval(text)
        head, _, rest = text.partition(" ")
        found = json.loads(rest)
    except (ValueError, SyntaxError, TypeError, AttributeError):
        return None
    if head != nonce or not isinstance(found, list) or not all(isinstance(f, str) for f in found):
        return None
    return found


def parse_guard(reply: dict | None, nonce: str) -> list[str] | None:
    """Hooks the guard restored (a list, maybe empty), or None when it did not answer properly."""
    return parse_answer(reply, nonce, "guard")
