"""The batch grader's bookkeeping: refusing to run unsandboxed, Ctrl-C mid-batch, re-runs.

Uses the tiny assignment (tests/fixtures/tiny_assignment.py) and a folder of submissions.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK, POINTS, write_source
from nbgrader_harness import Course, solved

from dlcourse.grading import cli

REPO = Path(__file__).resolve().parents[1]
FULL = sum(POINTS.values())


def make(tmp_path) -> Course:
    root = tmp_path / "course"
    root.mkdir()
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    write_source(root)
    course = Course(root)
    course.nbgrader("generate_assignment", ASSIGNMENT, "--force", check=True)
    return course


def grade_cmd(course, folder, *extra):
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    return [sys.executable, "-m", "dlcourse.grading", "--assignment", ASSIGNMENT, "--submissions", str(folder),
            "--course-dir", str(course.root), "--cell-timeout", "5", "--budget", "30", "--quiet", *extra], env


def test_refuses_to_grade_without_a_sandbox(tmp_path, monkeypatch, capsys):
    root = tmp_path / "course"
    root.mkdir()
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    monkeypatch.setenv("PATH", str(tmp_path / "no-bwrap-here"))
    code = cli.main(["--assignment", ASSIGNMENT, "--submissions", str(tmp_path), "--course-dir", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and "bubblewrap" in err and "--unsandboxed" in err, err
    assert not (root / "submitted").exists(), "nothing may be graded when the sandbox cannot start"


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_interrupted_batch_resumes_and_reruns_only_changes(tmp_path):
    course = make(tmp_path)
    folder = tmp_path / "subs"
    students = ["s1", "s2", "s3", "s4"]
    for s in students:
        (folder / s).mkdir(parents=True)
        nbformat.write(solved(course, ASSIGNMENT, NOTEBOOK), folder / s / f"{NOTEBOOK}.ipynb")
    state = course.path("grades", ASSIGNMENT, "state.json")

    cmd, env = grade_cmd(course, folder, "--workers", "1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (state.exists() and json.loads(state.read_text())):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # Ctrl-C after the first student
    proc.communicate(timeout=60)
    done_before = set(json.loads(state.read_text()))
    assert 1 <= len(done_before) < len(students), f"the interrupt came too late to test anything: {done_before}"

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    rows = json.loads(state.read_text())
    assert {s: rows[s]["score"] for s in students} == dict.fromkeys(students, FULL)
    logs = {s: course.path("grades", ASSIGNMENT, "logs", f"{s}.log").stat().st_mtime_ns for s in students}
    scores = course.scores(ASSIGNMENT, NOTEBOOK)
    assert all(scores[s]["graded"] for s in students), "the gradebook must hold every student after the re-run"

    nbformat.write(solved(course, ASSIGNMENT, NOTEBOOK, {"add": "def add(a, b):\n    return a - b"}),
                   folder / "s2" / f"{NOTEBOOK}.ipynb")
    third = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr[-2000:]
    after = {s: course.path("grades", ASSIGNMENT, "logs", f"{s}.log").stat().st_mtime_ns for s in students}
    assert [s for s in students if after[s] != logs[s]] == ["s2"], "only the changed submission is graded again"
    assert json.loads(state.read_text())["s2"]["score"] == FULL - POINTS["test_add"]
