"""Run the real nbgrader pipeline on a throw-away copy of the course.

Each grading test builds a temporary course (config + one or more assignments from
solutions/), releases it with `nbgrader generate_assignment`, writes student
submissions, runs `nbgrader autograde` / `generate_feedback` as an instructor would,
and reads the scores back from the gradebook.

    course = make_course(tmp_path, ["ps_convolution"])
    nb = solved(course, "ps_convolution", "convolution")            # the model answer
    course.submit("alice", "ps_convolution", "convolution", nb)
    course.autograde("ps_convolution")
    course.scores("ps_convolution", "convolution")["alice"]["parts"]["test_corr1d"]

The problem-set grading tests (test_grading_ps_*.py) build on it through ps_grading_harness.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


class Course:
    """A temporary course directory with the repository's nbgrader_config.py."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def nbgrader(self, *args, cell_timeout: int = 30, check: bool = False, threads: int | None = None) -> subprocess.CompletedProcess:
        """Run `nbgrader *args` in the course; threads: how many threads its kernels' torch and BLAS
        may start (None: their own default, one per core)."""
        env = dict(os.environ, DLCOURSE_CELL_TIMEOUT=str(cell_timeout), PYTHONHASHSEED="0")
        if threads is not None:
            env.update({name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
        # nbgrader runs `alembic` by name: the venv's bin must come first on PATH
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.pop("DLCOURSE_GRADEBOOK_URL", None)
        proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=self.root, env=env,
                              capture_output=True, text=True, timeout=900)
        if check and proc.returncode != 0:
            raise RuntimeError(f"nbgrader {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def path(self, *parts) -> Path:
        return self.root.joinpath(*parts)

    def read(self, *parts) -> nbformat.NotebookNode:
        return nbformat.read(self.path(*parts), as_version=4)

    def submit(self, student: str, assignment: str, notebook: str, nb) -> Path:
        """Write a submission: a notebook object, or raw text (for broken files)."""
        target = self.path("submitted", student, assignment, f"{notebook}.ipynb")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(nb, str):
            target.write_text(nb)
        else:
            nbformat.write(nb, target)
        return target

    def autograde(self, assignment: str, cell_timeout: int = 30, threads: int | None = None) -> subprocess.CompletedProcess:
        return self.nbgrader("autograde", assignment, "--force", cell_timeout=cell_timeout, threads=threads)

    def feedback(self, assignment: str) -> subprocess.CompletedProcess:
        return self.nbgrader("generate_feedback", assignment, "--force")

    def scores(self, assignment: str, notebook: str) -> dict:
        """{student: {"graded": bool, "parts": {grade_id: score}, "max": {grade_id: max}, "auto_total": float}}
        for every student in the gradebook with a submission. "graded" is nbgrader's own test:
        an autograded copy exists (it is removed when the notebook could not be graded), so a
        failed student is never mistaken for one who scored 0."""
        from nbgrader.api import Gradebook, MissingEntry

        result = {}
        with Gradebook(f"sqlite:///{self.path('gradebook.db')}", "dlcourse") as gb:
            for student in gb.students:
                try:
                    sub = gb.find_submission_notebook(notebook, assignment, student.id)
                except MissingEntry:
                    continue
                parts = {g.name: g.score for g in sub.grades}
                graded = self.path("autograded", student.id, assignment, f"{notebook}.ipynb").exists()
                result[student.id] = {
                    "graded": graded,
                    "parts": parts,
                    "max": {g.name: g.max_score for g in sub.grades},
                    "auto_total": sum(g.score for g in sub.grades if g.auto_score is not None),
                }
        return result


def make_course(tmp_path: Path, assignments: list[str]) -> Course:
    """Copy the config and the given assignments' sources into tmp_path and release them."""
    course = Course(tmp_path)
    shutil.copy(REPO / "nbgrader_config.py", course.root / "nbgrader_config.py")
    for a in assignments:
        shutil.copytree(REPO / "solutions" / a, course.path("solutions", a))
        course.nbgrader("generate_assignment", a, "--force", check=True)
    return course


def tiny_course(root: Path) -> Course:
    """A course at root (made here unless it exists) with the grader's test assignment, ps_tiny
    (fixtures/tiny_assignment.py), released: its own config, gradebook, feedback and grades."""
    from fixtures.tiny_assignment import ASSIGNMENT, write_source
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    write_source(root)
    course = Course(root)
    course.nbgrader("generate_assignment", ASSIGNMENT, "--force", check=True)
    return course


def strip_solution_markers(source: str) -> str:
    return "\n".join(line for line in source.split("\n") if not line.strip().startswith(SOLUTION_MARKERS))


def grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def solved(course: Course, assignment: str, notebook: str, overrides: dict | None = None) -> nbformat.NotebookNode:
    """The released notebook with every solution cell filled in from the source notebook
    (solution markers removed), as a diligent student would submit it.
    `overrides` maps grade_id -> source to plant a specific (e.g. wrong) answer."""
    overrides = dict(overrides or {})
    answers = model_answers(course, assignment, notebook)
    nb = course.read("exercises", assignment, f"{notebook}.ipynb")
    for cell in nb.cells:
        gid = grade_id(cell)
        if gid in overrides:
            cell.source = overrides.pop(gid)
        elif gid in answers:
            cell.source = answers[gid]
    if overrides:
        raise KeyError(f"no cells with grade ids {sorted(overrides)} in {assignment}/{notebook}")
    return nb


def graded_test_ids(course: Course, assignment: str, notebook: str) -> list[str]:
    """grade_ids of the autograded test cells, in notebook order."""
    nb = course.read("solutions", assignment, f"{notebook}.ipynb")
    return [grade_id(c) for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution")]


def model_answers(course: Course, assignment: str, notebook: str) -> dict:
    """{grade_id: source} of every solution cell of the source notebook, solution markers removed."""
    source = course.read("solutions", assignment, f"{notebook}.ipynb")
    return {grade_id(c): strip_solution_markers(c.source) for c in source.cells
            if c.get("metadata", {}).get("nbgrader", {}).get("solution")}


def submit_class(course: Course, assignment: str, notebook: str, planted: dict[str, dict]) -> None:
    """Submit the class every grading test starts from: `alice` hands in the model answer,
    `bob` the untouched release, and every other student the model answer with the cells
    of `planted[student]` (grade_id -> source) replaced."""
    course.submit("alice", assignment, notebook, solved(course, assignment, notebook))
    course.submit("bob", assignment, notebook, course.read("exercises", assignment, f"{notebook}.ipynb"))
    for student, cells in planted.items():
        course.submit(student, assignment, notebook, solved(course, assignment, notebook, cells))


def part_scores(scores: dict, student: str, points: dict) -> dict:
    """{grade_id: score} of one student's autograded parts (those in `points`); fails clearly
    when the notebook was not graded at all, so a crash never reads as a row of zeros."""
    assert scores[student]["graded"], f"{student}'s notebook was not graded"
    return {k: v for k, v in scores[student]["parts"].items() if k in points}
