"""Each cell's time limit from the model solution's time in it (lib/dlcourse/grading/timelimits.py).

A correct answer that spends 5 s more than the solution in one cell keeps full marks; an endless
loop is stopped at the derived limit (the floor here), not at the course's configured limit; the
feedback and grades.csv say which cell hit which limit and why. The limits are small so that the
batch runs in seconds. The solution is timed only once a cell runs past the floor (a class that
stays within it never runs it). A batch run again with the same solutions on the same host takes the
solution's times kept by the first instead of timing it again.
"""
import csv
import json
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK, POINTS
from nbgrader_harness import solved, tiny_course
from system_packages import ensure_debian_packages

from dlcourse.grading import report
from dlcourse.grading.batch import Settings, grade_batch
from dlcourse.grading.sandbox import Limits
from dlcourse.grading.timelimits import CellTimeLimits, keep_times, kept_times, solution_key

COURSE_LIMIT, FACTOR, FLOOR = 60, 10, 7
SLOW = "import time\ntime.sleep(5)   # 5 s more than the model solution, which takes milliseconds\n" \
       "def add(a, b):\n    return a + b"
LOOPS = "def mean(xs):\n    while True:\n        pass"
WHY = f"more than {FACTOR} times the model solution's time"


def limits(**times) -> CellTimeLimits:
    return CellTimeLimits(timeout_factor=FACTOR, timeout_floor=FLOOR, solution_seconds={"nb": times})


@pytest.mark.parametrize("solution, expected", [(0.01, FLOOR), (0.69, FLOOR), (1.5, 15), (5.9, 59), (6.0, None), (100, None)])
def test_a_cell_may_run_a_multiple_of_the_solutions_time_with_a_floor_capped_by_the_course(solution, expected):
    got = limits(test_add=solution, other=1.0).limit(new_code_cell(metadata={"nbgrader": {"grade_id": "test_add"}}),
                                                      "nb", COURSE_LIMIT)
    assert (got.seconds if got else None) == expected, got   # None: the course's limit as it is
    if got:
        assert WHY in got.why and f"its {solution:.2f} s in this cell" in got.why and f"course's {COURSE_LIMIT} s" in got.why


def test_a_cell_the_solution_lacks_gets_the_whole_notebooks_time_and_no_timings_change_nothing():
    added = new_code_cell("print(1)")
    assert limits(a=1.0, b=1.2).limit(added, "nb", COURSE_LIMIT).seconds == 22
    assert "whole notebook" in limits(a=1.0, b=1.2).limit(added, "nb", COURSE_LIMIT).why
    assert limits(a=1.0).limit(added, "another notebook", COURSE_LIMIT) is None
    off = CellTimeLimits(timeout_factor=0, solution_seconds={"nb": {"a": 0.1}})
    assert off.limit(new_code_cell(metadata={"nbgrader": {"grade_id": "a"}}), "nb", COURSE_LIMIT) is None


def test_a_slower_correct_answer_keeps_its_marks_and_a_loop_stops_at_the_derived_limit(tmp_path, monkeypatch):
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    # the report's tail work (started once the last student started, before the loop asks for the
    # solution's times) takes long, as a first run's imports on a busy machine do: the solution
    # must be timed at once all the same, not after it (no fork while it runs: a new Python)
    prepare = report.prepare_report
    monkeypatch.setattr(report, "prepare_report", lambda: (time.sleep(COURSE_LIMIT / 2), prepare()))
    course = tiny_course(tmp_path / "course")
    folder = tmp_path / "subs"
    for student, overrides in {"honest": None, "slow": {"add": SLOW}, "loops": {"mean": LOOPS}}.items():
        (folder / student).mkdir(parents=True)
        nbformat.write(solved(course, ASSIGNMENT, NOTEBOOK, overrides), folder / student / f"{NOTEBOOK}.ipynb")
    settings = Settings(cell_timeout=COURSE_LIMIT, timeout_factor=FACTOR, timeout_floor=FLOOR, budget=120, workers=2,
                        limits=Limits(memory_mb=1536, processes=40, cpu_seconds=120))
    rows = {r["student"]: r for r in grade_batch(course.root, ASSIGNMENT, folder, settings, progress=False)}
    for student in ("honest", "slow"):
        assert rows[student]["status"] == "graded", rows[student]
        assert {k: rows[student]["parts"][k] for k in POINTS} == POINTS, rows[student]
    assert rows["slow"]["seconds"] > 5, "the slow answer really took 5 s more"
    loops = rows["loops"]
    assert loops["status"] == "graded" and loops["parts"] == {**loops["parts"], "test_add": 2, "test_mean": 0}, loops
    assert loops["seconds"] < COURSE_LIMIT / 2, f"stopped at the derived {FLOOR} s, not {COURSE_LIMIT} s: {loops}"
    assert "test_mean: hit the time limit" in loops["notes"], loops["notes"]
    why = [n for n in loops["notes"] if n.startswith(f"test_mean: stopped after {FLOOR} s: {WHY}")]
    assert why and f"at least {FLOOR} s" in why[0] and f"course's {COURSE_LIMIT} s" in why[0], loops["notes"]
    with open(course.path("grades", ASSIGNMENT, "grades.csv")) as f:
        assert why[0] in next(r for r in csv.DictReader(f) if r["student"] == "loops")["reason"]   # the notes column
    feedback = course.path("feedback", "loops", ASSIGNMENT, f"{NOTEBOOK}.html").read_text()
    assert f"stopped after {FLOOR} s: {WHY}" in feedback.replace("&#39;", "'")
    assert not any("limit" in n for n in rows["slow"]["notes"] + rows["honest"]["notes"])
    # graded again (the looping student sends a new version): the solution's times measured above
    # are taken from grades/<assignment>/solution_times.json, the solution is not run again
    solution_log = course.path("grades", ASSIGNMENT, "logs", "_model_solution.log")
    stamp = solution_log.stat().st_mtime_ns
    kept = course.path("grades", ASSIGNMENT, "solution_times.json")
    assert kept.is_file() and set(json.loads(kept.read_text())["times"]) == {NOTEBOOK}
    nb = solved(course, ASSIGNMENT, NOTEBOOK, {"mean": LOOPS + "\n# second try"})
    nbformat.write(nb, folder / "loops" / f"{NOTEBOOK}.ipynb")
    again = {r["student"]: r for r in grade_batch(course.root, ASSIGNMENT, folder, settings, progress=False)}
    assert solution_log.stat().st_mtime_ns == stamp, "the model solution was run again"
    assert any(n.startswith(f"test_mean: stopped after {FLOOR} s: {WHY}") for n in again["loops"]["notes"]), again["loops"]


def test_a_class_whose_cells_all_end_within_the_floor_never_runs_the_model_solution(tmp_path):
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    course = tiny_course(tmp_path / "course")
    folder = tmp_path / "subs"
    for student in ("honest", "also_honest"):
        (folder / student).mkdir(parents=True)
        nbformat.write(solved(course, ASSIGNMENT, NOTEBOOK), folder / student / f"{NOTEBOOK}.ipynb")
    settings = Settings(cell_timeout=COURSE_LIMIT, timeout_factor=FACTOR, timeout_floor=FLOOR, budget=120, workers=2,
                        limits=Limits(memory_mb=1536, processes=40, cpu_seconds=120))
    rows = grade_batch(course.root, ASSIGNMENT, folder, settings, progress=False)
    assert all({k: r["parts"][k] for k in POINTS} == POINTS for r in rows), rows
    logs = course.path("grades", ASSIGNMENT, "logs")
    assert (logs / "honest.log").is_file() and not (logs / "_model_solution.log").exists()
    assert not course.path("grades", ASSIGNMENT, "solution_times.json").exists()


def test_a_cell_past_the_floor_waits_for_the_solutions_times_and_keeps_its_marks_within_its_limit(tmp_path):
    # floor 1 s, and a factor so large that every cell's limit is the course's: the slow answer
    # (3 s) runs past the floor, the batch times the solution, and the cell's reply is still taken
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    course = tiny_course(tmp_path / "course")
    folder = tmp_path / "subs"
    (folder / "slow").mkdir(parents=True)
    nbformat.write(solved(course, ASSIGNMENT, NOTEBOOK, {"mean": "import time\ntime.sleep(3)\ndef mean(xs):\n    return sum(xs) / len(xs)"}),
                   folder / "slow" / f"{NOTEBOOK}.ipynb")
    settings = Settings(cell_timeout=COURSE_LIMIT, timeout_factor=1e6, timeout_floor=1, budget=120, workers=2,
                        limits=Limits(memory_mb=1536, processes=40, cpu_seconds=120))
    row, = grade_batch(course.root, ASSIGNMENT, folder, settings, progress=False)
    assert row["status"] == "graded" and {k: row["parts"][k] for k in POINTS} == POINTS, row
    assert row["seconds"] > 3 and not any("limit" in n for n in row["notes"]), row
    assert course.path("grades", ASSIGNMENT, "logs", "_model_solution.log").is_file(), "the solution was not timed"
    assert course.path("grades", ASSIGNMENT, "solution_times.json").is_file()


def test_the_solutions_times_are_kept_under_a_key_of_the_notebooks_and_the_kernel(tmp_path):
    one, two = tmp_path / "a.ipynb", tmp_path / "b.ipynb"
    one.write_text("{}")
    two.write_text('{"cells": []}')
    key = solution_key([one], threads=1, sandbox=True)
    assert key == solution_key([one], sandbox=True, threads=1)
    assert len({key, solution_key([two], threads=1, sandbox=True), solution_key([one, two], threads=1, sandbox=True),
                solution_key([one], threads=2, sandbox=True)}) == 4
    path = tmp_path / "solution_times.json"
    assert kept_times(path, key) == {}   # nothing kept yet
    keep_times(path, key, {})   # an empty measure is not kept
    assert not path.exists()
    keep_times(path, key, {"nb": {"test_add": 0.01}})
    assert kept_times(path, key) == {"nb": {"test_add": 0.01}}
    assert kept_times(path, solution_key([two], threads=1, sandbox=True)) == {}   # other solutions
    path.write_text('{"key": "' + key + '", "times": [1, 2')   # damaged
    assert kept_times(path, key) == {}
