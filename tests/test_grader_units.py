"""The grader's building blocks, tested without root, bubblewrap or a batch (they run anywhere):
validation.validate / pick_notebook, the failure classifier, HideHiddenTests and the parser of
the guard's and check's answers. (Which defence catches each hostile case, the static scan or the
in-kernel guard, is tested in test_grader_guard.py, with a plain kernel.)
"""
import json
import secrets

import nbformat
import pytest

from fixtures.tiny_assignment import notebook as tiny_source

from dlcourse.grading.outcome import KERNEL_DIED, Failure, classify
from dlcourse.grading.integrity import parse_answer
from dlcourse.grading.preprocessors import HIDDEN_NOTE, HideHiddenTests
from dlcourse.grading.validation import pick_notebook, validate

def test_answer_parser_rejects_everything_but_this_runs_list_of_flags():
    nonce = secrets.token_hex(16)

    def reply(text, status="ok"):
        return {"content": {"status": "ok", "user_expressions": {"answer": {"status": status,
                                                                            "data": {"text/plain": repr(text)}}}}}
    assert parse_answer(reply(f"{nonce} []"), nonce, "answer") == []
    assert parse_answer(reply(f"{nonce} " + json.dumps(["builtins"])), nonce, "answer") == ["builtins"]
    for bad in (reply(f"{'0' * 32} []"), reply(f"{nonce} {{}}"), reply(f"{nonce} [1]"), reply(f"{nonce} ["),
                reply(f"{nonce} []", status="error"), None, {"content": {"status": "error"}}):
        assert parse_answer(bad, nonce, "answer") is None, bad


@pytest.mark.parametrize("text, kind, words", [
    ("Timeout waiting for IOPub output", Failure.UNRESPONSIVE, "ignored the interrupt"),
    ("nbclient.exceptions.DeadKernelError: Kernel died", Failure.KERNEL_DIED, KERNEL_DIED),
    ("CellTimeoutError: No reply", Failure.CELL_TIMEOUT, "ran past the time limit"),
    ("[INFO] x\n[ERROR] There was an error processing assignment", Failure.AUTOGRADE,
     "There was an error processing assignment"),
    ("something\nlast words", Failure.AUTOGRADE, "autograding failed: last words"),
    ("", Failure.AUTOGRADE, "autograding failed")])
def test_classify_names_the_kind_and_the_reason(text, kind, words):
    got, reason = classify({"error": text, "log": ""})
    assert got is kind and words in reason, (got, reason)


def test_only_a_dead_kernel_is_retried_and_only_grader_trouble_is_not_final():
    assert [f for f in Failure if not f.final] == [Failure.GRADER_ERROR, Failure.WORKER_DIED]
    assert Failure.MEMORY_CAP.reason(mb=768).startswith("stopped: ") and "768 MB" in Failure.MEMORY_CAP.reason(mb=768)


def _submission(change=None) -> bytes:
    nb = tiny_source()
    if change:
        change(nb)
    return nbformat.writes(nb).encode()


SOURCE = json.loads(nbformat.writes(tiny_source()))


def _dup(nb):
    nb.cells.insert(3, nbformat.from_dict(json.loads(json.dumps(nb.cells[2]))))


def _schema(nb):
    nb.cells[2].metadata.nbgrader.schema_version = 1


@pytest.mark.parametrize("data, reason", [
    (b'{"cells": [', "not valid JSON"), (b"[1, 2]", "not a notebook"),
    (json.dumps({"cells": [], "nbformat": 3}).encode(), "format version 3"),
    (_submission(_dup), "appears in cells"), (_submission(_schema), "schema_version 1")])
def test_validate_rejects_broken_notebooks_with_a_reason(data, reason):
    verdict = validate(data, SOURCE)
    assert not verdict.ok and reason in verdict.reason, verdict


def test_validate_repairs_with_notes_and_lists_editable_code():
    def markdown_test(nb):
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_add")
        cell.cell_type = "markdown"
        cell.pop("outputs"), cell.pop("execution_count")
        nb.metadata.kernelspec = {"name": "ir", "display_name": "R", "language": "R"}
    verdict = validate(_submission(markdown_test), SOURCE)
    assert verdict.ok, verdict.reason
    assert any("turned into markdown" in n for n in verdict.notes) and any("'ir' replaced" in n for n in verdict.notes)
    assert any("def add" in s for s in verdict.editable_sources)
    assert not any("HIDDEN TESTS" in s for s in verdict.editable_sources), "test cells are not the student's code"


def test_pick_notebook():
    assert pick_notebook({"tiny.ipynb": b"", "x.txt": b""}, "tiny") == ("tiny.ipynb", "")
    assert pick_notebook({"tiny (1).ipynb": b""}, "tiny") == ("tiny (1).ipynb", "'tiny (1).ipynb' graded as tiny.ipynb")
    assert pick_notebook({}, "tiny")[0] is None
    chosen, message = pick_notebook({"a.ipynb": b"", "b.ipynb": b""}, "tiny")
    assert chosen is None and "several other notebooks" in message


def test_hide_hidden_tests_removes_code_and_shortens_tracebacks():
    nb = tiny_source()
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_add")
    cell.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="add(20, 22) must be the int 42",
                                           traceback=["Traceback", "_hid = add(20, 22)", "AssertionError: ..."])]
    out, _ = HideHiddenTests().preprocess_cell(cell, {}, 0)
    assert "_hid" not in out.source and "HIDDEN TESTS" not in out.source
    assert out.outputs[0]["traceback"] == ["AssertionError: add(20, 22) must be the int 42", HIDDEN_NOTE]
