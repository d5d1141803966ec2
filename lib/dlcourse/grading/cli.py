"""Shared: dlcourse-grade: one command from the LMS's export to grades.csv, feedback and a report.

    python -m dlcourse.grading --assignment ps_convolution --submissions export.zip --workers 2

Run it in the course root (or pass --course-dir). Exit status: 0 when every student was graded,
1 when some submissions failed (see grades.csv), 2 on a usage error or when the sandbox cannot start,
130 when stopped by Ctrl-C or SIGTERM (what was graded is kept; the next run finishes the job).
"""
import argparse
import os
import sys
from pathlib import Path

from dlcourse.grading.batch import Settings, grade_batch, parse_time
from dlcourse.grading.report import UNSANDBOXED
from dlcourse.grading.sandbox import Limits, SandboxUnavailable
from dlcourse.grading.timelimits import CellTimeLimits


def _due_date(text: str) -> str:
    try:
        return parse_time(text)
    except ValueError as e:  # argparse shows this message instead of "invalid parse_time value"
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    """Every default comes from Settings and Limits (shown in --help), never repeated here."""
    s, lim = Settings(), Limits()
    p = argparse.ArgumentParser(prog="dlcourse-grade", description=__doc__.splitlines()[0])
    p.add_argument("--assignment", required=True, help="e.g. ps_convolution (its source is solutions/<name>/)")
    p.add_argument("--submissions", required=True, help="zip or folder of <student>/<notebook>.ipynb")
    p.add_argument("--course-dir", default=".", help="course root holding nbgrader_config.py (default: .)")
    p.add_argument("--workers", type=int, default=s.workers, help=f"parallel grading workers (default {s.workers})")
    p.add_argument("--cell-timeout", type=int, default=None,
                   help=f"seconds one cell may run at most, the course's limit (default: $DLCOURSE_CELL_TIMEOUT, else 300; "
                        f"now {s.cell_timeout}); each cell's own is derived from the model solution's time in it")
    limits = CellTimeLimits.class_traits()
    p.add_argument("--timeout-factor", type=float, default=None,
                   help=f"{limits['timeout_factor'].help} (default {limits['timeout_factor'].default_value:g})")
    p.add_argument("--timeout-floor", type=float, default=None,
                   help=f"{limits['timeout_floor'].help} (default {limits['timeout_floor'].default_value:g})")
    p.add_argument("--budget", type=int, default=s.budget,
                   help=f"seconds one whole submission may take (default {s.budget})")
    p.add_argument("--cpu-seconds", type=int, default=lim.cpu_seconds,
                   help=f"CPU seconds of each kernel process (default {lim.cpu_seconds})")
    p.add_argument("--memory-mb", type=int, default=lim.memory_mb,
                   help=f"address-space limit of each kernel process (default {lim.memory_mb})")
    p.add_argument("--total-memory-mb", type=int, default=lim.total_memory_mb,
                   help=f"memory of all of a kernel's processes together, a memory cgroup (default {lim.total_memory_mb})")
    p.add_argument("--scratch-mb", type=int, default=lim.scratch_mb,
                   help=f"size of the tmpfs a kernel may write to (default {lim.scratch_mb})")
    p.add_argument("--kernel-threads", type=int, default=lim.threads,
                   help=f"threads of torch and BLAS in each kernel (default {lim.threads}: one core per grading slot)")
    p.add_argument("--processes", type=int, default=lim.processes,
                   help=f"process limit for each kernel's user (default {lim.processes})")
    p.add_argument("--duedate", type=_due_date, help="due date, e.g. '2025-03-01 17:00' (UTC)")
    p.add_argument("--db-url", help="gradebook URL (default: nbgrader_config.py's)")
    p.add_argument("--output", help="folder for grades.csv and the report (default grades/<assignment>)")
    p.add_argument("--scheduler", default=os.environ.get("DLCOURSE_DASK_SCHEDULER") or None,
                   help="a Dask scheduler, e.g. tcp://HOST:8786: each submission is graded on one of its workers "
                        "(default: $DLCOURSE_DASK_SCHEDULER, else here)")
    p.add_argument("--no-feedback", action="store_true", help="skip the feedback HTML")
    p.add_argument("--fork-kernels", action=argparse.BooleanOptionalAction, default=s.fork_kernels,
                   help="fork every kernel from the batch's pre-imported kernel template instead of starting a new "
                        "Python (several times faster; as root with the sandbox only, on this machine, not on a "
                        "Dask cluster); --no-fork-kernels starts every kernel afresh (default: fork)")
    p.add_argument("--unsandboxed", action="store_true",
                   help="grade without bubblewrap (kernels can read the instructor's files!)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(args.course_dir).resolve()
    if not (root / "nbgrader_config.py").exists():
        print(f"error: {root} has no nbgrader_config.py; run in the course root or pass --course-dir", file=sys.stderr)
        return 2
    settings = Settings(budget=args.budget, workers=args.workers,
                        sandbox=not args.unsandboxed, db_url=args.db_url, duedate=args.duedate,
                        feedback=not args.no_feedback, scheduler=args.scheduler, fork_kernels=args.fork_kernels,
                        timeout_factor=args.timeout_factor, timeout_floor=args.timeout_floor,
                        output=Path(args.output).resolve() if args.output else None,
                        limits=Limits(memory_mb=args.memory_mb, processes=args.processes, cpu_seconds=args.cpu_seconds,
                                      total_memory_mb=args.total_memory_mb, scratch_mb=args.scratch_mb,
                                      threads=args.kernel_threads))
    if args.cell_timeout is not None:
        settings.cell_timeout = args.cell_timeout
    if args.unsandboxed:
        print(f"warning: {UNSANDBOXED} (--unsandboxed)", file=sys.stderr)
    try:
        rows = grade_batch(root, args.assignment, Path(args.submissions).resolve(), settings, progress=not args.quiet)
    except SandboxUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: every student graded so far is saved; run the same command again to finish",
              file=sys.stderr)
        return 130
    out = settings.output or root / "grades" / args.assignment
    counts = {s: sum(r["status"] == s for r in rows) for s in ("graded", "late", "failed")}
    print(f"{len(rows)} students: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f" -> {out / 'grades.csv'}"
          + ("" if settings.sandbox else " (unsandboxed)"))
    if settings.feedback:
        print(f"feedback written to {root / 'feedback'}: students see it (and the new scores) only once it is "
              f"released, again after every grading: nbgrader release_feedback {args.assignment} "
              "(formgrader: Release feedback)")
    return 1 if counts["failed"] else 0
