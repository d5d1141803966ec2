"""Shared: how a batch is graded (Settings, one place for every default) and the course's nbgrader config.

Settings travels the whole path of a submission: the CLI builds it, `batch.grade_batch` passes it
down to the plan, the runner, each worker and the Dask tasks.
"""
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from dlcourse.grading.cage import Limits


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
    solution_seconds_file: str = ""   # or where they will appear while the batch runs (`handing_off`)


def course_config(root: Path, db_url: str | None):
    from traitlets.config.loader import PyFileConfigLoader
    cfg = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    if db_url:
        cfg.CourseDirectory.db_url = db_url
    if str(cfg.CourseDirectory.db_url).startswith("sqlite") and "timeout=" not in str(cfg.CourseDirectory.db_url):
        cfg.CourseDirectory.db_url = str(cfg.CourseDirectory.db_url) + "?timeout=60"  # parallel writers wait
    return cfg


def course_id(cfg) -> str:
    """The course's id as nbgrader's own apps take it: CourseDirectory.course_id of the course's
    nbgrader_config.py (nbgrader's default, "", where it sets none)."""
    return str(cfg.CourseDirectory.get("course_id", ""))


def parse_time(text: str) -> str:
    """Validate a due date such as '2025-03-01 17:00' (nbgrader parses it again)."""
    try:
        datetime.fromisoformat(text)
    except ValueError as e:
        raise ValueError(f"due date must look like 2025-03-01 17:00, got {text!r}") from e
    return text
