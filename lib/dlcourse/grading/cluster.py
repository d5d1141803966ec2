"""Run: grading on a Dask cluster: each submission is one Dask task, graded on a worker exactly as here.

    dlcourse-grade --assignment ps_convolution --submissions export.zip --scheduler tcp://HOST:8786

The client (this machine) plans the batch as always (store, validate, scan: `plan.plan`), then
submits one task per student to the scheduler. The task (`grade_on_worker`) runs on a Dask worker
the same `Runner` the local batch uses with one slot: a forked-off grader in its own session, its
own kernel uid claimed on that host, bubblewrap, rlimits, a scratch tmpfs, a memory cgroup and the
wall-clock budget. It returns the Outcome and the worker's address; the client turns it into the
student's row (scores read back from the shared gradebook) and saves it to state.json at once.

Every host needs the same course folder at the same path (NFS), the same environment (this
package, bubblewrap, root for the uid switch and the cgroup) and a gradebook it can reach
(PostgreSQL; SQLite only when every worker is on this machine).

A worker that dies mid-task: Dask runs the task again on another worker (the scheduler's
`allowed-failures`); the dead worker's grader stops with it (`worker._die_with_parent`), and
nbgrader's autograde replaces the student's submission in the gradebook, so a student is never in
it twice. A task that keeps killing its workers ends as a non-final failure: the next run grades
that student again, as after a crash of a local batch.
"""
import secrets
import time
from dataclasses import replace
from pathlib import Path

from dlcourse.grading.outcome import Failure, Job, Outcome, Row
from dlcourse.grading.runner import Runner, time_solution
from dlcourse.grading.settings import Settings


def grade_on_worker(root: Path, assignment: str, student: str, settings: Settings, url: str, logs: Path) -> dict:
    """Dask task: grade one student in this worker's sandbox; {"outcome": Outcome, "worker": address}:
    the Outcome the worker wrote and the runner read back, with the job's notes (a retry's)."""
    from distributed import get_worker

    result = {}
    job = Job(student, Row(student=student, notes=[], flags=[]))

    def done(job, outcome):
        outcome.notes = list(job.row["notes"])
        result["outcome"] = outcome

    # no kernel template: it would be started for this one submission and pay the imports it saves
    one = replace(settings, workers=1, fork_kernels=False)
    Runner(root, assignment, one, url, logs, done, start_method=_start_method()).run([job], [])
    return {"outcome": result["outcome"], "worker": get_worker().address}


def time_on_worker(root: Path, assignment: str, settings: Settings, url: str, logs: Path) -> dict:
    """Dask task: the model solution's seconds per cell (`runner.time_solution`), timed on a worker
    as the submissions will be graded there (a fresh kernel)."""
    return time_solution(root, assignment, replace(settings, fork_kernels=False), url, logs,
                         start_method=_start_method())


def _start_method() -> str:
    """How a Dask worker starts its grading process: spawn, not fork (a Dask worker runs threads:
    its event loop, the task's executor); a new Python through subprocess where the task runs in
    a daemonic process (a stock `dask worker`, with its nanny), as multiprocessing starts no
    children there."""
    import multiprocessing
    return "subprocess" if multiprocessing.current_process().daemon else "spawn"


def run_on_cluster(address: str, root: Path, assignment: str, settings: Settings, url: str, logs: Path,
                   todo: list[Job], finish, stop) -> None:
    """Grade `todo` on the Dask cluster at `address`; finish(job, outcome, worker) for each as it completes."""
    from distributed import Client, as_completed

    batch = secrets.token_hex(4)  # a task key of its own per run: a rerun never reuses an old result
    with Client(address, timeout=30) as client:
        if todo and not settings.solution_seconds:   # each cell's limit from the model solution's time on a worker
            settings = replace(settings, solution_seconds=client.submit(
                time_on_worker, root, assignment, settings, url, logs, key=f"dlcourse-time-{assignment}-{batch}",
                pure=False).result())
        futures = {client.submit(grade_on_worker, root, assignment, job.student, settings, url, logs,
                                 key=f"dlcourse-grade-{assignment}-{job.student}-{batch}", pure=False): job
                   for job in todo}
        started = time.monotonic()
        try:
            for future in as_completed(futures):
                if stop:
                    raise KeyboardInterrupt(f"stopped by signal {stop[0]}")
                job = futures[future]
                try:
                    result = future.result()
                    finish(job, result["outcome"], result["worker"])
                except Exception as e:  # noqa: BLE001 -- KilledWorker, a lost scheduler, a task that raised
                    reason = Failure.GRADER_ERROR.reason(details=f"{type(e).__name__}: {e}"[:300])
                    finish(job, Outcome.failed(Failure.GRADER_ERROR, reason,
                                               seconds=round(time.monotonic() - started, 2)), "")
        finally:
            client.cancel(list(futures))
