"""Full marks without answers: the doors a red team found into ps_convolution's hidden tests.

One batch of ps_convolution graded as `make grade` grades it (forked kernels as root, sandbox
on). Every hostile student hands in wrong answers of the right type and shape (WRONG: what a
comparison that always agrees passes), or writes them with the references the exercise forbids,
and tries to make the hidden tests pass anyway. Each row of DOORS names the attack and the
defence that must catch it; a caught attack scores what the wrong answers alone score (or fails
outright), and is flagged for review where the defence can tell.

    module planted    a fake dlcourse.checks written into the kernel's working directory and the
                      real one dropped from sys.modules; with or without killing a forked kernel
                      to get a fresh one (integrity: the working directory is off sys.path, the
                      import system and sys.modules are put back before every test; batch: a
                      kernel killed by the student's code is the student's outcome)
    globals rebound   a name in the module globals of a check function replaced through
                      `__globals__` (integrity: the libraries' namespaces, functions and classes
                      are snapshotted whole and put back before every test)
    other doors       the forbidden references reached through torch.ops.aten, torch._C's
                      _VariableFunctions and a default argument bound before the test
                      (checks.references_forbidden: torch's function and dispatch modes)
"""
import io
import zipfile

import nbformat
import pytest

from nbgrader_harness import make_course, solved
from system_packages import ensure_debian_packages

from dlcourse.grading.batch import RETRY_NOTE, Settings, grade_batch

ASSIGNMENT, NOTEBOOK = "ps_convolution", "convolution"
AUTOGRADED = {"test_corr1d": 2, "test_corr2d": 2, "test_output_size": 2, "test_conv2d": 3, "test_max_pool2d": 2}

FAKE_CHECKS = '''
from contextlib import contextmanager
class ReferenceUsedError(AssertionError): pass
class InputModifiedError(AssertionError): pass
def _nothing(*args, **kwargs): return None
check_close = check_equal = check_shape = check_tensor = check_dtype_like = check_not_mistake = _nothing
def to_numpy(value, name="value"):
    import numpy
    return numpy.asarray(value)
@contextmanager
def references_forbidden(*args, **kwargs):
    yield
@contextmanager
def inputs_unchanged(*args, **kwargs):
    yield
'''
PLANT = f'''import os, sys
os.makedirs("dlcourse", exist_ok=True)
open("dlcourse/__init__.py", "w").write("")
open("dlcourse/checks.py", "w").write({FAKE_CHECKS!r})
for _name in [m for m in sys.modules if m == "dlcourse" or m.startswith("dlcourse.")]:
    del sys.modules[_name]
from dlcourse.checks import *   # the notebook's own names for the checks, as the fake has them
'''
KILL_IF_FORKED = "if 'kernel_template' in ' '.join(sys.orig_argv):\n    os._exit(0)\n"
# wrong answers of the right type, shape and dtype: what a comparison that always agrees would pass
WRONG = {
    "corr1d": "def corr1d(x, k):\n    return torch.zeros(len(x) - len(k) + 1, dtype=x.dtype)\n",
    "corr2d": "def corr2d(x, k):\n    return torch.zeros(x.shape[0] - k.shape[0] + 1, x.shape[1] - k.shape[1] + 1, "
              "dtype=x.dtype)\n",
    "output_size": "def output_size(n, k, stride=1, padding=0):\n    return n - k + 1\n",
    "conv2d": "def conv2d(x, weight, bias=None, stride=1, padding=0):\n"
              "    size = lambda n, k: (n + 2 * padding - k) // stride + 1\n"
              "    return torch.zeros(weight.shape[0], size(x.shape[1], weight.shape[2]), size(x.shape[2], weight.shape[3]),"
              " dtype=x.dtype)\n",
    "max_pool2d": "def max_pool2d(x, kernel_size, stride=None):\n    s = stride or kernel_size\n"
                  "    return torch.zeros(x.shape[0], (x.shape[1] - kernel_size) // s + 1, (x.shape[2] - kernel_size) // s + 1,"
                  " dtype=x.dtype)\n",
}
# the name `__globals__` spelled so that the static scan cannot see it: the guard must catch it alone
REBIND = '''import numpy
from dlcourse.checks import check_close
class _AllClose:
    def __getattr__(self, name):
        return getattr(numpy, name)
    def isclose(self, a, b, **kwargs):
        return numpy.ones(numpy.shape(b), dtype=bool)
getattr(check_close, "__glo" + "bals__")["np"] = _AllClose()
'''
DOORS_ANSWERS = {
    "corr1d": "import torch.nn.functional as F\n"
              "def corr1d(x, k, _conv=F.conv1d):\n    return _conv(x[None, None], k[None, None])[0, 0]",
    "corr2d": "def corr2d(x, k):\n    return torch.ops.aten.conv2d(x[None, None], k[None, None])[0, 0]",
    "conv2d": "def conv2d(x, weight, bias=None, stride=1, padding=0):\n"
              "    return torch.ops.aten.convolution(x[None], weight, bias, [stride, stride], [padding, padding],\n"
              "                                      [1, 1], False, [0, 0], 1)[0]",
    "output_size": "def output_size(n, k, stride=1, padding=0):\n    return (n + 2 * padding - k) // stride + 1",
    "max_pool2d": "def max_pool2d(x, kernel_size, stride=None):\n"
                  "    return torch._C._VariableFunctions.max_pool2d(x, kernel_size, stride or kernel_size)",
}
# student: (cells of the release replaced, the defence that must catch it)
DOORS = {
    "planted_forked": (dict(WRONG, corr1d=PLANT + KILL_IF_FORKED + WRONG["corr1d"]), "a kernel killed by the "
                       "student's code is the student's outcome (no fresh second run); the working directory is off sys.path"),
    "planted": (dict(WRONG, corr1d=PLANT + WRONG["corr1d"]), "the working directory is off sys.path; sys.modules "
                "is put back"),
    "rebound": (dict(WRONG, corr1d=REBIND + WRONG["corr1d"]), "the check functions' module globals are put back "
                "before each test"),
    "doors": (DOORS_ANSWERS, "references_forbidden's torch function mode"),
}


def grade(root, students: dict, fork_kernels: bool = True):
    """(course, {student: row}) of a batch of ps_convolution: alice hands in the model answer, every
    other student the release with the cells of `students[student]` (grade id -> source)."""
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    course = make_course(root, [ASSIGNMENT])
    release = course.read("exercises", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    files = {"alice": solved(course, ASSIGNMENT, NOTEBOOK)}
    for student, cells in students.items():
        nb = nbformat.from_dict(nbformat.reads(nbformat.writes(release), as_version=4))
        for cell in nb.cells:
            gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if gid in cells:
                cell.source = cells[gid]
        files[student] = nb
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for student, nb in files.items():
            zf.writestr(f"{student}/{NOTEBOOK}.ipynb", nbformat.writes(nb))
    archive = root / "export.zip"
    archive.write_bytes(buf.getvalue())
    rows = grade_batch(root, ASSIGNMENT, archive, Settings(cell_timeout=60, budget=300, workers=2,
                                                            fork_kernels=fork_kernels), progress=False)
    return course, {r["student"]: r for r in rows}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    students = {student: cells for student, (cells, _) in DOORS.items()}
    return grade(tmp_path_factory.mktemp("doors"), dict(students, wrong=WRONG))


@pytest.fixture(scope="module")
def graded_fresh(tmp_path_factory):
    """The planted module in fresh kernels (--no-fork-kernels, Dask workers): there ipykernel puts
    the working directory first on sys.path, which is where the red team's fake landed."""
    return grade(tmp_path_factory.mktemp("doors-fresh"), {"planted": DOORS["planted"][0], "wrong": WRONG},
                 fork_kernels=False)


def auto(row) -> dict:
    return {k: row["parts"].get(k) for k in AUTOGRADED}


def test_the_model_answer_keeps_full_marks_and_no_flag(graded):
    _, rows = graded
    assert rows["alice"]["status"] == "graded", rows["alice"]
    assert auto(rows["alice"]) == AUTOGRADED, rows["alice"]
    assert rows["alice"]["flags"] == [], rows["alice"]["flags"]


@pytest.mark.parametrize("student, kernels", [("planted", "forked"), ("planted", "fresh"), ("rebound", "forked")])
def test_an_attack_on_what_the_tests_import_earns_what_the_wrong_answers_alone_earn(request, student, kernels):
    _, rows = request.getfixturevalue("graded" if kernels == "forked" else "graded_fresh")
    row, wrong = rows[student], rows["wrong"]
    assert row["status"] == "graded", row
    assert auto(row) == auto(wrong), f"{student} ({DOORS[student][1]}): {auto(row)} vs {auto(wrong)}"
    assert sum(auto(wrong).values()) < sum(AUTOGRADED.values()) / 2, f"the wrong answers earn too much: {auto(wrong)}"
    assert "replaced library function" in row["flags"], row["flags"]


def test_a_kernel_killed_by_the_student_is_not_graded_again_afresh(graded):
    course, rows = graded
    row = rows["planted_forked"]
    assert row["status"] == "failed" and "kernel died" in row["reason"], row
    assert RETRY_NOTE in row["notes"], "one more try with a forked kernel, as for any dead kernel"
    assert not course.path("grades", ASSIGNMENT, "logs", "planted_forked.forked.log").exists(), \
        "a kernel the student killed must not earn a run with a fresh kernel"


def test_forbidden_references_through_other_doors_score_zero_with_the_reason(graded):
    course, rows = graded
    row = rows["doors"]
    assert row["status"] == "graded", row
    expected = dict(AUTOGRADED, test_corr1d=0, test_corr2d=0, test_conv2d=0, test_max_pool2d=0)
    assert auto(row) == expected, auto(row)
    html = course.path("feedback", "doors", ASSIGNMENT, f"{NOTEBOOK}.html").read_text()
    for door in ("torch.ops.aten.conv2d", "torch.ops.aten.convolution", "torch.max_pool2d"):
        assert door in html, f"the feedback must name {door}"
    assert "your code calls" in html
