"""The grader's in-kernel guard (dlcourse.grading.integrity), driven directly in a real kernel.

The batch tests (test_grader_hostile.py) prove that hook attacks earn no points on the tiny
assignment; this one drives the baseline and the guard by hand in one plain IPython kernel,
for the attacks the tiny assignment cannot show: replacing the course's own checks
(dlcourse.checks, which the real assignments' tests call) and torch's comparisons.
"""
import secrets

import pytest
from jupyter_client.manager import start_new_kernel

from dlcourse.grading.integrity import baseline_source, guard_expression, parse_guard

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
