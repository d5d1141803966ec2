"""Grade a whole class: submissions in, grades.csv, feedback and a report out.

    grade_batch(course_root, "ps_convolution", "submissions.zip", Settings(workers=2))

plan    (`_plan`) collect the zip/folder; keep every file unmodified in submitted/<student>/<assignment>/;
        validate each notebook before it runs (JSON, format, schema, grade ids, name, kernelspec)
        and scan the student's code for grading hooks; a Job for each student to grade
run     (`Runner`) autograde each Job in a forked worker (own session, own uid, own sandboxed
        kernel with rlimits, a scratch tmpfs and a memory cgroup); the main process stops a worker
        that overruns its wall-clock budget and a kernel whose processes hit the memory cap; every
        slot is given back through `Runner._release`
finish  (`_Finisher`) scores or a Failure's reason into the student's row; feedback (hidden
        tests stay hidden) was written by the worker; grades.csv and the report at the end

The row of each student is appended to state.log as soon as it is known (state.py; compacted
into state.json when a batch loads and ends), so a crash or Ctrl-C loses nothing: the next run
skips every student whose files hash the same and whose outcome is final, and grades the rest.
"""
import enum
import gc
import io
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TypedDict

from dlcourse.grading import submissions as subs
from dlcourse.grading import timelimits
from dlcourse.grading.integrity import static_scan
from dlcourse.grading.cgroups import MemoryCap
from dlcourse.grading.feedback import FeedbackExporter, remember_highlights
from dlcourse.grading.kernel_template import notebook_imports
from dlcourse.grading.sandbox import FIRST_UID, Limits, check_bwrap, private_tmpfs
from dlcourse.grading.state import StateLog


# the note on a row whose kernel died once and which was graded again
RETRY_NOTE = "the kernel died on the first try; graded a second time"


def default_cell_timeout() -> int:
    """DLCOURSE_CELL_TIMEOUT (what nbgrader_config.py uses for `nbgrader autograde`), else 300 s."""
    return int(os.environ.get("DLCOURSE_CELL_TIMEOUT", "300"))


def default_workers() -> int:
    """One grading worker per core and one more (a worker waits for its kernel and for the
    gradebook part of the time: with one per core a core would idle then), but no more than one
    per 2 GB of memory (a kernel of a course notebook uses a few hundred MB; torch's pages are
    shared with the kernel template)."""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        pages = 0
    by_memory = pages // 2**31 if pages else 2
    return max(1, min((os.cpu_count() or 1) + 1, by_memory))


@dataclass
class Settings:
    """How a batch is graded; the CLI's defaults are these (one place for every default)."""
    cell_timeout: int = field(default_factory=default_cell_timeout)
    budget: int = 1800          # wall-clock seconds for one whole submission
    workers: int = field(default_factory=default_workers)
    sandbox: bool = True
    limits: Limits = field(default_factory=Limits)
    db_url: str | None = None   # default: nbgrader_config.py's (sqlite gradebook.db)
    duedate: str | None = None
    feedback: bool = True
    output: Path | None = None  # default: <course>/grades/<assignment>
    scheduler: str | None = None  # a Dask scheduler (tcp://HOST:8786): grade on its workers (None: here)
    fork_kernels: bool = True   # fork each kernel from a pre-imported template (kernel_template.py; root + sandbox)
    timeout_factor: float | None = None   # a cell's limit: this many times the model solution's time in it
    timeout_floor: float | None = None    # ... but at least this many seconds (None: CellTimeLimits' defaults)
    solution_seconds: dict = field(default_factory=dict)   # {notebook: {cell: s}}: measured by the batch (`time_solution`)
    solution_seconds_file: str = ""   # or where they will appear while the batch runs (`_handing_off`)


def _config(root: Path, db_url: str | None):
    from traitlets.config.loader import PyFileConfigLoader
    cfg = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    if db_url:
        cfg.CourseDirectory.db_url = db_url
    if str(cfg.CourseDirectory.db_url).startswith("sqlite") and "timeout=" not in str(cfg.CourseDirectory.db_url):
        cfg.CourseDirectory.db_url = str(cfg.CourseDirectory.db_url) + "?timeout=60"  # parallel writers wait
    return cfg


def _prepare(root: Path, assignment: str, settings: Settings, students: list[str]):
    """Assignment and students in the gradebook (serially, before any worker starts)."""
    from nbgrader.api import Gradebook, MissingEntry
    from nbgrader.apps import NbGraderAPI

    cfg = _config(root, settings.db_url)
    url = cfg.CourseDirectory.db_url
    with Gradebook(url, "dlcourse") as gb:
        try:
            gb.find_assignment(assignment)
            known = True
        except MissingEntry:
            known = False
    if not known:
        result = NbGraderAPI(config=cfg).generate_assignment(assignment, force=True)
        if not result["success"]:
            raise RuntimeError(f"cannot put {assignment} into the gradebook:\n{result.get('error', '')}")
    with Gradebook(url, "dlcourse") as gb:
        if settings.duedate:
            gb.update_or_create_assignment(assignment, duedate=settings.duedate)
        for s in students:
            gb.update_or_create_student(s)
        notebooks = [nb.name for nb in gb.find_assignment(assignment).notebooks]
    return cfg, url, notebooks


KERNEL_DIED = "the kernel died while running the notebook (os._exit, a crash, or the memory limit)"
MEMORY_CAP = ("stopped: the submission's processes together used more than the memory cap of {mb} MB "
              "(a memory cgroup); it was not graded")


class Failure(enum.Enum):
    """Why grading a student ended without grades. The value is the reason shown in grades.csv
    (some take details with str.format); the kind decides what the batch does next."""
    KERNEL_DIED = KERNEL_DIED                  # retried once: the machine may have been short of memory
    UNRESPONSIVE = "a cell ran past the time limit and ignored the interrupt; the kernel was stopped"
    CELL_TIMEOUT = "a cell ran past the time limit"
    AUTOGRADE = "{details}"                    # nbgrader's own error line
    GRADER_ERROR = "grader error: {details}"   # not final: the next run grades the student again
    WORKER_DIED = "the grading worker died (exit code {exitcode})"  # not final either
    BUDGET = "grading took longer than its budget of {budget} s; stopped"
    MEMORY_CAP = MEMORY_CAP

    def reason(self, **details) -> str:
        return self.value.format(**details) if details else self.value

    @property
    def final(self) -> bool:
        return self not in (Failure.GRADER_ERROR, Failure.WORKER_DIED)


# what makes a run with a forked kernel count for nothing: the student is graded again with a
# fresh kernel, whose result is the one a batch without the template gives (the forked run's log
# is kept beside the student's as <student>.forked.log). The kernel's trouble counts only before
# the notebook's first cell started (the fork failed to come up); from then on a dead, looping or
# deaf kernel is the student's own outcome, graded like any other, never a second attempt under
# other conditions. The grader's own trouble always counts.
FORK_TROUBLE = (Failure.KERNEL_DIED, Failure.UNRESPONSIVE, Failure.CELL_TIMEOUT, Failure.BUDGET)
GRADER_TROUBLE = (Failure.WORKER_DIED, Failure.GRADER_ERROR)


def fork_trouble(outcome: "Outcome") -> str:
    """Why a run with a forked kernel must be graded again with a fresh kernel ('' for: it must not)."""
    if outcome.success:
        return ""
    if outcome.failure in GRADER_TROUBLE or outcome.failure in FORK_TROUBLE and not outcome.student_code:
        return outcome.reason
    return ""


def _classify(result: dict) -> tuple[Failure, str]:
    """The kind of an autograde failure and its reason, from nbgrader's error text and log."""
    text = (result.get("error") or "") + (result.get("log") or "")
    if "Timeout waiting for IOPub" in text or "UnresponsiveKernelError" in text or "Kernel didn't respond" in text:
        return Failure.UNRESPONSIVE, Failure.UNRESPONSIVE.reason()
    if "DeadKernelError" in text or "Kernel died" in text or "kernel died" in text:
        return Failure.KERNEL_DIED, KERNEL_DIED
    if "CellTimeoutError" in text:
        return Failure.CELL_TIMEOUT, Failure.CELL_TIMEOUT.reason()
    for line in text.splitlines():
        if line.startswith("[ERROR]"):
            return Failure.AUTOGRADE, line[len("[ERROR] "):][:300]
    last = text.strip().splitlines()[-1][:300] if text.strip() else ""
    return Failure.AUTOGRADE, "autograding failed: " + last if last else "autograding failed"


def autograde_preprocessors(execute) -> list:
    """nbgrader's own autograde preprocessors with its Execute swapped for `execute`, then
    SanitizeStudentOutput: the stored autograded notebook, which formgrader renders on the
    instructor's origin, holds no student HTML that could run there."""
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute

    from dlcourse.grading.sanitize import SanitizeStudentOutput
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
    from dlcourse.grading.sandbox import SandboxedExecute
    scratch, conn, uid = _kernel_folders(work, kernel_uid, settings, quota)
    cfg = _config(root, None)
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


def _worker(root: Path, assignment: str, student: str, kernel_uid: int, settings: Settings, work: Path,
            db_url: str, result_path: Path, log_path: Path, cgroup_procs: str = "", template_socket: str = "",
            bytecode_dir: str = "", solution: bool = False) -> None:
    """Child process: autograde one student and write the outcome to result_path as JSON.
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
    outcome = {"success": False, "failure": Failure.WORKER_DIED.name, "reason": "the grading worker stopped unexpectedly"}
    try:
        _one_engine_per_database()
        _check_schemas_once()
        preload = notebook_imports(sorted((root / "solutions" / assignment).glob("*.ipynb")))
        cfg = _autograde_config(root, db_url, settings, work, kernel_uid, quota, cgroup_procs, template_socket,
                                bytecode_dir, preload)
        os.environ["NBGRADER_EXECUTION"] = "autograde"
        os.chdir(root)
        if solution:
            outcome = {"success": True, "solution_seconds": _time_cells(root, assignment, cfg, work)}
        else:
            outcome = _autograde(assignment, student, settings, cfg, work)
    except BaseException:  # noqa: BLE001 -- the worker must always leave an outcome behind
        details = traceback.format_exc().strip().splitlines()[-1]
        outcome = {"success": False, "failure": Failure.GRADER_ERROR.name,
                   "reason": Failure.GRADER_ERROR.reason(details=details)}
        traceback.print_exc()
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(outcome))
    os.replace(tmp, result_path)
    os._exit(0)


def _autograde(assignment: str, student: str, settings: Settings, cfg, work: Path) -> dict:
    """nbgrader's autograde (and feedback) of one student with `cfg`: the worker's outcome."""
    from nbgrader.apps import NbGraderAPI
    api = NbGraderAPI(config=cfg)
    begin = time.monotonic()
    result = api.autograde(assignment, student, force=True, create=True)
    autograded = time.monotonic()
    print(result.get("log", ""), result.get("error", ""), sep="\n", flush=True)
    outcome = {"success": bool(result["success"])}
    if not result["success"]:
        failure, outcome["reason"] = _classify(result)
        outcome["failure"] = failure.name
    else:
        report = work / "integrity.json"
        outcome["integrity"] = json.loads(report.read_text()) if report.exists() else ["no integrity report"]
        if settings.feedback:
            fb = api.generate_feedback(assignment, student, force=True)
            if not fb["success"]:
                outcome["feedback_error"] = (fb.get("error") or "")[-500:]
    outcome["student_code"] = bool(_read_json(work / "stages.json").get("student_cells", 1))
    outcome["stages"] = _stages(work / "stages.json", autograded - begin, time.monotonic() - autograded)
    return outcome


def _time_cells(root: Path, assignment: str, cfg, work: Path) -> dict:
    """{notebook: {cell: seconds}}: the model solution (solutions/<assignment>/, hidden tests
    included, as autograde restores them) run in a kernel made as a student's is, with the
    course's limit in every cell. What CellTimeLimits derives each cell's limit from."""
    import nbformat

    from dlcourse.grading.sandbox import SandboxedExecute
    times = {}
    cfg.SandboxedExecute.cell_times_path = str(work / "cell_times.json")
    cfg.CellTimeLimits.solution_seconds, cfg.CellTimeLimits.solution_seconds_file = {}, ""
    for path in sorted((root / "solutions" / assignment).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        SandboxedExecute(config=cfg).preprocess(nb, {"unique_key": path.stem, "metadata": {"path": str(work)}})
        times[path.stem] = {k: round(v, 3) for k, v in _read_json(work / "cell_times.json").items()}
        print(f"[grader] the model solution's seconds per cell in {path.name}: {times[path.stem]}", flush=True)
    return times


def _one_engine_per_database() -> None:
    """nbgrader opens a Gradebook for every step of a student's grading (the submission, each
    preprocessor, the feedback), and each made a new SQLAlchemy engine that compiled the same
    SQL again. From here on, in this process and its forks (the workers), they share one engine
    per database URL, and with it the compiled statements; Gradebook.close() still gives back
    its connections (engine.dispose()), so no connection is open when a worker is forked, and
    the worker's own call drops any that might be (dispose(close=False))."""
    import nbgrader.api
    from sqlalchemy import create_engine
    if getattr(nbgrader.api.create_engine, "shared", False):
        for engine in nbgrader.api.create_engine.engines.values():   # in a fork: never a connection of
            engine.dispose(close=False)                              # the parent's (SQLAlchemy's own advice)
        return
    engines = {}

    def shared_engine(url, **options):
        key = (str(url), tuple(sorted(options.items())))
        if key not in engines:
            engines[key] = create_engine(url, **options)
        return engines[key]

    shared_engine.shared, shared_engine.engines = True, engines
    nbgrader.api.create_engine = shared_engine


class _SchemaCheckedOnce:
    """What nbgrader's cell-metadata checks see as the `jsonschema` module: `validate(instance,
    schema)` as jsonschema's own (the same validator class, the same best-matching error raised),
    except that the schema itself is checked against its meta-schema once, not on each of the
    40 or so cells of each notebook nbgrader reads (that check cost a submission more than the
    validation). Anything else is jsonschema's."""

    def __init__(self):
        self.validators = {}   # id(schema) -> (schema, validator): the schema kept, so its id stays its own

    def validate(self, instance, schema, cls=None, *args, **kwargs):
        import jsonschema
        if cls is not None or args or kwargs:
            return jsonschema.validate(instance, schema, cls, *args, **kwargs)
        known = self.validators.get(id(schema))
        if known is None or known[0] is not schema:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
            known = self.validators[id(schema)] = (schema, cls(schema))
        error = jsonschema.exceptions.best_match(known[1].iter_errors(instance))
        if error is not None:
            raise error

    def __getattr__(self, name):
        import jsonschema
        return getattr(jsonschema, name)


def _check_schemas_once() -> None:
    """nbgrader's cell-metadata validation (nbgraderformat.common) uses a _SchemaCheckedOnce, in
    this process and its forks."""
    import nbgrader.nbgraderformat.common as common
    if not isinstance(common.jsonschema, _SchemaCheckedOnce):
        common.jsonschema = _SchemaCheckedOnce()


def _die_with_parent() -> None:
    """Stop this worker (and, through bubblewrap's --die-with-parent, its kernel) as soon as the
    process that started it is gone: a Dask worker killed mid-batch leaves no grader behind that
    could still write this student's grades while the student is graded again elsewhere."""
    import threading
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _stages(path: Path, autograde: float, feedback: float) -> dict:
    """Where one submission's time went (seconds) and the peak memory (MB) of the worker and of
    its kernel: kernel start, imports and execution as the kernel's Execute measured them,
    nbgrader's bookkeeping = the rest of the autograde (copying, the gradebook, nbconvert's other
    passes), feedback = generate_feedback."""
    import resource
    stages = _read_json(path)
    stages.pop("student_cells", None)
    kernel_mb = stages.pop("kernel_mb", None)   # a kernel forked from the template measured itself
    stages["bookkeeping"] = autograde - sum(stages.values())
    stages["feedback"] = feedback
    stages["worker_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stages["kernel_mb"] = kernel_mb if kernel_mb is not None else \
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {k: round(v, 3) for k, v in stages.items()}


class _StopSignals(list):
    """Signals (SIGINT, SIGTERM) received while the batch runs; `restore()` puts the old handlers back."""

    def __init__(self):
        super().__init__()
        self.old = {}

    def restore(self):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def _catch_stop_signals() -> _StopSignals:
    """Record SIGINT/SIGTERM instead of raising wherever they land: a KeyboardInterrupt raised inside
    a finalizer (a database connection being collected, say) is printed and ignored by Python,
    and the batch would carry on. The main loop checks the record and stops cleanly."""
    stop = _StopSignals()
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is signal.SIG_IGN:  # e.g. a background job: stays ignored
            continue
        try:
            stop.old[sig] = signal.signal(sig, lambda signum, frame: stop.append(signum))
        except ValueError:  # not the main thread: leave the handlers alone
            break
    return stop


UID_SPAN = 1000  # kernel uids FIRST_UID .. FIRST_UID + UID_SPAN - 1, shared by every batch on this machine


def _claim_uids(n: int) -> tuple[list[int], list[int]]:
    """One kernel uid per worker slot, locked for this batch (flock on /run/lock/dlcourse-grader-uids/<uid>)
    so that two batches on one machine never share a uid, nor kill each other's kernels. Returns
    (uids, open lock fds to close at the end); uids are -1 when not root (no uid switch)."""
    import fcntl
    if os.geteuid() != 0:
        return [-1] * n, []
    base = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    lockdir = base / "dlcourse-grader-uids"
    lockdir.mkdir(mode=0o700, exist_ok=True)
    uids, fds = [], []
    for uid in range(FIRST_UID, FIRST_UID + UID_SPAN):
        fd = os.open(lockdir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _kill_uid(uid)  # leftovers of a batch that crashed
        uids.append(uid)
        fds.append(fd)
        if len(uids) == n:
            return uids, fds
    for fd in fds:
        os.close(fd)
    raise RuntimeError(f"all {UID_SPAN} grading uids from {FIRST_UID} are in use by other batches")


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of the kernel uid (forked children that outlived their kernel)."""
    if uid < 0:
        return
    pid = os.fork()
    if pid == 0:
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _scores(gb, assignment: str, student: str) -> dict:
    """The student's scores from the batch's Gradebook `gb` (closed again afterwards: no
    connection stays open, nor a read that would hold up the workers' writes)."""
    try:
        sub = gb.find_submission(assignment, student)
        parts, pending = {}, []
        for nb in sub.notebooks:
            for g in nb.grades:
                parts[g.name] = g.score
                if g.auto_score is None and g.manual_score is None:  # a written answer nobody has graded yet
                    pending.append(g.name)
        penalty = sub.late_submission_penalty or 0  # set by the LateSubmissionPlugin in nbgrader_config.py
        return {"score": max(0.0, sub.score - penalty), "max_score": sub.max_score, "parts": parts,
                "pending": sorted(pending), "late": bool(sub.total_seconds_late and sub.total_seconds_late > 0)}
    finally:
        gb.close()   # the session and the pooled connections; the engine (and its compiled SQL) stays


def _store(root: Path, assignment: str, student: str, files: dict[str, bytes], timestamp: str | None,
           origin: Path | None = None, copies: dict[str, bytes] | None = None) -> None:
    """Keep a student's files (and `copies`: a renamed notebook under its expected name) in
    submitted/<student>/<assignment>/ and nowhere else: the id and every name are checked again,
    and no link on the way is written through. In place (`origin` is that folder: the course's own
    submitted/ is graded), nothing there is removed and a file is written only if it differs;
    otherwise the folder is replaced by exactly these files."""
    if subs.student_id(student) != student:
        raise ValueError(f"{student!r} is not a student id in its normal form")
    written = {**files, **(copies or {})}
    for name in written:
        subs.plain_name(name)
    target = root / "submitted" / student / assignment
    for folder in (target.parent, target):
        if folder.is_symlink():
            raise ValueError(f"{folder} is a symbolic link: nothing is written through it")
    in_place = origin is not None and target.is_dir() and os.path.samefile(origin, target)
    if target.exists() and not in_place:
        shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)
    for name, data in written.items():
        path = target / name
        if in_place and path.is_file() and not path.is_symlink() and path.read_bytes() == data:
            continue
        tmp = target / f".{name}.dlcourse-new"
        tmp.write_bytes(data)
        os.replace(tmp, path)   # replaces a link itself, never what it points to
    if timestamp and "timestamp.txt" not in files:
        (target / "timestamp.txt").write_text(timestamp)


class Row(TypedDict, total=False):
    """What state.json and grades.csv keep for a student (no scheduling state: that is Job's)."""
    student: str
    hash: str                   # of the submitted files: unchanged and final -> not graded again
    status: str                 # graded, late or failed
    reason: str                 # why it failed
    final: bool                 # False: the grader's own trouble, graded again next run
    score: float
    max_score: float
    parts: dict                 # grade id -> score
    pending: list               # parts awaiting manual grading
    notes: list                 # repairs and limits hit, for the instructor
    flags: list                 # grading hooks touched: review by hand
    seconds: float              # wall time of the last attempt
    stages: dict                # where that time went, and peak memory (`_stages`)
    worker: str                 # where it was graded: a Dask worker's address or "local"


@dataclass
class Job:
    """One student being graded: the row that goes to state.json plus the scheduling state."""
    student: str
    row: Row
    retried: bool = False
    fresh: bool = False         # start a fresh kernel even where the batch has a kernel template
    solution: bool = False      # the model solution, timed (`time_solution`), not a student
    slot: int = -1
    process: object = None
    work: Path | None = None
    cap: MemoryCap | None = None
    started: float = 0.0


@dataclass
class Outcome:
    """What one attempt at grading a student gave: success, or a reason (and whether to retry)."""
    success: bool
    reason: str = ""
    integrity: list = field(default_factory=list)
    retry: bool = False
    final: bool = True
    seconds: float = 0.0
    stages: dict = field(default_factory=dict)  # seconds per stage and peak memory (`_stages`)
    notes: list = field(default_factory=list)  # e.g. the second try after a dead kernel (from a remote worker)
    student_code: bool = True   # did the notebook's first cell start? (False: the trouble came before it)
    retry_note: str = RETRY_NOTE  # the note a retried job's row gets ('' for none)
    failure: Failure | None = None  # why an attempt failed (None: it did not, or a remote worker's)
    solution_seconds: dict = field(default_factory=dict)  # a timed model solution's {notebook: {cell: s}}


def _plan(root: Path, assignment: str, taken: "subs.Intake", notebooks: list, source_nbs: dict, state: dict,
          save) -> list[Job]:
    """Store every submission, validate it and scan it; a Job for each student that must be graded
    (those whose files changed or whose last outcome was not final). Entries the intake rejected
    and submissions that fail validation are saved here, each with its reason."""
    jobs = []
    for name, reason in sorted(taken.rejected.items()):
        save(name, Row(student=name, status="failed", reason=reason, final=True, notes=[], flags=[]))
    for student, sub in sorted(taken.students.items()):
        files = sub.files
        h = subs.digest(files)
        if state.get(student, {}).get("hash") == h and state[student].get("final"):
            continue
        row = Row(student=student, hash=h, notes=list(sub.notes), flags=[], final=True)
        to_grade = dict(files)
        for nb in notebooks:
            chosen, message = subs.pick_notebook(files, nb)
            if chosen is None:
                row.update(status="failed", reason=message)
                break
            if message:
                row["notes"].append(message)
                to_grade[f"{nb}.ipynb"] = files[chosen]
            verdict = subs.validate(files[chosen], source_nbs[nb])
            if not verdict.ok:
                row.update(status="failed", reason=verdict.reason)
                break
            row["notes"] += verdict.notes
            row["flags"] += static_scan(verdict.editable_sources)
        # a renamed notebook: the original stays as it was, a copy is graded
        copies = {} if "status" in row else {n: d for n, d in to_grade.items() if n not in files}
        _store(root, assignment, student, files, None, sub.origin, copies)
        if "status" in row:
            save(student, row)
            continue
        jobs.append(Job(student, row))
    return jobs


class Runner:
    """Runs jobs in `settings.workers` slots: start, watch (budget, memory cap), release, finish."""

    def __init__(self, root, assignment, settings: Settings, url: str, logs: Path, done, start_method: str = "fork",
                 template=None, tail_work=None):
        """done(job, outcome): called once per job with its final Outcome (`_Finisher` or a Dask task's);
        start_method: multiprocessing's ("fork", "spawn"), or "subprocess" (worker_process.py: a new
        Python, where this process is daemonic and multiprocessing may not start children);
        template: a launched KernelTemplate (`launch_template`) to fork the kernels from, or None;
        tail_work: a callable run in a thread of this process once every job has started, while
        the last ones run (the report's imports and the library's fingerprints): no worker is
        forked while it runs (a job tried again waits for it), so no fork inherits a half-done import."""
        import multiprocessing

        from dlcourse.grading.worker_process import WorkerContext
        self.root, self.assignment, self.settings, self.url, self.logs = root, assignment, settings, url, logs
        self.done = done
        self.ctx = WorkerContext() if start_method == "subprocess" else multiprocessing.get_context(start_method)
        self.uids, self.uid_locks = _claim_uids(settings.workers)
        self.work_root = Path(tempfile.mkdtemp(prefix="dlg-"))
        self.work_root.chmod(0o711)  # the kernels' uids pass through to their own (private) scratch folders
        self.bytecode_dir = self.work_root / "templates"   # the feedback's compiled templates (feedback.py)
        self.bytecode_dir.mkdir(mode=0o700)
        self.free = list(range(settings.workers))
        self.running: dict[int, Job] = {}
        self.warned = False
        self.template = template
        self.tail_work, self.tail = tail_work, None

    def _wait_for_template(self) -> None:
        if self.template is not None:
            from dlcourse.grading.kernel_template import LISTENING
            why = self.template.wait_ready(until=LISTENING)
            if why:
                print(f"warning: {why}; every kernel starts afresh", file=sys.stderr)
                self.template = None

    def run(self, todo: list[Job], stop) -> None:
        import multiprocessing.connection
        try:
            self._wait_for_template()
            while todo or self.running:
                if stop:  # Ctrl-C or kill: raised here, never inside a library's cleanup code that would swallow it
                    raise KeyboardInterrupt(f"stopped by signal {stop[0]}")
                while todo and self.free:
                    self._start(todo.pop(0), self.free.pop(0))
                # wake as soon as a worker ends; at least every 50 ms (budgets, memory caps, signals)
                multiprocessing.connection.wait([job.process.sentinel for job in self.running.values()], 0.05)
                finished = []
                for job in list(self.running.values()):
                    outcome = self._poll(job)
                    if outcome is None:
                        continue
                    self._release(job)
                    if outcome.retry:
                        job.retried = True
                        if outcome.retry_note:
                            job.row["notes"].append(outcome.retry_note)
                        todo.insert(0, job)
                    else:
                        outcome.seconds = round(time.monotonic() - job.started, 2)  # this student's last attempt
                        finished.append((job, outcome))
                while todo and self.free and not stop:   # the freed slots work again before the bookkeeping
                    self._start(todo.pop(0), self.free.pop(0))
                if not todo and self.tail_work is not None and self.tail is None:
                    self.tail = threading.Thread(target=self.tail_work, name="tail-work", daemon=True)
                    self.tail.start()
                for job, outcome in finished:
                    self.done(job, outcome)
        finally:
            for job in list(self.running.values()):
                self._release(job)
            for _ in range(5):  # a kernel that is still being torn down may write a last file
                shutil.rmtree(self.work_root, ignore_errors=True)
                if not self.work_root.exists():
                    break
                time.sleep(0.2)
            for fd in self.uid_locks:
                os.close(fd)

    def _start(self, job: Job, slot: int) -> None:
        if self.tail is not None:
            self.tail.join()   # never fork while another thread may hold an import's lock
        job.slot, job.work = slot, self.work_root / f"s{slot}" / job.student
        job.work.mkdir(parents=True)
        job.cap = MemoryCap.create(f"dlcourse-grader-{os.getpid()}-{slot}", self.settings.limits.total_memory_mb)
        if job.cap is None and not self.warned:
            self.warned = True
            print("warning: no memory cgroup can be made here (needs root and cgroup v1 or v2 with the memory "
                  "controller): only the per-process memory limit applies", file=sys.stderr)
        job.process = self.ctx.Process(target=_worker, args=(
            self.root, self.assignment, job.student, self.uids[slot], self.settings, job.work, self.url,
            job.work / "result.json", self.logs / f"{job.student}.log", str(job.cap.procs) if job.cap else "",
            str(self.template.socket_path) if self.template and not job.fresh else "", str(self.bytecode_dir),
            job.solution))
        job.process.start()
        job.started = time.monotonic()
        self.running[slot] = job

    def _poll(self, job: Job) -> Outcome | None:
        """None while the job runs; its Outcome once the worker has ended (or was stopped). A run
        with a forked kernel that ended in trouble that is not the student's (`fork_trouble`) is
        run again with a fresh kernel, whose outcome counts."""
        outcome = self._outcome(job)
        if outcome is None or self.template is None or job.fresh:
            return outcome
        trouble = fork_trouble(outcome)
        if not trouble:
            return outcome
        job.fresh = True
        log = self.logs / f"{job.student}.log"
        if log.exists():
            os.replace(log, log.with_suffix(".forked.log"))
        print(f"{job.student}: the run with a forked kernel ended in \"{trouble}\"; grading again with a fresh kernel",
              file=sys.stderr)
        return Outcome(False, trouble, retry=True,
                       retry_note=RETRY_NOTE if outcome.failure is Failure.KERNEL_DIED else "")

    def _outcome(self, job: Job) -> Outcome | None:
        proc = job.process
        if job.cap is not None and job.cap.oom_kills():
            job.cap.kill()  # one process hit the cap: the whole submission stops (as v2's memory.oom.group)
        if proc.is_alive() and time.monotonic() < job.started + self.settings.budget:
            return None
        if proc.is_alive():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.join()
            return Outcome(False, Failure.BUDGET.reason(budget=self.settings.budget), failure=Failure.BUDGET)
        proc.join()
        if job.cap is not None and job.cap.oom_kills():
            return Outcome(False, Failure.MEMORY_CAP.reason(mb=self.settings.limits.total_memory_mb), failure=Failure.MEMORY_CAP)
        result = job.work / "result.json"
        if not result.exists():
            return Outcome(False, Failure.WORKER_DIED.reason(exitcode=proc.exitcode), final=False,
                           failure=Failure.WORKER_DIED)
        data = json.loads(result.read_text())
        if data["success"]:
            return Outcome(True, integrity=data.get("integrity", []), stages=data.get("stages", {}),
                           solution_seconds=data.get("solution_seconds", {}))
        failure = Failure[data["failure"]]
        # A kernel can also die of something that is not the student's doing (the machine under
        # memory pressure); one more try tells the two apart.
        return Outcome(False, data["reason"], retry=failure is Failure.KERNEL_DIED and not job.retried,
                       final=failure.final, failure=failure, student_code=data.get("student_code", True))

    def _release(self, job: Job) -> None:
        """The one way a slot is given back: worker stopped, kernel processes killed, cgroup and files removed."""
        if job.process is not None and job.process.is_alive():
            os.killpg(job.process.pid, signal.SIGKILL)
            job.process.join()
        _kill_uid(self.uids[job.slot])
        if job.cap is not None:
            job.cap.remove()
        shutil.rmtree(job.work, ignore_errors=True)
        del self.running[job.slot]
        self.free.append(job.slot)



@dataclass
class _Finisher:
    """Scores (or a Failure's reason) into the student's row, saved to state.json at once."""
    root: Path
    assignment: str
    gradebook: object   # the batch's own nbgrader Gradebook (`_scores` closes it after each read)
    save: object
    bar: object
    scored: set = field(default_factory=set)   # the students whose scores were read in this run

    def __call__(self, job: Job, outcome: "Outcome", worker: str = "local") -> None:
        row = job.row
        if outcome.success:
            row.update(_scores(self.gradebook, self.assignment, job.student))
            self.scored.add(job.student)
            row["status"] = "late" if row.pop("late") else "graded"
            row["flags"] = sorted(set(row["flags"]) | set(outcome.integrity))
            row["notes"] += _cell_notes(self.root, self.assignment, job.student)
        else:
            row.update(status="failed", reason=outcome.reason, final=outcome.final)
        row["notes"] += [n for n in outcome.notes if n not in row["notes"]]
        row["seconds"] = outcome.seconds  # wall time of this student's grading
        if outcome.stages:
            row["stages"] = outcome.stages
        row["worker"] = worker
        self.save(job.student, row)
        self.bar.update(1)


SOLUTION = "_model_solution"   # the timed model solution's job and log (no student id starts with "_")


def time_solution(root: Path, assignment: str, settings: Settings, url: str, logs: Path, stop=(),
                  start_method: str = "fork", template=None) -> dict:
    """{notebook: {cell: seconds}} of the model solution, run once as a submission is (a worker,
    its sandbox and limits, a kernel forked from `template` where there is one): what each cell's
    time limit is derived from (timelimits.py). {} where it could not run (then every cell gets
    the course's limit) or where time limits are switched off (timeout_factor 0)."""
    if settings.timeout_factor == 0:
        return {}
    result = {}
    one = replace(settings, workers=1, feedback=False, solution_seconds={})
    Runner(root, assignment, one, url, logs, lambda job, outcome: result.update(outcome=outcome), start_method,
           template=template).run([Job(SOLUTION, Row(student=SOLUTION, notes=[], flags=[]), solution=True)], stop)
    outcome = result.get("outcome")
    if outcome is None or not outcome.success:
        print(f"warning: the model solution could not be timed ({outcome.reason if outcome else 'stopped'}; "
              f"see {logs / (SOLUTION + '.log')}): every cell gets the course's limit", file=sys.stderr)
        return {}
    return outcome.solution_seconds


def _handing_off(finish, path: Path, logs: Path):
    """done(job, outcome) for a batch whose first job times the model solution: that job's cell
    times go to `path` (atomically; {} when it failed: the course's limit everywhere), where the
    workers' CellTimeLimits read them; every other job goes to `finish`. So the solution runs in
    a slot beside the first students instead of before them: a cell that starts before the times
    are there gets the course's limit."""
    def done(job, outcome, *args):
        if not job.solution:
            return finish(job, outcome, *args)
        times = outcome.solution_seconds if outcome.success else {}
        if not outcome.success:
            print(f"warning: the model solution could not be timed ({outcome.reason}; see "
                  f"{logs / (SOLUTION + '.log')}): every cell gets the course's limit", file=sys.stderr)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(times))
        os.replace(tmp, path)
    return done


def launch_template(settings: Settings, notebooks: list[Path]):
    """The batch's kernel template (kernel_template.py), launched: it imports what the assignment's
    source `notebooks` import (the instructor's, never a student's) while the batch is planned.
    None where it cannot be used (not root, no sandbox, switched off, on a Dask cluster)."""
    if not (settings.fork_kernels and settings.sandbox and not settings.scheduler and os.geteuid() == 0):
        return None
    from dlcourse.grading.kernel_template import KernelTemplate, notebook_imports
    template = KernelTemplate(notebook_imports(notebooks))
    template.launch()
    return template


# a notebook with every kind of cell and output that an autograded notebook has (markdown with
# math and a table, code, stream, a result, a traceback in ANSI colours, an image), in the
# language that ipykernel reports
WARM_UP_NOTEBOOK = {
    "nbformat": 4, "nbformat_minor": 5,
    "metadata": {"language_info": {"name": "python", "pygments_lexer": "ipython3"}},
    "cells": [
        {"cell_type": "markdown", "id": "w1", "metadata": {},
         "source": "# A *title*\n\n$x^2$ and `code`\n\n| a | b |\n|---|---|\n| 1 | 2 |"},
        {"cell_type": "code", "id": "w2", "metadata": {}, "execution_count": 1,
         "source": "import torch\nx = torch.ones(2)  # a comment\nprint(f'{x!r}')\n%time x\nassert x.sum() == 3, 'wrong'",
         "outputs": [
             {"output_type": "stream", "name": "stdout", "text": "tensor([1., 1.])\n"},
             {"output_type": "execute_result", "execution_count": 1, "metadata": {},
              "data": {"text/plain": "2", "text/html": "<b>2</b>"}},
             {"output_type": "display_data", "metadata": {}, "data": {
                 "text/plain": "<Figure>", "image/png": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="}},
             {"output_type": "error", "ename": "AssertionError", "evalue": "wrong",
              "traceback": ["\x1b[0;31mAssertionError\x1b[0m: wrong"]}]},
    ],
}


def warm_up() -> None:
    """Do once, in the batch's own process, what every worker would otherwise do again: import
    nbformat's schema validators, pygments' lexers (their regular expressions are compiled on
    first use and kept on the class) and the rest of nbconvert's HTML export, by rendering
    WARM_UP_NOTEBOOK. The workers are forks of this process and inherit all of it. Nothing is
    written."""
    import nbformat
    from nbconvert.exporters import HTMLExporter
    HTMLExporter().from_notebook_node(nbformat.from_dict(WARM_UP_NOTEBOOK))


def grade_batch(root, assignment: str, source, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """Grade every submission in `source` (zip or folder); returns the rows written to grades.csv."""
    from nbgrader.api import Gradebook
    from tqdm.auto import tqdm

    from dlcourse.grading.report import prepare_report, write_outputs

    settings = settings or Settings()
    root = Path(root).resolve()
    _venv_on_path()
    if settings.workers < 1:
        raise ValueError(f"workers must be at least 1, got {settings.workers}")
    if settings.sandbox:
        check_bwrap()
    out = Path(settings.output or root / "grades" / assignment)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    source_dir = root / "solutions" / assignment
    source_nbs = {p.stem: json.loads(p.read_text()) for p in sorted(source_dir.glob("*.ipynb"))}
    if not source_nbs:
        raise ValueError(f"no notebooks in {source_dir}")
    template = launch_template(settings, sorted(source_dir.glob("*.ipynb")))   # imports while the batch is planned
    try:
        submitted, src = (root / "submitted").resolve(), Path(source).resolve()
        if src != submitted and (submitted.is_relative_to(src) or src.is_relative_to(submitted)):
            raise ValueError(f"grade the course's submitted/ folder itself or an export, not {src}")
        taken = subs.intake(src, list(source_nbs), assignment, collected=src == submitted)   # a bad entry fails alone
        _one_engine_per_database()   # the workers inherit the engines, their SQL compiled by the batch's reads
        _check_schemas_once()
        cfg, url, notebooks = _prepare(root, assignment, settings, sorted(taken.students))
        gradebook = Gradebook(url, "dlcourse")   # one for the batch's reads: its SQL is compiled once
        gradebook.close()   # no connection open when the workers are forked (each read opens one)

        state = StateLog(out / "state.json")   # a row appended as soon as it is known, compacted at the end
        save = state.save
        todo = _plan(root, assignment, taken, notebooks, source_nbs, state, save)
        if not todo and template is not None:
            template.stop()
            template = None
        bar = tqdm(total=len(todo), desc=f"grading {assignment}", unit="student", disable=not progress)
        stop = _catch_stop_signals()
        finish = _Finisher(root, assignment, gradebook, save, bar)
        froze = False
        try:
            if settings.scheduler:
                from dlcourse.grading.cluster import run_on_cluster
                run_on_cluster(settings.scheduler, root, assignment, settings, url, out / "logs", todo, finish, stop)
            else:
                if todo:
                    warm_up()
                    release = root / str(cfg.CourseDirectory.get("release_directory", "release")) / assignment
                    remember_highlights(sorted(release.glob("*.ipynb")))   # what every student's copy shares
                    froze = gc.get_freeze_count() == 0   # a caller's own freeze is theirs to undo
                    gc.freeze()   # what the workers inherit: their collections never walk (and copy) it
                done = finish
                kept, key = out / "solution_times.json", timelimits.solution_key(
                    sorted(source_dir.glob("*.ipynb")), threads=settings.limits.threads, sandbox=settings.sandbox,
                    fork_kernels=settings.fork_kernels, cell_timeout=settings.cell_timeout)
                if todo and not settings.solution_seconds and settings.timeout_factor != 0:
                    # measured by an earlier batch on this host with these solutions
                    settings = replace(settings, solution_seconds=timelimits.kept_times(kept, key))
                if todo and not settings.solution_seconds and settings.timeout_factor != 0:
                    # each cell's time limit from the model solution's, timed in the first slot
                    handoff = out / "logs" / f"{SOLUTION}.json"
                    handoff.unlink(missing_ok=True)
                    settings = replace(settings, solution_seconds_file=str(handoff))
                    todo.insert(0, Job(SOLUTION, Row(student=SOLUTION, notes=[], flags=[]), solution=True))
                    done = _handing_off(finish, handoff, out / "logs")
                Runner(root, assignment, settings, url, out / "logs", done, template=template,
                       tail_work=prepare_report).run(todo, stop)
                if settings.solution_seconds_file:   # the times measured in this batch, for the next
                    timelimits.keep_times(kept, key, _read_json(Path(settings.solution_seconds_file)))
        finally:
            if froze:
                gc.unfreeze()
            bar.close()
            stop.restore()
            state.compact()
    finally:
        if template is not None:
            template.stop()

    rows = [dict(state[s], student=s) for s in sorted(state) if s in taken.students or s in taken.rejected]
    for row in rows:  # scores as the gradebook has them now: manual grades given since the last run count
        if row.get("status") in ("graded", "late") and row["student"] not in finish.scored:
            fresh = _scores(gradebook, assignment, row["student"])
            fresh.pop("late")
            row.update(fresh)
    release_dir = root / str(cfg.CourseDirectory.get("release_directory", "release")) / assignment
    write_outputs(out, assignment, rows, _part_maxima(gradebook, assignment), sandboxed=settings.sandbox,
                  autograded=root / "autograded", release=release_dir)
    return rows


def kernel_reachable() -> bool:
    """Can an unprivileged uid run this Python without the sandbox? (Not when it lives under a
    private folder such as /root: then an unsandboxed kernel keeps the grader's user.)"""
    import stat
    from dlcourse.grading.sandbox import STAGE
    for target in (Path(sys.executable).resolve(), Path(sys.prefix), Path(sys.base_prefix), STAGE):
        for folder in [target, *target.parents]:
            if folder.is_dir() and not folder.stat().st_mode & stat.S_IXOTH:
                return False
    return True


def _venv_on_path() -> None:
    """nbgrader runs `alembic` by name when it creates a gradebook: make the running Python's
    scripts folder come first on PATH (dlcourse-grade may be started without activating the venv)."""
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = os.pathsep.join([bindir, path]) if path else bindir


def _cell_notes(root: Path, assignment: str, student: str) -> list[str]:
    """Cells that hit the time or memory limit in the autograded notebooks (the part scores 0)."""
    notes = []
    for path in sorted((root / "autograded" / student / assignment).glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", f"cell {cell.get('id')}")
            for o in cell.get("outputs", []):
                if o.get("output_type") == "error" and o.get("ename") in ("CellTimeoutError", "MemoryError"):
                    what = "time" if o["ename"] == "CellTimeoutError" else "memory"
                    notes.append(f"{gid}: hit the {what} limit")
                    if what == "time" and o.get("evalue"):   # a limit of its own: which, and why (timelimits.py)
                        notes.append(f"{gid}: {o['evalue']}")
    return notes


def _part_maxima(gb, assignment: str) -> dict:
    try:
        return {g.name: g.max_score for nb in gb.find_assignment(assignment).notebooks for g in nb.grade_cells}
    finally:
        gb.close()


def parse_time(text: str) -> str:
    """Validate a due date such as '2025-03-01 17:00' (nbgrader parses it again)."""
    try:
        datetime.fromisoformat(text)
    except ValueError as e:
        raise ValueError(f"due date must look like 2025-03-01 17:00, got {text!r}") from e
    return text
