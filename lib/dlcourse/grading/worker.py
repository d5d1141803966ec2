"""Run: the grading worker: one student's autograde (and feedback) in a process of its own.

    worker(root, assignment, student, kernel_uid, settings, work, db_url, result_path, log_path, ...)

Started by `runner.Runner` (forked, spawned, or a new Python through worker_process.py); it makes
its own session and scratch tmpfs, points its output at the student's log, builds nbgrader's
configuration with the sandboxed Execute (`autograde_config`), runs nbgrader's autograde and
writes its Outcome (`autograde_outcome`) to result_path (`Outcome.write`), where the runner reads
it back (`Outcome.read`).
"""
import io
import json
import os
import resource
import secrets
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from dlcourse.grading.cage import kernel_reachable, private_tmpfs
from dlcourse.grading.feedback import FeedbackExporter
from dlcourse.grading.imports import notebook_imports
from dlcourse.grading.nbgrader_patches import check_schemas_once, one_engine_per_database, open_gradebooks_once
from dlcourse.grading.outcome import Failure, Outcome, classify
from dlcourse.grading.sanitize import SanitizeStudentOutput
from dlcourse.grading.sandbox import SandboxedExecute
from dlcourse.grading.settings import Settings, course_config


def autograde_preprocessors(execute) -> list:
    """nbgrader's own autograde preprocessors with its Execute swapped for `execute`, then
    SanitizeStudentOutput: the stored autograded notebook, which formgrader renders on the
    instructor's origin, holds no student HTML that could run there."""
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute
    default = list(Autograde.class_traits()["autograde_preprocessors"].default())
    if Execute not in default:
        raise RuntimeError(f"nbgrader's autograde preprocessors have no Execute to replace: {default}")
    return [execute if p is Execute else p for p in default] + [SanitizeStudentOutput]


def _log_to(log_path: Path) -> None:
    """Send this process's output (fds 1 and 2, and Python's streams) to log_path."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # the parent's sys.stdout may not be fd 1 (pytest's capture, a notebook): write to the log itself
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), line_buffering=True)


def _kernel_folders(work: Path, kernel_uid: int, settings: Settings, quota: bool) -> tuple[Path, Path, int]:
    """(scratch, connection folder, uid) of the kernel: the folders made and given to its uid."""
    scratch, conn = work / "box" / "scratch", work / "box" / "conn"
    if not quota and not settings.sandbox:
        print("[WARNING] no scratch quota: the kernel writes to the host's disk", flush=True)
    for d in (scratch, conn):
        d.mkdir(parents=True, exist_ok=True)
    uid = kernel_uid if kernel_uid >= 0 and (settings.sandbox or kernel_reachable()) else -1
    if uid >= 0:
        for d in (scratch, conn):
            os.chown(d, uid, uid)
            os.chmod(d, 0o700)
    else:
        print("[WARNING] the kernel runs as the grader's own user", flush=True)
    return scratch, conn, uid


def _autograde_config(root: Path, db_url: str, settings: Settings, work: Path, kernel_uid: int, quota: bool,
                      cgroup_procs: str, template_socket: str = "", bytecode_dir: str = "", preload: list | None = None):
    """nbgrader's configuration for one student: the course's, with the sandboxed Execute."""
    scratch, conn, uid = _kernel_folders(work, kernel_uid, settings, quota)
    cfg = course_config(root, None)
    cfg.CourseDirectory.db_url = db_url
    cfg.Execute.timeout = settings.cell_timeout
    # once the last cell and the final check have run, nothing in the kernel is wanted: it is
    # killed with its sandbox at once, not asked to exit and polled every 0.1 s (0.1-0.2 s a student)
    cfg.SandboxedExecute.shutdown_kernel = "immediate"
    cfg.CellTimeLimits.solution_seconds = settings.solution_seconds   # each cell's own limit (timelimits.py)
    cfg.CellTimeLimits.solution_seconds_file = settings.solution_seconds_file
    if settings.timeout_factor is not None:
        cfg.CellTimeLimits.timeout_factor = settings.timeout_factor
    if settings.timeout_floor is not None:
        cfg.CellTimeLimits.timeout_floor = settings.timeout_floor
    cfg.Autograde.autograde_preprocessors = autograde_preprocessors(SandboxedExecute)
    cfg.SandboxedExecute.nonce = secrets.token_hex(16)
    cfg.SandboxedExecute.report_path = str(work / "integrity.json")
    cfg.SandboxedExecute.stages_path = str(work / "stages.json")
    cfg.SandboxedExecute.preload = list(preload or [])
    km = cfg.SandboxedKernelManager
    km.sandbox, km.scratch, km.connection_dir, km.uid = settings.sandbox, str(scratch), str(conn), uid
    km.limits = settings.limits.rlimits()
    km.threads = settings.limits.threads
    km.scratch_tmpfs_mb = 0 if quota else settings.limits.scratch_mb
    km.cgroup_procs = cgroup_procs
    km.template_socket = template_socket
    cfg.GenerateFeedback.exporter_class = FeedbackExporter
    cfg.FeedbackExporter.bytecode_dir = bytecode_dir
    return cfg


def worker(root: Path, assignment: str, student: str, kernel_uid: int, settings: Settings, work: Path,
            db_url: str, result_path: Path, log_path: Path, cgroup_procs: str = "", template_socket: str = "",
            bytecode_dir: str = "", solution: bool = False) -> None:
    """Child process: autograde one student and write its Outcome to result_path (`Outcome.write`).
    Everything the kernel may write (scratch and the connection folder) lies on a tmpfs of
    limits.scratch_mb seen by this worker alone (as root), or scratch is a tmpfs of that size
    inside the sandbox (otherwise); cgroup_procs: the kernel's memory cgroup ('' for none);
    template_socket: the batch's kernel template ('' for none: a fresh kernel); bytecode_dir: where
    the batch's workers keep the feedback's compiled templates ('' for nowhere); solution: run the
    model solution instead and time its cells (`_time_cells`), nothing graded."""
    os.setsid()
    _die_with_parent()
    quota = private_tmpfs(work / "box", settings.limits.scratch_mb)
    _log_to(log_path)
    outcome = Outcome.failed(Failure.WORKER_DIED, "the grading worker stopped unexpectedly")
    try:
        one_engine_per_database()
        check_schemas_once()
        open_gradebooks_once()
        preload = notebook_imports(sorted((root / "solutions" / assignment).glob("*.ipynb")))
        cfg = _autograde_config(root, db_url, settings, work, kernel_uid, quota, cgroup_procs, template_socket,
                                bytecode_dir, preload)
        os.environ["NBGRADER_EXECUTION"] = "autograde"
        os.chdir(root)
        if solution:
            outcome = Outcome(True, solution_seconds=_time_cells(root, assignment, cfg, work))
        else:
            outcome = _autograde(assignment, student, settings, cfg, work)
    except BaseException:  # noqa: BLE001 -- the worker must always leave an outcome behind
        details = traceback.format_exc().strip().splitlines()[-1]
        outcome = Outcome.failed(Failure.GRADER_ERROR, Failure.GRADER_ERROR.reason(details=details))
        traceback.print_exc()
    outcome.write(result_path)
    os._exit(0)


def _autograde(assignment: str, student: str, settings: Settings, cfg, work: Path) -> Outcome:
    """nbgrader's autograde (and feedback) of one student with `cfg`: the worker's Outcome."""
    from nbgrader.apps import NbGraderAPI
    api = NbGraderAPI(config=cfg)
    begin = time.monotonic()
    result = api.autograde(assignment, student, force=True, create=True)
    autograded = time.monotonic()
    print(result.get("log", ""), result.get("error", ""), sep="\n", flush=True)
    feedback_error = ""
    if result["success"] and settings.feedback:
        fb = api.generate_feedback(assignment, student, force=True)
        if not fb["success"]:
            feedback_error = (fb.get("error") or "")[-500:]
    stages = _stages(work / "stages.json", autograded - begin, time.monotonic() - autograded)
    return autograde_outcome(result, work, stages, feedback_error)


def autograde_outcome(result: dict, work: Path, stages: dict, feedback_error: str = "") -> Outcome:
    """The Outcome of nbgrader's autograde `result` (its dict: success, error, log) in `work`: on
    success the kernel's integrity report (work/integrity.json), where the time went (`stages`)
    and the feedback's error; otherwise the Failure nbgrader's text shows (`classify`) and whether
    the notebook's first cell started (work/stages.json). A failure's row keeps no stages."""
    if result["success"]:
        report = work / "integrity.json"
        integrity = json.loads(report.read_text()) if report.exists() else ["no integrity report"]
        return Outcome(True, integrity=integrity, stages=stages, feedback_error=feedback_error)
    failure, reason = classify(result)
    return Outcome.failed(failure, reason, student_code=bool(read_json(work / "stages.json").get("student_cells", 1)))


def _time_cells(root: Path, assignment: str, cfg, work: Path) -> dict:
    """{notebook: {cell: seconds}}: the model solution (solutions/<assignment>/, hidden tests
    included, as autograde restores them) run in a kernel made as a student's is, with the
    course's limit in every cell. What CellTimeLimits derives each cell's limit from."""
    import nbformat

    times = {}
    cfg.SandboxedExecute.cell_times_path = str(work / "cell_times.json")
    cfg.CellTimeLimits.solution_seconds, cfg.CellTimeLimits.solution_seconds_file = {}, ""
    for path in sorted((root / "solutions" / assignment).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        SandboxedExecute(config=cfg).preprocess(nb, {"unique_key": path.stem, "metadata": {"path": str(work)}})
        times[path.stem] = {k: round(v, 3) for k, v in read_json(work / "cell_times.json").items()}
        print(f"[grader] the model solution's seconds per cell in {path.name}: {times[path.stem]}", flush=True)
    return times


def _die_with_parent() -> None:
    """Stop this worker (and, through bubblewrap's --die-with-parent, its kernel) as soon as the
    process that started it is gone: a Dask worker killed mid-batch leaves no grader behind that
    could still write this student's grades while the student is graded again elsewhere."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _stages(path: Path, autograde: float, feedback: float) -> dict:
    """Where one submission's time went (seconds) and the peak memory (MB) of the worker and of
    its kernel: kernel start, imports and execution as the kernel's Execute measured them,
    nbgrader's bookkeeping = the rest of the autograde (copying, the gradebook, nbconvert's other
    passes), feedback = generate_feedback."""
    stages = read_json(path)
    stages.pop("student_cells", None)
    kernel_mb = stages.pop("kernel_mb", None)   # a kernel forked from the template measured itself
    stages["bookkeeping"] = autograde - sum(stages.values())
    stages["feedback"] = feedback
    stages["worker_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stages["kernel_mb"] = kernel_mb if kernel_mb is not None else \
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {k: round(v, 3) for k, v in stages.items()}
