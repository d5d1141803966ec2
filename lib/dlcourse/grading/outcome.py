"""Shared: what travels with one student through the batch: Job, Outcome, Failure and Row.

A Job (scheduling state and the row being filled) goes from the plan to the runner; a worker's
attempt is an Outcome (success, or a Failure and its reason) from the worker on: the worker
writes it (`Outcome.write`, result.json), the runner reads it back (`Outcome.read`) and adds only
what it decides (a retry, the wall time), a Dask task returns it as it is; the record step turns
it into the student's Row (record.py), which state.json and grades.csv keep.
"""
import enum
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TypedDict

from dlcourse.grading.cgroups import MemoryCap


# the note on a row whose kernel died once and which was graded again
RETRY_NOTE = "the kernel died on the first try; graded a second time"

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


def classify(result: dict) -> tuple[Failure, str]:
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
    """What one attempt at grading a student gave: success, or a reason (and whether to retry).
    The worker makes it; `write` and `read` carry it through result.json unchanged."""
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
    feedback_error: str = ""    # the end of generate_feedback's error, where the feedback failed

    @classmethod
    def failed(cls, failure: Failure, reason: str = "", **more) -> "Outcome":
        """An attempt that ended in `failure` (final as the Failure says), with `reason` (the
        Failure's own text where none is given)."""
        return cls(False, reason or failure.reason(), failure=failure, final=failure.final, **more)

    def write(self, path: Path) -> None:
        """Save this outcome to `path` as JSON (the Failure by name), atomically: a reader sees
        the whole outcome or none."""
        data = asdict(self)
        data["failure"] = self.failure.name if self.failure else None
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path, exitcode=None) -> "Outcome":
        """The outcome `write` saved to `path`; a worker that left none (or a damaged one) died:
        WORKER_DIED, with its `exitcode`, not final."""
        try:
            data = json.loads(Path(path).read_text())
            known = {f.name for f in fields(cls)}
            data = {k: v for k, v in data.items() if k in known}
            data["failure"] = Failure[data["failure"]] if data.get("failure") else None
            return cls(**data)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls.failed(Failure.WORKER_DIED, Failure.WORKER_DIED.reason(exitcode=exitcode))

