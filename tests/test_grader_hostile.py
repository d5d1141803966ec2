"""The batch grader against broken and hostile submissions (python -m dlcourse.grading).

One course with the tiny assignment (tests/fixtures/tiny_assignment.py: add 2 points, mean 3
points), one zip with a submission per case, one grading run with 2 workers, 3 s per cell and
30 s per submission. Limits are set by the grader before any student code runs (512 MB address
space is not used; 1.5 GB, 40 processes per kernel uid), so none of these cases can harm the machine.
"""
import io
import json
import subprocess
import zipfile
from pathlib import Path

import nbformat
import pytest

from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK, POINTS
from nbgrader_harness import grade_id, solved, tiny_course

from system_packages import ensure_debian_packages

from dlcourse.grading.batch import Settings, grade_batch
from dlcourse.grading.sandbox import Limits

FULL = sum(POINTS.values())
DUE = "2025-01-01 12:00:00"
WRONG_ADD = "def add(a, b):\n    return a - b\n"
HOOKS = {  # student: (code put before a wrong add, flag the grader must raise)
    "eq": ("class Always:\n    def __eq__(self, other):\n        return True\n"
           "def add(a, b):\n    return Always()\n", "comparison override (__eq__)"),
    "numpy": ("import numpy as np\nnp.allclose = lambda *a, **k: True\n" + WRONG_ADD, "replaced library function"),
    "builtins": ("import builtins\nbuiltins.round = lambda *a: 0\n" + WRONG_ADD, "builtins"),
    "trace": ("import sys\nsys.settrace(lambda *a: None)\n" + WRONG_ADD, "sys.settrace/setprofile"),
    "custom_exc": ("get_ipython().set_custom_exc((AssertionError,), lambda *a, **k: None)\n" + WRONG_ADD,
                   "IPython traceback display"),
    "showtb": ("get_ipython().showtraceback = lambda *a, **k: None\n" + WRONG_ADD, "IPython traceback display"),
    "ast": ("import ast\nclass NoAssert(ast.NodeTransformer):\n    def visit_Assert(self, node):\n        return ast.Pass()\n"
            "get_ipython().ast_transformers.append(NoAssert())\n" + WRONG_ADD, "IPython AST transformers"),
    "cleanup": ("get_ipython().input_transformers_cleanup.append(lambda lines: [l.replace('assert', 'pass #') for l in lines])\n"
                + WRONG_ADD, "IPython input transformers"),
    "post": ("get_ipython().input_transformers_post.append(lambda lines: [l.replace('assert', 'pass #') for l in lines])\n"
             + WRONG_ADD, "IPython input transformers"),
    "manager": ("get_ipython().input_transformer_manager.line_transforms.append("
                "lambda lines: [l.replace('assert', 'pass #') for l in lines])\n" + WRONG_ADD, "IPython input transformers"),
    "method": ("ip = get_ipython()\nreal = ip.transform_cell\n"
               "ip.transform_cell = lambda cell: real(cell.replace('assert', 'pass #'))\n" + WRONG_ADD,
               "IPython shell access"),
    "events": ("get_ipython().events.register('post_run_cell', lambda result: None)\n" + WRONG_ADD, "IPython events"),
}
SPY = """
import json, os, socket
def _try(f):
    try:
        return f()
    except Exception as e:
        return type(e).__name__
seen = {{
    "solutions": _try(lambda: os.listdir("{root}/solutions")),
    "gradebook": _try(lambda: open("{root}/gradebook.db", "rb").read(16).decode("latin-1")),
    "others": _try(lambda: os.listdir("{root}/submitted")),
    "write_course": _try(lambda: open("{root}/pwned.txt", "w").write("x")),
    "write_tmp": _try(lambda: open("/tmp/pwned.txt", "w").write("x")),
    "network": _try(lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2) and "connected"),
    "uid": os.getuid(),
}}
print("SPY", json.dumps(seen))
def add(a, b):
    return a + b
"""


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _json(nb) -> bytes:
    return nbformat.writes(nb).encode()


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    ensure_debian_packages(["bubblewrap"], ["bwrap"])  # a clean CI machine installs it here
    root = tmp_path_factory.mktemp("course")
    course = tiny_course(root)
    assert 'penalty_method = "zero"' in (root / "nbgrader_config.py").read_text()  # the course's late policy

    def sub(overrides=None):
        return solved(course, ASSIGNMENT, NOTEBOOK, overrides)

    listener = __import__("socket").socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    files = {
        "alice/tiny.ipynb": _json(sub()),
        "bob/tiny.ipynb": _json(course.read("exercises", ASSIGNMENT, f"{NOTEBOOK}.ipynb")),
        "warner/tiny.ipynb": _json(sub({"add": "import sys\ndef add(a, b):\n"
                                               "    print('RuntimeWarning: slow path', file=sys.stderr)\n    return a + b"})),
        "late/tiny.ipynb": _json(sub()),
        "late/timestamp.txt": b"2030-01-01 12:00:00",
        "badjson/tiny.ipynb": b'{"cells": [{"cell_type": "code", "source": "def add(',
        "renamed/tiny (1).ipynb": _json(sub()),
        "sysexit/tiny.ipynb": _json(sub({"add": "import sys\nsys.exit(1)\ndef add(a, b):\n    return a + b"})),
        "osexit/tiny.ipynb": _json(sub({"add": "import os\nos._exit(0)"})),
        "nosigint/tiny.ipynb": _json(sub({"mean": "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                                                 "while True:\n    pass"})),
        "loop/tiny.ipynb": _json(sub({"mean": "while True:\n    pass"})),
        "memory/tiny.ipynb": _json(sub({"add": "hog = bytearray(8 * 2**30)\ndef add(a, b):\n    return a + b"})),
        "forks/tiny.ipynb": _json(sub({"add": "import os, time\ndef add(a, b):\n    return a + b\n"
                                              "for _ in range(300):\n    if os.fork() == 0:\n"
                                              "        time.sleep(60)\n        os._exit(0)"})),
        "flood/tiny.ipynb": _json(sub({"add": "print('\\n'.join(f'line {i}' for i in range(200_000)))\n"
                                              "def add(a, b):\n    return a + b"})),
        "spy/tiny.ipynb": _json(sub({"add": SPY.format(root=root, port=port)})),
        # flat LMS export names: <student>_<ids>_<file>, the last one a resubmission renamed by the LMS
        "carol_12345_67890_tiny.ipynb": _json(sub()),
        "dan_4711_tiny-2.ipynb": _json(sub({"mean": "def mean(xs):\n    return 0.0"})),
    }
    for student, (code, _) in HOOKS.items():
        files[f"{student}/tiny.ipynb"] = _json(sub({"add": code}))

    dup = sub()
    copy = nbformat.from_dict(json.loads(json.dumps(dup.cells[2])))
    copy.id = "copied-cell"
    dup.cells.insert(3, copy)
    files["dupid/tiny.ipynb"] = _json(dup)
    schema = sub()
    schema.cells[2].metadata.nbgrader.schema_version = 1
    files["schema/tiny.ipynb"] = _json(schema)
    md = sub()
    cell = next(c for c in md.cells if grade_id(c) == "test_add")
    cell.cell_type = "markdown"
    cell.pop("outputs"), cell.pop("execution_count")
    files["markdown/tiny.ipynb"] = _json(md)
    kernel = sub()
    kernel.metadata.kernelspec = {"name": "ir", "display_name": "R", "language": "R"}
    files["kernelspec/tiny.ipynb"] = _json(kernel)

    archive = root.parent / "export.zip"
    archive.write_bytes(_zip(files))
    settings = Settings(cell_timeout=3, budget=30, workers=2, duedate=DUE,
                        limits=Limits(memory_mb=1536, processes=40, cpu_seconds=30))
    try:
        rows = grade_batch(root, ASSIGNMENT, archive, settings, progress=False)
    finally:
        listener.close()
    return course, files, {r["student"]: r for r in rows}


def csv_rows(course):
    import csv
    with open(course.path("grades", ASSIGNMENT, "grades.csv")) as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def assert_graded(rows, student, parts, status="graded"):
    row = rows[student]
    assert row["status"] == status, f"{student}: expected {status}, got {row['status']}: {row.get('reason')}"
    got = {k: v for k, v in row["parts"].items() if k in POINTS}
    assert got == parts, f"{student}: parts {got}, expected {parts}"


def test_correct_and_untouched(batch):
    _, _, rows = batch
    assert_graded(rows, "alice", POINTS)
    assert rows["alice"]["flags"] == [], rows["alice"]["flags"]
    assert_graded(rows, "bob", dict.fromkeys(POINTS, 0))


def test_warning_on_stderr_keeps_full_marks(batch):
    assert_graded(batch[2], "warner", POINTS)


def test_late_submission_gets_the_configured_penalty(batch):
    row = batch[2]["late"]
    assert row["status"] == "late", row
    assert row["score"] == 0, "nbgrader_config.py of this course says late work scores zero"


@pytest.mark.parametrize("student, words", [
    ("badjson", "not valid JSON"), ("dupid", "appears in cells"), ("schema", "schema_version"),
    ("osexit", "kernel died"), ("nosigint", "ignored the interrupt")])
def test_broken_submission_fails_with_its_reason(batch, student, words):
    row = batch[2][student]
    assert row["status"] == "failed" and words in row["reason"], row
    assert "score" not in row or row["score"] is None, "a failed student must not show a score"
    assert csv_rows(batch[0])[student]["score"] == "", "grades.csv must not show a 0 for a failed student"


@pytest.mark.parametrize("student, note", [
    ("renamed", "'tiny (1).ipynb' graded as tiny.ipynb"), ("markdown", "test cell 'test_add' had been turned into markdown"),
    ("kernelspec", "kernelspec 'ir' replaced")])
def test_repairable_submission_is_graded_with_a_note(batch, student, note):
    row = batch[2][student]
    assert_graded(batch[2], student, POINTS)
    assert any(note in n for n in row["notes"]), row["notes"]


def test_runaway_code_loses_only_its_part(batch):
    rows = batch[2]
    assert_graded(rows, "sysexit", dict(POINTS, test_add=0))
    assert_graded(rows, "loop", dict(POINTS, test_mean=0))
    assert "mean: hit the time limit" in rows["loop"]["notes"], rows["loop"]["notes"]
    assert_graded(rows, "memory", dict(POINTS, test_add=0))
    assert "add: hit the memory limit" in rows["memory"]["notes"], rows["memory"]["notes"]
    assert_graded(rows, "flood", POINTS)


def test_fork_bomb_is_capped_and_cleaned_up(batch):
    course, _, rows = batch
    assert_graded(rows, "forks", POINTS)
    autograded = course.read("autograded", "forks", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    cell = next(c for c in autograded.cells if grade_id(c) == "add")
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "BlockingIOError", "the process limit must stop the fork loop"
    left = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout.splitlines()
    assert not [p for p in left if "/forks/conn/" in p], "the fork bomb's processes outlived the batch"


@pytest.mark.parametrize("student", list(HOOKS))
def test_hook_tampering_is_flagged_and_earns_nothing_it_should_not(batch, student):
    row = batch[2][student]
    assert row["status"] == "graded", row
    assert HOOKS[student][1] in row["flags"], f"{student}: flags {row['flags']}"
    assert student in csv_rows(batch[0])[student]["student"] and csv_rows(batch[0])[student]["flags"]
    assert row["parts"]["test_add"] == 0, f"{student} earned points for a wrong add()"
    assert row["parts"]["test_mean"] == POINTS["test_mean"], f"{student}: the untouched part keeps its points"


def test_flat_lms_file_names_are_read(batch):
    course, _, rows = batch
    assert_graded(rows, "carol", POINTS)
    assert_graded(rows, "dan", dict(POINTS, test_mean=0))
    assert any("graded as tiny.ipynb" in n for n in rows["dan"]["notes"]), rows["dan"]["notes"]
    assert course.path("submitted", "carol", ASSIGNMENT, "tiny.ipynb").exists()


def test_sandbox_hides_course_and_network(batch):
    course, _, rows = batch
    assert_graded(rows, "spy", POINTS)
    nb = course.read("autograded", "spy", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    cell = next(c for c in nb.cells if grade_id(c) == "add")
    text = "".join(o.get("text", "") for o in cell.outputs)
    seen = json.loads(text.split("SPY ", 1)[1])
    assert seen["solutions"] == "FileNotFoundError", seen
    assert seen["gradebook"] == "FileNotFoundError", seen
    assert seen["others"] == "FileNotFoundError", seen
    assert seen["write_course"] in ("FileNotFoundError", "PermissionError", "OSError"), seen
    assert not course.path("pwned.txt").exists()
    assert seen["write_tmp"] != 1 or not Path("/tmp/pwned.txt").exists()
    assert seen["network"] in ("ConnectionRefusedError", "OSError", "TimeoutError"), seen
    assert seen["uid"] != 0, "the kernel must not run as root"


def test_every_student_has_a_row_and_originals_are_kept(batch):
    course, files, rows = batch
    flat = {"carol_12345_67890_tiny.ipynb": ("carol", "tiny.ipynb"), "dan_4711_tiny-2.ipynb": ("dan", "tiny-2.ipynb")}
    where = {name: flat.get(name) or tuple(name.split("/")) for name in files}
    assert set(csv_rows(course)) == {student for student, _ in where.values()}
    for name, data in files.items():
        student, fname = where[name]
        assert course.path("submitted", student, ASSIGNMENT, fname).read_bytes() == data, f"{name} was changed"


def test_feedback_hides_hidden_tests(batch):
    course, *_ = batch
    html = course.path("feedback", "eq", ASSIGNMENT, f"{NOTEBOOK}.html").read_text()
    assert "must be the int 42" in html, "the failing hidden test's message must reach the student"
    assert "_hid" not in html and "HIDDEN TESTS" not in html


def test_report_is_written(batch):
    course, *_ = batch
    out = course.path("grades", ASSIGNMENT)
    for name in ("grades.csv", "report.html", "histogram.png", "failing_tests.png"):
        assert (out / name).stat().st_size > 0, name
    assert "Fraction failing each test" in (out / "report.html").read_text()


def test_a_dead_kernel_is_retried_once_before_the_student_fails(batch):
    row = batch[2]["osexit"]
    assert row["status"] == "failed" and "kernel died" in row["reason"], row
    assert any("graded a second time" in n for n in row["notes"]), row["notes"]
