"""Run: time limits that fit the task: each cell may run a multiple of what the model solution takes.

Stock nbgrader gives every cell one limit (`Execute.timeout`, the course's 300 s), so a student
whose loop never ends costs that much per looping cell, more than the rest of the class together.
The instructor's solution notebooks are run in a sandboxed kernel like the students'
(`runner.time_solution`), and every cell then gets

    limit = min(course limit, max(timeout_floor, timeout_factor * the solution's seconds in that cell))

A cell that ends within the floor never needs the solution's time, so a batch times the solution
only when some cell first runs past the floor (`pending`, `request`): until then a cell's limit is
the floor, and a cell that reaches it waits (still running) for the solution's times, then for
the rest of its own limit. A class whose cells all end in time never runs the solution.

A cell the solution does not have (one the student added) gets the same rule with the solution's
whole notebook as its time; the grader's own first cell gets the course's limit. A loop is stopped
in seconds; a correct answer that is slower keeps its marks: with the defaults (10x, at least
10 s) a cell may take 5 s more than the solution's however short that is, and ten times as long
however long. Cells are named by their grade id (nbgrader's cells) or else their cell id.

    CellTimeLimits(parent=execute).limit(cell)  ->  TimeLimit(seconds=10, why="...")

The solution's times are kept beside the grades (`grades/<assignment>/solution_times.json`), with
a key made of the solution notebooks' bytes and what the kernel runs with on this host
(`solution_key`): a batch run again on the same machine with the same solutions takes them from
there (`kept_times`) instead of timing the solution again.

    key = solution_key(notebooks, threads=1, sandbox=True, fork_kernels=True)
    times = kept_times(path, key) or <time the solution>;  keep_times(path, key, times)
"""
import hashlib
import json
import os
import platform
import sys
from dataclasses import dataclass

from traitlets import Dict, Float, Unicode
from traitlets.config import LoggingConfigurable


@dataclass(frozen=True)
class TimeLimit:
    """The seconds one cell may run and why that many (shown where the cell hit it)."""
    seconds: int
    why: str


def cell_key(cell) -> str:
    """The name a cell keeps from the source notebook to the student's: its grade id, else its id."""
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or str(cell.get("id") or "")


class CellTimeLimits(LoggingConfigurable):
    """Each cell's limit from the model solution's time in it (see the module's docstring)."""

    timeout_factor = Float(10.0, help="a cell may run this many times the model solution's time in it (0: every "
                           "cell gets the course's limit, Execute.timeout, as in stock nbgrader)").tag(config=True)
    timeout_floor = Float(10.0, help="seconds every cell may run however fast the model solution is (a correct "
                          "answer this much slower than a quick solution keeps its marks)").tag(config=True)
    solution_seconds = Dict(help="{notebook: {cell name: seconds}} of the model solution, measured in the batch's "
                            "warm-up (empty: the course's limit everywhere)").tag(config=True)
    solution_seconds_file = Unicode("", help="where solution_seconds (if empty) appear while the batch runs (the "
                                    "solution is timed beside the first students): read once it exists; until "
                                    "then a cell gets the course's limit").tag(config=True)

    def _times(self) -> dict:
        if not self.solution_seconds and self.solution_seconds_file and os.path.exists(self.solution_seconds_file):
            with open(self.solution_seconds_file) as f:
                self.solution_seconds = json.load(f) or {}
        return self.solution_seconds

    def pending(self, cap: int | None) -> bool:
        """Whether the solution's times are still to come (a file to read, not there yet) where they
        would matter: then a cell may run the floor before its limit is known."""
        return (self.timeout_factor > 0 and bool(cap) and cap > 0 and self.timeout_floor < cap
                and not self._times() and bool(self.solution_seconds_file)
                and not os.path.exists(self.solution_seconds_file))

    def request(self) -> None:
        """Ask the batch to time the model solution (a cell ran past the floor): `wanted(file)` appears."""
        with open(wanted(self.solution_seconds_file), "a"):
            pass

    def limit(self, cell, notebook: str, cap: int | None) -> TimeLimit | None:
        """The limit of `cell` of `notebook`; None where the course's limit `cap` applies unchanged."""
        times = self._times().get(notebook)
        if not times or self.timeout_factor <= 0 or not cap or cap < 0:
            return None
        key = cell_key(cell)
        if key in times:
            solution, what = times[key], f"its {times[key]:.2f} s in this cell"
        else:
            solution = sum(times.values())
            what = f"its {solution:.2f} s for the whole notebook, which has no such cell"
        derived = max(self.timeout_floor, self.timeout_factor * solution)
        if derived >= cap:
            return None
        seconds = max(1, round(derived))
        why = (f"more than {self.timeout_factor:g} times the model solution's time ({self.timeout_factor:g} x "
               f"{what}; at least {self.timeout_floor:g} s, at most the course's {cap} s)")
        return TimeLimit(seconds, why)


def wanted(times_file) -> str:
    """The file whose appearance asks the batch to time the solution into `times_file`."""
    return f"{times_file}.wanted"


def solution_key(notebooks, **kernel) -> str:
    """What the solution's times depend on: the solution notebooks' bytes, this host (its name,
    CPUs, Python) and how its kernel runs (`kernel`, e.g. threads, sandbox)."""
    h = hashlib.sha256(json.dumps([platform.node(), os.cpu_count(), sys.version, sorted(kernel.items())],
                                  default=str).encode())
    for path in sorted(notebooks):
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def kept_times(path, key: str) -> dict:
    """The times kept at `path` under `key` ({} where there are none, or others, or the file is damaged)."""
    try:
        with open(path) as f:
            kept = json.load(f)
        return kept["times"] if kept.get("key") == key and isinstance(kept.get("times"), dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def keep_times(path, key: str, times: dict) -> None:
    """Keep `times` at `path` under `key` for the next batch (nothing kept for an empty measure)."""
    if not times:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"key": key, "times": times}, f, indent=1)
    os.replace(tmp, path)
