"""One student's result has one type from the worker to the CSV row: the Outcome.

The worker builds an Outcome from nbgrader's result and writes it (`Outcome.write`); the runner
reads it back (`Outcome.read`) unchanged; the record step turns it into the Row with `fill_row`,
reading the student's scores once. No kernel runs here.
"""
import ast
import json
import multiprocessing
from pathlib import Path
from types import SimpleNamespace

import pytest

from dlcourse.grading import worker as worker_module
from dlcourse.grading.outcome import KERNEL_DIED, RETRY_NOTE, Failure, Job, Outcome, Row
from dlcourse.grading.record import Finisher, fill_row, final_rows
from dlcourse.grading.settings import Settings
from dlcourse.grading.worker import autograde_outcome

WORKER = Path(worker_module.__file__)

STAGES = {"kernel_start": 0.4, "imports": 1.2, "execution": 3.1, "bookkeeping": 0.2, "feedback": 0.5,
          "worker_mb": 180.0, "kernel_mb": 420.5}


def successes():
    return [
        Outcome(True),
        Outcome(True, integrity=["touched the grader's hooks"], stages=STAGES, feedback_error="TemplateNotFound"),
        # the model solution's cell times, what each cell's limit is derived from
        Outcome(True, solution_seconds={"convolution": {"corr1d": 0.123, "conv2d": 2.5}, "pool": {}}),
    ]


def failures():
    details = {"AUTOGRADE": "NameError: name 'x' is not defined", "GRADER_ERROR": "RuntimeError: no database",
               "WORKER_DIED": "-9", "BUDGET": "600", "MEMORY_CAP": "2048"}
    made = []
    for failure in Failure:
        word = {"AUTOGRADE": "details", "GRADER_ERROR": "details", "WORKER_DIED": "exitcode",
                "BUDGET": "budget", "MEMORY_CAP": "mb"}.get(failure.name)
        reason = failure.reason(**{word: details[failure.name]}) if word else failure.reason()
        made.append(Outcome.failed(failure, reason, student_code=failure is not Failure.KERNEL_DIED))
    return made


@pytest.mark.parametrize("outcome", successes() + failures(),
                         ids=["success", "success_with_stages", "model_solution"] + [f.name for f in Failure])
def test_an_outcome_comes_back_from_its_file_unchanged(tmp_path, outcome):
    path = tmp_path / "result.json"
    outcome.write(path)
    assert Outcome.read(path, exitcode=0) == outcome
    assert not path.with_suffix(".tmp").exists(), "written through a .tmp file, then moved into place"
    data = json.loads(path.read_text())
    assert data["failure"] == (outcome.failure.name if outcome.failure else None), "the Failure by its name"


def test_every_failure_kind_is_final_as_its_failure_says():
    for outcome in failures():
        assert outcome.success is False and outcome.final is outcome.failure.final
        assert outcome.reason
    assert Outcome.failed(Failure.CELL_TIMEOUT).reason == Failure.CELL_TIMEOUT.value


@pytest.mark.parametrize("text", [None, "", "{not json", "[1, 2]", '{"success": false, "failure": "NO_SUCH"}',
                                  '{"reason": "no success field"}'])
def test_a_missing_or_damaged_result_is_a_dead_worker(tmp_path, text):
    path = tmp_path / "result.json"
    if text is not None:
        path.write_text(text)
    outcome = Outcome.read(path, exitcode=-9)
    assert outcome == Outcome(False, Failure.WORKER_DIED.reason(exitcode=-9), final=False,
                              failure=Failure.WORKER_DIED)
    assert outcome.reason == "the grading worker died (exit code -9)"


def test_the_outcome_of_a_graded_notebook(tmp_path):
    (tmp_path / "integrity.json").write_text(json.dumps(["flag"]))
    outcome = autograde_outcome({"success": True, "log": "", "error": None}, tmp_path, STAGES, "late error")
    assert outcome == Outcome(True, integrity=["flag"], stages=STAGES, feedback_error="late error")
    (tmp_path / "integrity.json").unlink()
    assert autograde_outcome({"success": True}, tmp_path, {}).integrity == ["no integrity report"]


def test_the_outcome_of_a_failed_autograde(tmp_path):
    dead = {"success": False, "error": "DeadKernelError: Kernel died", "log": ""}
    (tmp_path / "stages.json").write_text(json.dumps({"student_cells": 0, "kernel_start": 0.3}))
    outcome = autograde_outcome(dead, tmp_path, STAGES)
    assert outcome == Outcome(False, KERNEL_DIED, failure=Failure.KERNEL_DIED, student_code=False)
    assert outcome.stages == {} and outcome.retry_note == RETRY_NOTE, "a failure's row keeps no stages"
    (tmp_path / "stages.json").unlink()
    error = {"success": False, "error": "", "log": "[ERROR] There was an error processing assignment"}
    outcome = autograde_outcome(error, tmp_path, STAGES)
    assert outcome == Outcome.failed(Failure.AUTOGRADE, "There was an error processing assignment")
    assert outcome.student_code is True


def test_the_worker_builds_no_result_dict_by_hand():
    tree = ast.parse(WORKER.read_text())
    keys = {k.value for node in ast.walk(tree) if isinstance(node, ast.Dict)
            for k in node.keys if isinstance(k, ast.Constant)}
    assert not keys & {"success", "failure", "reason", "integrity", "solution_seconds", "student_code"}
    assert "json.dumps" not in WORKER.read_text(), "the Outcome writes itself (Outcome.write)"


def _crashing_setup():
    raise RuntimeError("no database here")


def test_the_worker_writes_its_outcome_through_outcome_write(tmp_path, monkeypatch):
    """The worker's own code path, up to the point where it needs a course: the grader's error
    comes back from result.json as the Outcome the worker made."""
    monkeypatch.setattr(worker_module, "one_engine_per_database", _crashing_setup)
    monkeypatch.setattr(worker_module, "private_tmpfs", lambda path, mb: False)
    result, log = tmp_path / "result.json", tmp_path / "worker.log"
    process = multiprocessing.get_context("fork").Process(target=worker_module.worker, args=(
        tmp_path, "ps", "alice", -1, Settings(), tmp_path / "work", "sqlite://", result, log))
    process.start()
    process.join(60)
    assert process.exitcode == 0, log.read_text() if log.exists() else "no log"
    outcome = Outcome.read(result, process.exitcode)
    assert outcome == Outcome.failed(Failure.GRADER_ERROR, "grader error: RuntimeError: no database here")
    assert outcome.final is False


class Gradebook:
    """As nbgrader's Gradebook answers `scores`, counting the reads."""

    def __init__(self):
        self.reads = []

    def find_submission(self, assignment, student):
        self.reads.append(student)
        grade = SimpleNamespace(name="test_a", score=2.0, auto_score=2.0, manual_score=None)
        essay = SimpleNamespace(name="essay", score=0.0, auto_score=None, manual_score=None)
        return SimpleNamespace(notebooks=[SimpleNamespace(grades=[grade, essay])], score=2.0, max_score=5.0,
                               late_submission_penalty=0.0, total_seconds_late=30 if student == "bob" else 0)

    def close(self):
        pass


def job(student, notes=()):
    return Job(student, Row(student=student, notes=list(notes), flags=[]))


def test_each_students_scores_are_read_once_per_run(tmp_path):
    gb, saved = Gradebook(), {}
    finish = Finisher(tmp_path, "ps", gb, saved.__setitem__, SimpleNamespace(update=lambda n: None))
    finish(job("alice"), Outcome(True, integrity=["hook"], stages=STAGES, seconds=7.5))
    finish(job("bob"), Outcome(True, seconds=3.0), "tcp://10.0.0.2:4000")
    finish(job("carl"), Outcome.failed(Failure.BUDGET, Failure.BUDGET.reason(budget=600), seconds=600.0))
    assert gb.reads == ["alice", "bob"]
    assert saved["alice"] == {"student": "alice", "status": "graded", "score": 2.0, "max_score": 5.0,
                              "parts": {"test_a": 2.0, "essay": 0.0}, "pending": ["essay"], "notes": [],
                              "flags": ["hook"], "seconds": 7.5, "stages": STAGES, "worker": "local"}
    assert saved["bob"]["status"] == "late" and saved["bob"]["worker"] == "tcp://10.0.0.2:4000"
    assert "late" not in saved["bob"]
    assert saved["carl"] == {"student": "carl", "status": "failed", "reason": Failure.BUDGET.reason(budget=600),
                             "final": True, "notes": [], "flags": [], "seconds": 600.0, "worker": "local"}
    # an earlier run's graded student is read again for grades.csv (manual grades given since count)
    state = dict(saved, dora={"status": "graded", "score": 1.0, "notes": [], "flags": []})
    rows = final_rows(state, {"alice", "bob", "carl", "dora"}, finish, gb, "ps")
    assert gb.reads == ["alice", "bob", "dora"], "final_rows reads only the students this run did not score"
    assert [r["student"] for r in rows] == ["alice", "bob", "carl", "dora"]
    assert rows[3]["score"] == 2.0 and "late" not in rows[3]


def test_fill_row_keeps_notes_once():
    row = Row(student="eve", notes=[RETRY_NOTE], flags=["old"])
    outcome = Outcome(True, integrity=["new"], notes=[RETRY_NOTE, "from the worker"], seconds=1.0)
    graded = {"score": 1.0, "max_score": 1.0, "parts": {}, "pending": [], "late": False}
    assert fill_row(row, outcome, graded, ["q1: hit the time limit"]) is row
    assert row["notes"] == [RETRY_NOTE, "q1: hit the time limit", "from the worker"]
    assert row["flags"] == ["new", "old"] and "stages" not in row
