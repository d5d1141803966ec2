"""Record: one student's Outcome into its Row (scores read from the gradebook), saved at once.

    finish = Finisher(root, assignment, gradebook, state.save, bar)
    finish(job, outcome)        # by the runner (or a Dask task's result), once per student

`fill_row` is the one place an Outcome's fields go into a Row; `Finisher` reads the scores for it
once per student; `final_rows` reads them again only for students this run did not score.

The row goes to state.log as soon as it is known (state.py); grades.csv and the report are
written from the rows at the end of the batch (report.py).
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

from dlcourse.grading.outcome import Job, Outcome, Row



def scores(gb, assignment: str, student: str) -> dict:
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


@dataclass
class Finisher:
    """Scores (or a Failure's reason) into the student's row, saved to state.json at once."""
    root: Path
    assignment: str
    gradebook: object   # the batch's own nbgrader Gradebook (`scores` closes it after each read)
    save: object
    bar: object
    scored: set = field(default_factory=set)   # the students whose scores were read in this run

    def __call__(self, job: Job, outcome: Outcome, worker: str = "local") -> None:
        graded, notes = {}, []
        if outcome.success:
            graded = scores(self.gradebook, self.assignment, job.student)
            notes = cell_notes(self.root, self.assignment, job.student)
            self.scored.add(job.student)
        fill_row(job.row, outcome, graded, notes, worker)
        self.save(job.student, job.row)
        self.bar.update(1)


def fill_row(row: Row, outcome: Outcome, graded: dict, notes: list, worker: str = "local") -> Row:
    """The one way an Outcome becomes the student's Row (changed in place, and returned): a
    success's scores (`graded`, from `scores`: read once, by the caller), status, integrity flags
    and the limits its cells hit (`notes`: `cell_notes`); a failure's reason and finality; then the
    outcome's own notes, the attempt's wall time and stages and where it ran."""
    if outcome.success:
        row.update({k: v for k, v in graded.items() if k != "late"})
        row["status"] = "late" if graded["late"] else "graded"
        row["flags"] = sorted(set(row["flags"]) | set(outcome.integrity))
        row["notes"] += notes
    else:
        row.update(status="failed", reason=outcome.reason, final=outcome.final)
    row["notes"] += [n for n in outcome.notes if n not in row["notes"]]
    row["seconds"] = outcome.seconds  # wall time of this student's grading
    if outcome.stages:
        row["stages"] = outcome.stages
    row["worker"] = worker
    return row



def final_rows(state: dict, students: set, finish: Finisher, gradebook, assignment: str) -> list[dict]:
    """The rows grades.csv gets: each of `students` that `state` knows, in order of their ids, with
    the scores as the gradebook has them now (manual grades given since the last run count), read
    again for those whose scores this run did not read (`finish.scored`)."""
    rows = [dict(state[s], student=s) for s in sorted(state) if s in students]
    for row in rows:
        if row.get("status") in ("graded", "late") and row["student"] not in finish.scored:
            fresh = scores(gradebook, assignment, row["student"])
            fresh.pop("late")
            row.update(fresh)
    return rows


def cell_notes(root: Path, assignment: str, student: str) -> list[str]:
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


def part_maxima(gb, assignment: str) -> dict:
    try:
        return {g.name: g.max_score for nb in gb.find_assignment(assignment).notebooks for g in nb.grade_cells}
    finally:
        gb.close()
