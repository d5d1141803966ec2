"""No false alarms on honest work: 40 honest submissions graded with 2 workers on a loaded machine.

The tiny assignment (tests/fixtures/tiny_assignment.py, about a second per submission) keeps this
affordable. Two busy processes load both cores while the batch runs. The honest submissions are
written in several ways, among them the one that used to be flagged: a child process still
writing to stdout when the grader's final check ran (see integrity.py). Three hostile
submissions in the same batch must still be flagged.
"""
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK, POINTS
from nbgrader_harness import solved, tiny_course
from system_packages import ensure_debian_packages

from dlcourse.grading.batch import Settings, grade_batch
from dlcourse.grading.sandbox import Limits

REPO = Path(__file__).resolve().parents[1]
HONEST = {  # variant: overrides of the model answer (all correct)
    "model": None,
    "loop": {"mean": "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total / len(xs)"},
    "noisy_child": {"mean": "import subprocess\n"
                            "_helper = subprocess.Popen(['sh', '-c', 'for i in $(seq 4000); do printf .; done'])\n"
                            "def mean(xs):\n    return sum(xs) / len(xs)"},
    "thread": {"add": "import threading, time\n"
                      "def _tick():\n    for _ in range(50):\n        print('tick', end='', flush=True)\n        time.sleep(0.02)\n"
                      "threading.Thread(target=_tick, daemon=True).start()\n"
                      "def add(a, b):\n    return a + b"},
    "no_newline": {"mean": "def mean(xs):\n    return sum(xs) / len(xs)\nprint('mean is ready', end='')"},
}
HOSTILE = {  # student: (code put before a wrong add, flag the grader must raise)
    "h_ast": ("import ast\nclass NoAssert(ast.NodeTransformer):\n    def visit_Assert(self, node):\n"
              "        return ast.Pass()\nget_ipython().ast_transformers.append(NoAssert())\n", "IPython AST transformers"),
    "h_numpy": ("import numpy as np\nnp.allclose = lambda *a, **k: True\n", "replaced library function"),
    "h_showtb": ("get_ipython().showtraceback = lambda *a, **k: None\n", "IPython traceback display"),
}
N_HONEST = 40


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    root = tmp_path_factory.mktemp("course")
    course = tiny_course(root)
    folder = tmp_path_factory.mktemp("submissions")
    variants = list(HONEST)
    students = {}
    for i in range(N_HONEST):
        variant = variants[i % len(variants)]
        students[f"honest{i:02d}_{variant}"] = solved(course, ASSIGNMENT, NOTEBOOK, HONEST[variant])
    for student, (code, _) in HOSTILE.items():
        students[student] = solved(course, ASSIGNMENT, NOTEBOOK, {"add": code + "def add(a, b):\n    return a - b"})
    for student, nb in students.items():
        (folder / student).mkdir(parents=True)
        nbformat.write(nb, folder / student / f"{NOTEBOOK}.ipynb")
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        rows = grade_batch(root, ASSIGNMENT, folder, Settings(
            cell_timeout=30, budget=120, workers=2, feedback=False,
            limits=Limits(memory_mb=1536, processes=40, cpu_seconds=60)), progress=False)
    finally:
        for p in load:
            p.kill()
            p.wait()
    return {r["student"]: r for r in rows}


def test_forty_honest_submissions_raise_no_flag(batch):
    honest = {s: r for s, r in batch.items() if s.startswith("honest")}
    assert len(honest) == N_HONEST
    wrong = {s: (r["status"], r.get("reason"), r.get("parts")) for s, r in honest.items()
             if r["status"] != "graded" or {k: r["parts"][k] for k in POINTS} != POINTS}
    assert not wrong, f"honest submissions lost points: {wrong}"
    flagged = {s: r["flags"] for s, r in honest.items() if r["flags"]}
    assert not flagged, f"{len(flagged)} of {N_HONEST} honest submissions were flagged: {flagged}"


@pytest.mark.parametrize("student", list(HOSTILE))
def test_hostile_submissions_in_the_same_batch_are_still_flagged(batch, student):
    row = batch[student]
    assert row["status"] == "graded", row
    assert HOSTILE[student][1] in row["flags"], row["flags"]
    assert row["parts"]["test_add"] == 0, f"{student} earned points for a wrong add()"
