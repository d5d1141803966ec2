"""The grader's in-kernel checks (dlcourse.grading.kernel_checks), driven directly in a real kernel.

The batch tests (test_grader_hostile.py) prove that hook attacks earn no points on the tiny
assignment; this file drives the baseline, the guard and the final check by hand in one plain
IPython kernel (no root, no sandbox: it runs anywhere): attacks the tiny assignment cannot show
(replacing dlcourse.checks and torch's comparisons), the cause of the false alarms on honest
work (a shared stdout), and a table of hostile cases with the defence that catches each one:
the static scan before anything runs, the guard and final check while the notebook runs.
"""
import secrets

import pytest
from jupyter_client.manager import start_new_kernel

from dlcourse.grading import kernel_checks
from dlcourse.grading.integrity import (HOOK_PATTERNS, baseline_source, check_expression, guard_expression,
                                        parse_answer, parse_guard, static_scan)

ATTACK = """
import ast, torch
import dlcourse.checks as checks
from dlcourse.checks import check_equal
checks.check_close = lambda *a, **k: None          # the module's function
check_equal = lambda *a, **k: None                 # the notebook's name for it
torch.allclose = lambda *a, **k: True
class NoAssert(ast.NodeTransformer):
    def visit_Assert(self, node):
        return ast.Pass()
get_ipython().ast_transformers.append(NoAssert())
get_ipython().input_transformers_post.append(lambda lines: lines)
"""


@pytest.fixture(scope="module")
def kernel():
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run(kc, code: str) -> dict:
    return kc.execute_interactive(code, timeout=60, output_hook=lambda msg: None)["content"]


def guard(kc, nonce: str):
    msg_id = kc.execute("", silent=True, store_history=False, user_expressions={"guard": guard_expression(nonce)})
    reply = kc.get_shell_msg(timeout=60)
    assert reply["parent_header"]["msg_id"] == msg_id
    return parse_guard(reply, nonce)


def test_guard_restores_what_a_test_relies_on(kernel):
    nonce = secrets.token_hex(16)
    assert run(kernel, baseline_source(nonce))["status"] == "ok"
    assert guard(kernel, nonce) == [], "nothing to restore before any student code ran"

    assert run(kernel, ATTACK)["status"] == "ok"
    assert run(kernel, "assert False, 'asserts are gone'")["status"] == "ok", "the attack works without the guard"

    restored = guard(kernel, nonce)
    assert restored is not None, "the guard must answer with this run's nonce"
    assert {"IPython AST transformers", "IPython input transformers", "replaced library function"} <= set(restored), restored

    assert run(kernel, "assert False, 'asserts are back'")["status"] == "error", "the AST transformer must be gone"
    for test in ("check_equal(1, 2)", "checks.check_close([1.0], [2.0])",
                 "import dlcourse.checks as c\nc.check_close([1.0], [2.0])", "assert torch.allclose(torch.zeros(1), torch.ones(1))"):
        reply = run(kernel, test)
        assert reply["status"] == "error" and reply["ename"] == "AssertionError", f"{test!r} passed after the guard: {reply}"
    assert guard(kernel, nonce) == [], "a second guard finds everything in place"


def test_guard_answer_must_carry_the_nonce(kernel):
    other = secrets.token_hex(16)
    assert guard(kernel, other) is None, "a guard for a baseline that was never recorded must not answer"
    fake = {"content": {"status": "ok", "user_expressions": {"guard": {
        "status": "ok", "data": {"text/plain": repr(f"{'0' * 32} []")}}}}}
    assert parse_guard(fake, other) is None, "an answer with another nonce is rejected"
    assert parse_guard(None, other) is None


def ask(kc, expression: str, nonce: str):
    msg_id = kc.execute("", silent=True, store_history=False, user_expressions={"answer": expression})
    reply = kc.get_shell_msg(timeout=60)
    assert reply["parent_header"]["msg_id"] == msg_id
    return parse_answer(reply, nonce, "answer")


NOISY = "import subprocess\n_noise = subprocess.Popen(['sh', '-c', 'for i in $(seq 3000); do printf .; done'])"


def test_final_check_answers_while_a_child_process_writes_to_stdout(kernel):
    """The cause of the false alarms: the final report used to be a line printed by a hidden
    last cell, and the kernel's stdout is shared. An honest submission that left a child process
    writing (its output is captured at the file descriptor and joins the running request's
    stream) broke the line apart, e.g. 'DLCOURSE-INTEGRITY....', and was flagged. The check now
    answers in the shell reply of its own request, which nothing else writes to."""
    nonce = secrets.token_hex(16)
    assert run(kernel, baseline_source(nonce))["status"] == "ok"
    for _ in range(5):
        assert run(kernel, NOISY)["status"] == "ok"
        assert ask(kernel, check_expression(nonce), nonce) == [], "an honest kernel must report nothing"
        assert run(kernel, "_noise.wait()")["status"] == "ok"
    assert run(kernel, "import numpy\nnumpy.allclose = lambda *a, **k: True")["status"] == "ok"
    assert ask(kernel, check_expression(nonce), nonce) == ["replaced library function"]
    assert ask(kernel, check_expression("f" * 32), "f" * 32) is None, "no baseline under another nonce"


def test_every_runtime_flag_is_a_static_scan_name():
    """One vocabulary: grades.csv shows the same names whether the scan or the kernel found it."""
    assert {c.flag for c in kernel_checks.CHECKS} <= set(HOOK_PATTERNS)
    assert len(kernel_checks.CHECKS) >= 10 and all(callable(f) for c in kernel_checks.CHECKS for f in c[1:])


WRONG_ADD = "def add(a, b):\n    return a - b\n"
# case: (code, flag of the static scan, flag of the in-kernel guard or None when only the scan sees it)
HOSTILE = {
    "eq": ("class Always:\n    def __eq__(self, other):\n        return True\n", "comparison override (__eq__)", None),
    "numpy": ("import numpy as np\nnp.allclose = lambda *a, **k: True\n", "replaced library function",
              "replaced library function"),
    "builtins": ("import builtins\nbuiltins.round = lambda *a: 0\n", "builtins", "builtins"),
    "trace": ("import sys\nsys.settrace(lambda *a: None)\n", "sys.settrace/setprofile", None),
    "custom_exc": ("get_ipython().set_custom_exc((AssertionError,), lambda *a, **k: None)\n",
                   "IPython traceback display", "IPython traceback display"),
    "showtb": ("get_ipython().showtraceback = lambda *a, **k: None\n", "IPython traceback display",
               "IPython traceback display"),
    "ast": ("import ast\nclass NoAssert(ast.NodeTransformer):\n    def visit_Assert(self, node):\n"
            "        return ast.Pass()\nget_ipython().ast_transformers.append(NoAssert())\n",
            "IPython AST transformers", "IPython AST transformers"),
    "cleanup": ("get_ipython().input_transformers_cleanup.append(lambda lines: lines)\n",
                "IPython input transformers", "IPython input transformers"),
    "manager": ("get_ipython().input_transformer_manager.line_transforms.append(lambda lines: lines)\n",
                "IPython input transformers", "IPython input transformers"),
    "method": ("ip = get_ipython()\nip.transform_cell = lambda cell: cell\n", "IPython shell access",
               "IPython shell access"),
    "events": ("get_ipython().events.register('post_run_cell', lambda result: None)\n", "IPython events",
               "IPython events"),
    "modules": ("import sys\nsys.modules['numpy'] = None\n", "sys.modules", None),
}
# sys.settrace set inside a cell is local to the cell's thread run; the kernel's hook as seen by
# the guard stays unchanged, so only the scan reports it (it cannot fake a test either).


@pytest.mark.parametrize("case", list(HOSTILE))
def test_static_scan_names_each_hostile_case(case):
    code, flag, _ = HOSTILE[case]
    assert flag in static_scan([code + WRONG_ADD]), static_scan([code + WRONG_ADD])


def test_static_scan_leaves_honest_code_alone():
    honest = ["import numpy as np\nx = np.allclose([1.0], [1.0])\nif x == True:\n    print('ok')",
              "def mean(xs):\n    return sum(xs) / len(xs)", "import torch\ny = torch.eq(torch.ones(2), 1)"]
    assert static_scan(honest) == []


@pytest.mark.parametrize("case", [c for c, (_, _, runtime) in HOSTILE.items() if runtime])
def test_guard_catches_and_restores_each_hostile_case(kernel, case):
    code, _, runtime = HOSTILE[case]
    nonce = secrets.token_hex(16)
    assert kernel.execute_interactive(baseline_source(nonce), timeout=60)["content"]["status"] == "ok"
    assert kernel.execute_interactive(code, timeout=60)["content"]["status"] == "ok"
    assert runtime in ask(kernel, check_expression(nonce), nonce), "the final check must see it"
    assert runtime in ask(kernel, guard_expression(nonce), nonce), "the guard must restore it"
    assert ask(kernel, check_expression(nonce), nonce) == [], "after the guard nothing differs"
