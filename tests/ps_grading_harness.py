"""One harness for the problem-set grading tests (`tests/test_grading_ps_*.py`).

Each of those files declares its assignment as a `ProblemSet` and grades a class of students with
the real nbgrader (`nbgrader_harness`): alice hands in the model answer, bob the untouched release,
and every other student the model answer with named answers planted in it. The tables, with the same
names in every file:

    MISTAKES            common wrong answers: each scores 0 on the parts it `costs`, and only there
    CORRECT             correct answers written differently: full marks
    REFERENCE_CALLS     answers that call what the exercise asks to write (torch, dlcourse, SciPy...):
                        0 on the parts they cost, and the grader names the call
    STUDENTS            student -> the answers planted in the model answer
    VISIBLE_CHECKS_SAY  (student, part) -> what the release's own checks raise, before the hidden tests
    HIDDEN_TESTS_SAY    (student, part) -> what a hidden test raises once the visible checks passed

`ProblemSetTests` generates the tests they share; a file subclasses it with its `ps` and adds only
the tests that are its own:

    class TestNeurons(ProblemSetTests):
        ps = PS

        def test_in_place_change_of_the_input_is_reported(self, graded):
            assert graded.cell("frank", "test_cross_entropy").ename == "InputModifiedError"
"""
import fcntl
import os
import pickle
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache

import pytest

from nbgrader_harness import REPO, Course, grade_id, graded_test_ids, make_course, model_answers, part_scores, submit_class


@dataclass(frozen=True)
class Answer:
    """One planted answer: whole cells, string edits of the model answer, or both.

    cells: grade_id -> the source of a whole solution cell, which no other answer may touch.
    edits: (cell ids joined by "+", old, new): `old` must occur in one of those cells, as the model
        answer or the student's earlier edits left it.
    costs: the graded parts it must score 0 on (none for a correct answer).
    calls: for a reference call, what the grader's message says of the call (the name it gives it).
    """
    cells: Mapping[str, str] = field(default_factory=dict)
    edits: tuple[tuple[str, str, str], ...] = ()
    costs: tuple[str, ...] = ()
    calls: str = ""

    def touches(self) -> set[str]:
        return set(self.cells) | {gid for gids, _, _ in self.edits for gid in gids.split("+")}


def whole(cell: str, source: str, *costs: str, calls: str = "") -> Answer:
    """The whole of solution cell `cell` replaced by `source`."""
    return Answer(cells={cell: source}, costs=costs, calls=calls)


def edit(cells: str, pairs: list[tuple[str, str]], *costs: str) -> Answer:
    """The model answer of `cells` ("a" or "a+b") with each (old, new) of `pairs` applied."""
    return Answer(edits=tuple((cells, old, new) for old, new in pairs), costs=costs)


def plant(answers: list[Answer], model: Mapping[str, str]) -> dict[str, str]:
    """{solution cell: source} of a submission: the model answer with every one of `answers` planted."""
    cells, replaced = {}, set()
    for answer in answers:
        for gid, source in answer.cells.items():
            assert gid not in cells, f"cell {gid} is planted twice"
            cells[gid] = source
            replaced.add(gid)
        for gids, old, new in answer.edits:
            for gid in gids.split("+"):
                current = cells.get(gid, model[gid])
                if old in current:
                    assert gid not in replaced, f"cell {gid} is planted twice"
                    cells[gid] = current.replace(old, new)
                    break
            else:
                raise AssertionError(f"cannot plant {old!r}: it is not in the model answer of {gids}")
    return cells


@cache
def model_answer(assignment: str, notebook: str) -> dict[str, str]:
    """{grade_id: source} of the solution cells of the repository's source notebook."""
    return model_answers(Course(REPO), assignment, notebook)


@dataclass(frozen=True)
class ProblemSet:
    """An assignment and the class that tests its grading (see the module's docstring)."""
    assignment: str
    notebook: str
    points: Mapping[str, int]  # autograded test cell -> points, in notebook order
    written: Mapping[str, int]  # hand-graded answer cell -> points
    mistakes: Mapping[str, Answer]
    correct: Mapping[str, Answer]
    reference_calls: Mapping[str, Answer]
    students: Mapping[str, list[str]]
    visible_checks_say: Mapping[tuple[str, str], str | tuple[str, ...]] = field(default_factory=dict)
    hidden_tests_say: Mapping[tuple[str, str], str] = field(default_factory=dict)
    banner: str = "visible tests passed"  # what the visible checks print once they pass
    cell_timeout: int = 30
    keeps_at_least: int = 0  # scored parts every student keeps, to show that nothing spills over
    feedback: bool = False  # also run `nbgrader generate_feedback`
    more_submissions: Callable[[Course, "ProblemSet"], None] | None = None  # after the class, before grading

    def answers(self) -> dict[str, Answer]:
        return {**self.mistakes, **self.correct, **self.reference_calls}

    def planted(self, student: str) -> dict[str, str]:
        """{solution cell: source} that `student` hands in instead of the model answer."""
        answers = self.answers()
        return plant([answers[name] for name in self.students[student]], model_answer(self.assignment, self.notebook))

    def expected(self, student: str) -> dict[str, int]:
        """{part: score}: the points of every part, but 0 on those the student's answers cost."""
        answers = self.answers()
        lost = {part for name in self.students.get(student, []) for part in answers[name].costs}
        return {part: 0 if part in lost else pts for part, pts in self.points.items()}

    def planter(self, name: str) -> str:
        return next(student for student, names in self.students.items() if name in names)


@dataclass(frozen=True)
class CellOutput:
    """What one graded cell of an autograded notebook printed and raised."""
    printed: str  # the stream outputs
    errors: list  # the error outputs, in order
    text: str  # every output's text and error message, one line per output

    @property
    def ename(self) -> str:
        return self.errors[0].ename if self.errors else ""

    @property
    def error(self) -> str:
        """The message of the first error ("" when the cell raised none)."""
        return self.errors[0].evalue if self.errors else ""


@dataclass(frozen=True)
class Graded:
    """A graded class: the course, nbgrader's runs and the gradebook's scores."""
    ps: ProblemSet
    course: Course
    autograde: subprocess.CompletedProcess
    feedback: subprocess.CompletedProcess | None
    scores: dict

    def parts(self, student: str) -> dict[str, int]:
        return part_scores(self.scores, student, self.ps.points)

    def notebook(self, student: str):
        return self.course.read("autograded", student, self.ps.assignment, f"{self.ps.notebook}.ipynb")

    def cell(self, student: str, gid: str) -> CellOutput:
        outputs = next(c for c in self.notebook(student).cells if grade_id(c) == gid).get("outputs", [])
        return CellOutput(printed="".join(o.get("text", "") for o in outputs if o.output_type == "stream"),
                          errors=[o for o in outputs if o.output_type == "error"],
                          text="\n".join(o.get("text", "") + o.get("evalue", "") for o in outputs))

    def log(self) -> str:
        return self.autograde.stdout[-3000:] + self.autograde.stderr[-3000:]


def grade(ps: ProblemSet, root) -> Graded:
    """Release the assignment in a course at `root`, submit the class, autograde it."""
    course = make_course(root, [ps.assignment])
    submit_class(course, ps.assignment, ps.notebook, {student: ps.planted(student) for student in ps.students})
    if ps.more_submissions:
        ps.more_submissions(course, ps)
    # one thread per kernel, as the batch grader's kernels have: beside the other test worker, more only spin
    autograde = course.autograde(ps.assignment, cell_timeout=ps.cell_timeout, threads=1)
    feedback = course.feedback(ps.assignment) if ps.feedback else None
    return Graded(ps, course, autograde, feedback, course.scores(ps.assignment, ps.notebook))


def grade_once(ps: ProblemSet, tmp_path_factory) -> Graded:
    """`grade(ps)` once per test session: under pytest-xdist the first worker that needs it grades
    the class, the others wait for it and read its course and scores (grading is the slow part)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return grade(ps, tmp_path_factory.mktemp("course"))
    shared = tmp_path_factory.getbasetemp().parent / ps.assignment  # this session's, for every worker
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = shared / "graded.pickle"
        if not result.exists():
            (shared / "course").mkdir()
            graded = grade(ps, shared / "course")
            result.write_bytes(pickle.dumps((graded.autograde, graded.feedback, graded.scores)))
        autograde, feedback, scores = pickle.loads(result.read_bytes())
    return Graded(ps, Course(shared / "course"), autograde, feedback, scores)


class ProblemSetTests:
    """The tests every problem set shares, generated from the subclass's `ps`."""
    ps: ProblemSet

    @pytest.fixture(scope="class")
    @classmethod
    def graded(cls, tmp_path_factory) -> Graded:
        return grade_once(cls.ps, tmp_path_factory)

    def pytest_generate_tests(self, metafunc):
        cases = {"test_each_student_scores_exactly_as_planted": ("student", sorted(self.ps.students)),
                 "test_reference_calls_score_zero_and_say_why": ("name", sorted(self.ps.reference_calls)),
                 "test_the_visible_checks_say_what_is_wrong": ("student, part", sorted(self.ps.visible_checks_say)),
                 "test_the_hidden_tests_explain_what_the_visible_checks_miss": (
                     "student, part", sorted(self.ps.hidden_tests_say))}
        if metafunc.function.__name__ in cases:
            metafunc.parametrize(*cases[metafunc.function.__name__])

    # ------------------------------------------------------------------ the tables themselves
    def test_tables_are_complete(self):
        ps = self.ps
        answers = ps.answers()
        assert len(answers) == len(ps.mistakes) + len(ps.correct) + len(ps.reference_calls), "a name in two tables"
        assert len(ps.mistakes) >= 10 and len(ps.correct) >= 4 and len(ps.reference_calls) >= 3
        planted = [name for names in ps.students.values() for name in names]
        assert sorted(planted) == sorted(answers), "every answer is planted exactly once"
        assert not {"alice", "bob"} & set(ps.students), "alice and bob hand in the model answer and the release"
        assert all(a.costs and set(a.costs) <= set(ps.points) for a in [*ps.mistakes.values(), *ps.reference_calls.values()])
        assert not any(a.costs for a in ps.correct.values()), "a correct answer costs nothing"
        cells = set(model_answer(ps.assignment, ps.notebook)) - set(ps.written)
        for table in (ps.mistakes, ps.correct):
            planted_cells = set().union(*(a.touches() for a in table.values()))
            assert planted_cells == cells, f"every answer cell is planted: {sorted(planted_cells ^ cells)}"
        for student in ps.students:
            ps.planted(student)  # every edit applies and no cell is planted twice
            kept = sum(pts > 0 for pts in ps.expected(student).values())
            assert kept >= ps.keeps_at_least, f"{student} leaves too few parts to show that nothing spills over"
        for student, part in [*ps.visible_checks_say, *ps.hidden_tests_say]:
            assert student in ps.students and part in ps.points, (student, part)

    def test_point_table_matches_the_notebook(self, graded):
        assert graded_test_ids(graded.course, self.ps.assignment, self.ps.notebook) == list(self.ps.points)

    # --------------------------------------------------------------------------- scores
    def test_model_answer_gets_full_marks(self, graded):
        alice = graded.scores["alice"]
        assert graded.parts("alice") == dict(self.ps.points), graded.log()
        assert alice["auto_total"] == sum(self.ps.points.values())
        assert {gid: alice["max"][gid] for gid in self.ps.written} == dict(self.ps.written), "waits for a human"

    def test_untouched_release_gets_zero(self, graded):
        assert graded.parts("bob") == dict.fromkeys(self.ps.points, 0)
        # an unchanged written answer needs no manual grading: it scores 0 at once
        assert {gid: graded.scores["bob"]["parts"][gid] for gid in self.ps.written} == dict.fromkeys(self.ps.written, 0)

    def test_each_student_scores_exactly_as_planted(self, graded, student):
        assert graded.parts(student) == self.ps.expected(student), f"{student} ({', '.join(self.ps.students[student])})"

    # ------------------------------------------------------------- what the student is told
    def test_reference_calls_score_zero_and_say_why(self, graded, name):
        """The visible check of the part already names the call, before the student hands in."""
        answer = self.ps.reference_calls[name]
        for part in answer.costs:
            cell = graded.cell(self.ps.planter(name), part)
            assert cell.ename == "ReferenceUsedError", (part, cell.text)
            assert "reference implementation" in cell.error and "scores 0" in cell.error, (part, cell.error)
            assert answer.calls in cell.error, (part, cell.error)
            assert "passed" not in cell.printed, f"{part}: the visible check should already name the call"

    def test_the_visible_checks_say_what_is_wrong(self, graded, student, part):
        said = self.ps.visible_checks_say[(student, part)]
        cell = graded.cell(student, part)
        assert self.ps.banner not in cell.printed, (student, part, cell.printed)
        assert all(words in cell.error for words in ([said] if isinstance(said, str) else said)), (student, part, cell.text)

    def test_the_hidden_tests_explain_what_the_visible_checks_miss(self, graded, student, part):
        cell = graded.cell(student, part)
        assert self.ps.banner in cell.printed, (student, part, cell.printed)
        assert cell.ename == "AssertionError" and cell.error, (student, part, cell.text)
        assert self.ps.hidden_tests_say[(student, part)] in cell.error, (student, part, cell.error)
