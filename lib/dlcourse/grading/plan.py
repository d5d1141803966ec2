"""Intake: the batch's plan: the gradebook made ready, every submission stored, validated and scanned.

    cfg, url, notebooks = prepare_gradebook(root, assignment, settings, students)
    jobs = plan(root, assignment, taken, notebooks, source_nbs, state, save)

Every file a student sent is kept unmodified in submitted/<student>/<assignment>/ (`store`);
each notebook is validated before it runs (JSON, format, schema, grade ids, name, kernelspec)
and the student's code scanned for grading hooks; a Job for each student to grade, a failed
Row (with its reason) for the others.
"""
import os
import shutil
from pathlib import Path

from dlcourse.grading import submissions as subs
from dlcourse.grading.integrity import static_scan
from dlcourse.grading.nbgrader_patches import index_gradebook
from dlcourse.grading.outcome import Job, Row
from dlcourse.grading.settings import Settings, course_config, course_id
from dlcourse.grading.validation import pick_notebook, validate


def prepare_gradebook(root: Path, assignment: str, settings: Settings, students: list[str]):
    """Assignment and students in the gradebook (serially, before any worker starts)."""
    from nbgrader.api import Gradebook, MissingEntry
    from nbgrader.apps import NbGraderAPI

    cfg = course_config(root, settings.db_url)
    url = cfg.CourseDirectory.db_url
    with Gradebook(url, course_id(cfg)) as gb:
        try:
            gb.find_assignment(assignment)
            known = True
        except MissingEntry:
            known = False
    if not known:
        result = NbGraderAPI(config=cfg).generate_assignment(assignment, force=True)
        if not result["success"]:
            raise RuntimeError(f"cannot put {assignment} into the gradebook:\n{result.get('error', '')}")
    with Gradebook(url, course_id(cfg)) as gb:
        if settings.duedate:
            gb.update_or_create_assignment(assignment, duedate=settings.duedate)
        index_gradebook(gb)   # each student's scores read without scanning the class's
        for s in students:
            gb.update_or_create_student(s)
        notebooks = [nb.name for nb in gb.find_assignment(assignment).notebooks]
    return cfg, url, notebooks


def store(root: Path, assignment: str, student: str, files: dict[str, bytes], timestamp: str | None,
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


def plan(root: Path, assignment: str, taken: "subs.Intake", notebooks: list, source_nbs: dict, state: dict,
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
            chosen, message = pick_notebook(files, nb)
            if chosen is None:
                row.update(status="failed", reason=message)
                break
            if message:
                row["notes"].append(message)
                to_grade[f"{nb}.ipynb"] = files[chosen]
            verdict = validate(files[chosen], source_nbs[nb])
            if not verdict.ok:
                row.update(status="failed", reason=verdict.reason)
                break
            row["notes"] += verdict.notes
            row["flags"] += static_scan(verdict.editable_sources)
        # a renamed notebook: the original stays as it was, a copy is graded
        copies = {} if "status" in row else {n: d for n, d in to_grade.items() if n not in files}
        store(root, assignment, student, files, None, sub.origin, copies)
        if "status" in row:
            save(student, row)
            continue
        jobs.append(Job(student, row))
    return jobs
