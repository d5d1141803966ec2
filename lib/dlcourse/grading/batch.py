"""Shared: grade a whole class: submissions in, grades.csv, feedback and a report out.

    grade_batch(course_root, "ps_convolution", "submissions.zip", Settings(workers=2))

The path of one submission, and where each step lives:

intake  (plan.py: `plan`) collect the zip/folder (submissions.py); keep every file unmodified in
        submitted/<student>/<assignment>/; validate each notebook before it runs and scan the
        student's code for grading hooks; a Job for each student to grade
cage    (cage.py, cgroups.py) bubblewrap, rlimits, a scratch tmpfs, a memory cgroup, a kernel uid
run     (runner.py: `Runner`; worker.py) autograde each Job in a forked worker with its own
        sandboxed kernel (sandbox.py, kernel_manager.py, kernel_template.py); the runner stops
        a worker that overruns its budget and a kernel whose processes hit the memory cap
render  feedback (feedback.py; hidden tests stay hidden), written by the worker; the report (report.py)
record  (record.py: `Finisher`) scores or a Failure's reason into the student's row (outcome.py);
        grades.csv and the report at the end

The row of each student is appended to state.log as soon as it is known (state.py; compacted
into state.json when a batch loads and ends), so a crash or Ctrl-C loses nothing: the next run
skips every student whose files hash the same and whose outcome is final, and grades the rest.

What callers import from here (Settings, Failure, KERNEL_DIED, ...) is re-exported from the
modules of the steps.
"""
import gc
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from dlcourse.grading import report
from dlcourse.grading import submissions as subs
from dlcourse.grading import timelimits
from dlcourse.grading.cage import check_bwrap, kernel_reachable
from dlcourse.grading.cluster import run_on_cluster
from dlcourse.grading.feedback import remember_highlights
from dlcourse.grading.nbgrader_patches import check_schemas_once, one_engine_per_database
from dlcourse.grading.outcome import (KERNEL_DIED, MEMORY_CAP, RETRY_NOTE, Failure, Job, Outcome, Row,
                                      fork_trouble)
from dlcourse.grading.plan import plan, prepare_gradebook
from dlcourse.grading.record import Finisher, final_rows, part_maxima
from dlcourse.grading.runner import (SOLUTION, Runner, catch_stop_signals, compile_feedback_templates, handing_off,
                                     launch_template, time_solution, warm_up)
from dlcourse.grading.settings import Settings, course_id, default_cell_timeout, default_workers, parse_time
from dlcourse.grading.state import StateLog
from dlcourse.grading.worker import autograde_preprocessors, read_json

__all__ = ["KERNEL_DIED", "MEMORY_CAP", "RETRY_NOTE", "SOLUTION", "Failure", "Job", "Outcome", "Row", "Runner",
           "Settings", "autograde_preprocessors", "default_cell_timeout", "default_workers", "fork_trouble",
           "grade_batch", "kernel_reachable", "launch_template", "parse_time", "time_solution", "warm_up"]


def grade_batch(root, assignment: str, source, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """Grade every submission in `source` (zip or folder); returns the rows written to grades.csv."""
    from nbgrader.api import Gradebook
    from tqdm.auto import tqdm

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
        one_engine_per_database()   # the workers inherit the engines, their SQL compiled by the batch's reads
        check_schemas_once()
        cfg, url, notebooks = prepare_gradebook(root, assignment, settings, sorted(taken.students))
        gradebook = Gradebook(url, course_id(cfg))   # one for the batch's reads: its SQL is compiled once
        gradebook.close()   # no connection open when the workers are forked (each read opens one)

        state = StateLog(out / "state.json")   # a row appended as soon as it is known, compacted at the end
        save = state.save
        todo = plan(root, assignment, taken, notebooks, source_nbs, state, save)
        if not todo and template is not None:
            template.stop()
            template = None
        bar = tqdm(total=len(todo), desc=f"grading {assignment}", unit="student", disable=not progress)
        stop = catch_stop_signals()
        finish = Finisher(root, assignment, gradebook, save, bar)
        try:
            if settings.scheduler:
                run_on_cluster(settings.scheduler, root, assignment, settings, url, out / "logs", todo, finish, stop)
            else:
                _run_here(root, assignment, settings, cfg, url, out, todo, finish, stop, template)
        finally:
            bar.close()
            stop.restore()
            state.compact()
    finally:
        if template is not None:
            template.stop()

    rows = final_rows(state, set(taken.students) | set(taken.rejected), finish, gradebook, assignment)
    report.write_outputs(out, assignment, rows, part_maxima(gradebook, assignment), sandboxed=settings.sandbox,
                         autograded=root / "autograded", release=_release(root, cfg, assignment))
    return rows


def _run_here(root: Path, assignment: str, settings: Settings, cfg, url: str, out: Path, todo: list[Job], finish,
              stop, template) -> None:
    """Grade `todo` in this machine's slots (`Runner`). What every worker would do again is done
    once before they fork (`warm_up`, the release's highlighting, a frozen heap); each cell's time
    limit comes from the model solution's, kept from an earlier batch on this host with these
    solutions, or timed in a slot of its own once a cell first runs past the floor (timelimits.py)."""
    froze = False
    try:
        if todo:
            warm_up([*cfg.Autograde.get("autograde_preprocessors", []), *cfg.GenerateFeedback.get("preprocessors", []),
                     *cfg.HTMLExporter.get("preprocessors", [])], sorted((root / "solutions" / assignment).glob("*.ipynb")))
            remember_highlights(sorted(_release(root, cfg, assignment).glob("*.ipynb")))   # what every copy shares
            froze = gc.get_freeze_count() == 0   # a caller's own freeze is theirs to undo
            gc.freeze()   # what the workers inherit: their collections never walk (and copy) it
        done, on_request = finish, None
        kept, key = out / "solution_times.json", timelimits.solution_key(
            sorted((root / "solutions" / assignment).glob("*.ipynb")), threads=settings.limits.threads,
            sandbox=settings.sandbox, fork_kernels=settings.fork_kernels, cell_timeout=settings.cell_timeout)
        if todo and not settings.solution_seconds and settings.timeout_factor != 0:
            # measured by an earlier batch on this host with these solutions
            settings = replace(settings, solution_seconds=timelimits.kept_times(kept, key))
        if todo and not settings.solution_seconds and settings.timeout_factor != 0:
            # each cell's time limit from the model solution's, timed once a cell needs it
            handoff = out / "logs" / f"{SOLUTION}.json"
            for old in (handoff, Path(timelimits.wanted(handoff))):
                old.unlink(missing_ok=True)
            settings = replace(settings, solution_seconds_file=str(handoff))
            on_request = (Job(SOLUTION, Row(student=SOLUTION, notes=[], flags=[]), solution=True),
                          Path(timelimits.wanted(handoff)))
            done = handing_off(finish, handoff, out / "logs")
        runner = Runner(root, assignment, settings, url, out / "logs", done, template=template,
                        tail_work=report.prepare_report, on_request=on_request)
        if todo and settings.feedback:
            compile_feedback_templates(cfg, runner.bytecode_dir,   # once, not in each of the first workers
                                       sorted(_release(root, cfg, assignment).glob("*.ipynb")))
        runner.run(todo, stop)
        if settings.solution_seconds_file and Path(settings.solution_seconds_file).exists():
            timelimits.keep_times(kept, key, read_json(Path(settings.solution_seconds_file)))   # for the next batch
    finally:
        if froze:
            gc.unfreeze()


def _release(root: Path, cfg, assignment: str) -> Path:
    """The assignment's folder in the course's release directory (what every student was given)."""
    return root / str(cfg.CourseDirectory.get("release_directory", "release")) / assignment


def _venv_on_path() -> None:
    """nbgrader runs `alembic` by name when it creates a gradebook: make the running Python's
    scripts folder come first on PATH (dlcourse-grade may be started without activating the venv)."""
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = os.pathsep.join([bindir, path]) if path else bindir
