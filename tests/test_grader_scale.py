"""The grader's own cost per student does not grow with the class (benchmarks/scale_benchmark.py).

A batch of SCALE tiny submissions (tests/fixtures/tiny_assignment.py) with the grading worker
replaced by the benchmark's stub (no kernel: the gradebook and autograded/ as an autograde leaves
them); everything else is the batch's own code. The per-student time of the finisher (scores
read, the row saved) and of the state log's save in the last block of 100 students stays within
a small multiple of the first block's (a state file rewritten after each student fails it), and the batch's memory does not climb with each block.
SCALE is the 2,000 students of the issue (about 50 s here); benchmarks/scale_benchmark.py runs the
same with the figures per block printed (they are in the README), and its interrupted-batch resume.
"""
import sqlite3
import statistics
import sys
from pathlib import Path

import nbformat

from nbgrader_harness import solved, tiny_course
from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK

from dlcourse.grading import batch, plan, record
from dlcourse.grading.batch import Settings, grade_batch
from dlcourse.grading.nbgrader_patches import FOREIGN_KEYS
from dlcourse.grading.state import StateLog

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import scale_benchmark as bench  # noqa: E402

SCALE = 2000


def test_per_student_bookkeeping_stays_flat_from_the_first_hundred_to_the_last(tmp_path, monkeypatch):
    for module, name in ((plan, "store"), (record.Finisher, "__call__"), (StateLog, "save"), (batch, "Runner")):
        monkeypatch.setattr(module, name, getattr(module, name))   # put back after the test
    probe = bench.Probe()
    bench.install(probe)
    course = tiny_course(tmp_path / "course")
    folder = tmp_path / "subs"
    right, wrong = solved(course, ASSIGNMENT, NOTEBOOK), solved(course, ASSIGNMENT, NOTEBOOK, bench.WRONG)
    for i in range(SCALE):
        (folder / f"s{i:05d}").mkdir(parents=True)
        nbformat.write(wrong if i % 3 == 2 else right, folder / f"s{i:05d}" / f"{NOTEBOOK}.ipynb")
    settings = Settings(workers=1, sandbox=False, feedback=False, fork_kernels=False, timeout_factor=0)
    rows = grade_batch(course.root, ASSIGNMENT, folder, settings, progress=False)

    assert len(rows) == SCALE and all(r["status"] == "graded" for r in rows)
    assert sum(r["parts"]["test_add"] == 0 for r in rows) == SCALE // 3   # every third without add's points
    finish, save = _first_and_last(probe.finish), _first_and_last(probe.save)
    # medians of a block: a student slowed by the machine being busy elsewhere is not growth. A
    # state file rewritten in full after each student (what this replaced) makes the last block's
    # saves about five times the first's at this size; the scores' reads would grow the finisher
    assert save[1] <= 3 * save[0] + 0.2, f"state log's save, ms per student, first and last block: {save}"
    assert finish[1] <= 2 * finish[0] + 1, f"finisher, ms per student, first and last block: {finish}"
    assert probe.rss[-1] - probe.rss[0] < 100, f"resident MB after each block: {probe.rss}"
    with sqlite3.connect(course.root / "gradebook.db") as db:   # scores read without scanning the class's
        indexed = {row[0] for row in db.execute("SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND "
                                                "name LIKE 'ix_dlcourse_%'")}
    assert indexed == {table for table, _ in FOREIGN_KEYS}, indexed


def _first_and_last(seconds: list) -> tuple[float, float]:
    """The median milliseconds of the first and of the last block of students."""
    return (statistics.median(seconds[:bench.BLOCK]) * 1e3, statistics.median(seconds[-bench.BLOCK:]) * 1e3)
