"""The batch grader on a Dask cluster: the same rows as a local run, and nothing lost when a worker dies.

A real `dask scheduler` and two `dask worker` processes, started the standard way (with their
nannies, so each task runs in a daemonic process; the project's environment, 127.0.0.1, free
ports), are started by a module fixture and killed in its teardown whatever happens; one
LocalCluster test runs the workers as threads of this process, another as processes with nannies. Each grades the same mixed class of the tiny
assignment (honest, wrong, hostile, broken) into its own copy of the course, and every row of
grades.csv / state.json must equal the local run's, apart from the worker that graded it.
"""
import csv
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK, POINTS
from nbgrader_harness import Course, solved, tiny_course
from system_packages import ensure_debian_packages

from dlcourse.grading.batch import RETRY_NOTE, Settings, grade_batch
from dlcourse.grading.sandbox import Limits

distributed = pytest.importorskip("distributed", reason="needs distributed (the dev extra)")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SUBMISSIONS = {  # student: solution overrides (None: the model answer); "broken": not a notebook at all
    "honest": None,
    "wrong": {"add": "def add(a, b):\n    return a - b"},
    "hostile": {"add": "class Always:\n    def __eq__(self, other):\n        return True\n"
                       "def add(a, b):\n    return Always()\n"},
    "broken": "broken",
    "late": {"mean": "def mean(xs):\n    return 0"},
}
VOLATILE = ("seconds", "stages", "worker")  # what may differ between two runs of the same class


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_class(course: Course, folder: Path) -> Path:
    """The class's submissions, written once: every run grades the very same files."""
    for student, overrides in SUBMISSIONS.items():
        (folder / student).mkdir(parents=True)
        target = folder / student / f"{NOTEBOOK}.ipynb"
        if overrides == "broken":
            target.write_text('{"cells": [ this is not JSON')
        else:
            nbformat.write(solved(course, ASSIGNMENT, NOTEBOOK, overrides), target)
    return folder


def grade(root: Path, folder: Path, scheduler=None) -> dict:
    # time limits far above what the class needs (no submission here loops): on a machine busy
    # with the rest of the suite, a fresh kernel's first cell (torch's import) may take seconds
    settings = Settings(cell_timeout=30, budget=120, workers=2, feedback=True, scheduler=scheduler,
                        limits=Limits(memory_mb=1536, processes=40, cpu_seconds=60))
    rows = grade_batch(root, ASSIGNMENT, folder, settings, progress=False)
    return {r["student"]: r for r in rows}


def csv_rows(root: Path) -> dict:
    with open(root / "grades" / ASSIGNMENT / "grades.csv") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def stable(rows: dict) -> dict:
    """The rows without what may differ between two runs: times, the worker, and the note that a
    kernel died once and the submission was graded again (scores, flags and status must still agree)."""
    return {s: {k: ([n for n in v if n != RETRY_NOTE] if k == "notes" else v) for k, v in r.items() if k not in VOLATILE}
            for s, r in rows.items()}


def assert_same_rows(rows: dict, local: dict) -> None:
    """Every stable() row equal to the local run's; else which students differ, and in what."""
    ours, theirs = stable(rows), stable(local)
    differ = {s: {k: (ours.get(s, {}).get(k), theirs.get(s, {}).get(k))
                  for k in set(ours.get(s, {})) | set(theirs.get(s, {})) if ours.get(s, {}).get(k) != theirs.get(s, {}).get(k)}
              for s in set(ours) | set(theirs) if ours.get(s) != theirs.get(s)}
    assert not differ, f"rows that differ from the local run's (this run, local run): {differ}"


def gradebook_students(root: Path) -> list[str]:
    """Students with a submission of the assignment in the course's gradebook (each must appear once)."""
    import sqlite3
    with sqlite3.connect(root / "gradebook.db") as db:
        return sorted(s for (s,) in db.execute(
            "SELECT student.id FROM submitted_assignment JOIN student ON student.id = submitted_assignment.student_id"
            " JOIN assignment ON assignment.id = submitted_assignment.assignment_id WHERE assignment.name = ?",
            (ASSIGNMENT,)))


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The class graded here, without Dask: the rows every cluster run must reproduce."""
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    course = tiny_course(tmp_path_factory.mktemp("local") / "course")
    root, folder = course.root, write_class(course, tmp_path_factory.mktemp("class"))
    rows = grade(root, folder)
    full = sum(POINTS.values())
    assert {s: rows[s].get("score") for s in ("honest", "wrong", "late")} == \
        {"honest": full, "wrong": full - POINTS["test_add"], "late": full - POINTS["test_mean"]}, rows
    assert rows["hostile"]["flags"] and rows["broken"]["status"] == "failed", rows
    assert {r["worker"] for r in csv_rows(root).values() if r["status"] != "failed"} == {"local"}
    return folder, rows


@pytest.fixture(scope="module")
def cluster():
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1; yields (address, {worker address: pid})."""
    env = dict(os.environ, PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = []
    try:
        procs.append(subprocess.Popen([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
        for _ in range(2):
            procs.append(subprocess.Popen([BIN / "dask", "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                           "--nworkers", "1", "--no-dashboard"], env=env,   # stock: with a nanny
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        with distributed.Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
            pids = client.run(os.getpid)  # {worker address: its process id}
        yield address, pids
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_scheduler_and_two_workers_grade_every_row_as_a_local_run(tmp_path, local_run, cluster):
    address, pids = cluster
    folder, local = local_run
    root = tiny_course(tmp_path / "course").root
    rows = grade(root, folder, scheduler=address)
    assert_same_rows(rows, local)
    table = csv_rows(root)
    assert sorted(table) == sorted(SUBMISSIONS)
    ran = {s: r["worker"] for s, r in table.items() if s != "broken"}
    assert set(ran.values()) <= set(pids), ran  # each graded on one of the cluster's workers, named in the CSV
    assert table["broken"]["worker"] == "", "a notebook rejected before grading ran nowhere"
    assert gradebook_students(root) == sorted(s for s in SUBMISSIONS if s != "broken")
    assert (root / "feedback" / "honest" / ASSIGNMENT / f"{NOTEBOOK}.html").exists()


def test_a_worker_killed_mid_batch_loses_nothing(tmp_path, local_run, cluster):
    address, pids = cluster
    folder, local = local_run
    root = tiny_course(tmp_path / "course").root
    result = {}
    thread = threading.Thread(target=lambda: result.update(rows=grade(root, folder, scheduler=address)))
    thread.start()
    victim, doomed = None, []
    with distributed.Client(address, timeout=30, set_as_default=False) as client:
        deadline = time.monotonic() + 40
        while victim is None and time.monotonic() < deadline:  # kill a worker as soon as a student starts on it
            for worker, keys in client.processing().items():
                started = [k for k in keys if (root / "grades" / ASSIGNMENT / "logs" / f"{k.split('-')[-2]}.log").exists()]
                if started:
                    victim, doomed = worker, [k.split("-")[-2] for k in keys]
                    os.kill(pids[worker], signal.SIGKILL)
                    break
            time.sleep(0.05)
    thread.join(90)
    assert victim is not None, "no submission started on a worker"
    assert not thread.is_alive() and "rows" in result
    rows = result["rows"]
    assert_same_rows(rows, local)  # nothing lost, nothing graded differently
    table = csv_rows(root)
    assert sorted(table) == sorted(SUBMISSIONS)
    for student in doomed:  # those the dead worker held were graded by the other one
        assert table[student]["worker"] not in ("", victim), (student, table[student])
    assert gradebook_students(root) == sorted(s for s in SUBMISSIONS if s != "broken")  # each student once


def test_local_cluster_grades_every_row_as_a_local_run(tmp_path, local_run):
    folder, local = local_run
    root = tiny_course(tmp_path / "course").root
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, scheduler_port=0,
                                  dashboard_address=":0") as lc:  # workers: threads here (inproc://)
        rows = grade(root, folder, scheduler=lc.scheduler_address)
        workers = set(lc.scheduler_info["workers"])
    assert_same_rows(rows, local)
    assert {r["worker"] for s, r in rows.items() if s != "broken"} <= workers


def test_local_cluster_with_nannies_grades_every_row_as_a_local_run(tmp_path, local_run):
    """Workers as Dask starts them by default (processes=True: a nanny each, the task in a daemonic
    process, where multiprocessing may not start the grading process): graded through a subprocess."""
    folder, local = local_run
    root = tiny_course(tmp_path / "course").root
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, scheduler_port=0,
                                  dashboard_address=":0") as lc:
        with distributed.Client(lc, set_as_default=False) as client:
            assert all(client.run(lambda: __import__("multiprocessing").current_process().daemon).values())
        rows = grade(root, folder, scheduler=lc.scheduler_address)
        workers = set(lc.scheduler_info["workers"])
    assert_same_rows(rows, local)
    assert {r["worker"] for s, r in rows.items() if s != "broken"} <= workers
