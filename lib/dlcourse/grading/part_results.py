"""Render: PartResults: each part of the feedback opens with its result and the test's message.

In nbgrader's feedback the student scrolls through a part (instructions, their code, the test
cell's source) to its last cell to learn the score, and reads the failing check's message (the
named mistake: "you read the gates as i, f, o, g") under the test's code. This preprocessor puts
a short box at the top of every part: for each graded cell of the part its score out of its
points ("awaiting grading by hand" for a written answer nobody has graded yet, MarkAwaitingGrades)
and, for a test that failed, its error's name and message.

A part is the run of cells that ends with one or more graded cells; its box goes under the last
markdown cell before the part's first answer or graded cell (the task: "## Part 2 — ... Write
`corr2d`"), so the student reads the task, the result, then their answer; with no such markdown
cell, above that first answer. The box is a raw
HTML cell, rendered by nbconvert as it is; the message can be written by the student's code, so
every piece of it is escaped here. It runs after RedactHiddenSource and HideHiddenTests: the
message it shows is the one they left (never a quote of the hidden tests).

    c.GenerateFeedback.preprocessors = [..., "dlcourse.grading.preprocessors.HideHiddenTests",
                                        "dlcourse.grading.part_results.PartResults", ...]
"""
import html

from nbformat.v4 import new_raw_cell
from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor

AWAITING = "awaiting grading by hand"
# classes, not inline styles: nbconvert's classic template cleans a raw cell's HTML (bleach keeps
# `class`); the course's feedback template (feedback.py) styles them
PASSED, FAILED, WAITING = "dlcourse-passed", "dlcourse-failed", "dlcourse-awaiting"


def _points(value) -> str:
    return f"{float(value or 0):g}"


def _message(cell) -> str:
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if not errors:
        return ""
    return f"{errors[0].get('ename', 'Error')}: {errors[0].get('evalue', '')}".strip()


def _line(cell) -> tuple[str, str]:
    """(class, HTML) of one graded cell's result."""
    meta = cell.metadata.nbgrader
    name = f"<code>{html.escape(str(meta.get('grade_id', '')))}</code>"
    points = _points(meta.get("points"))
    if meta.get("awaiting"):
        unit = "point" if points == "1" else "points"
        return WAITING, f"{name}: {AWAITING} ({points} {unit})"
    score = _points(meta.get("score"))
    message = _message(cell) if cell.cell_type == "code" else ""
    text = f"{name}: {score} / {points}"
    if message:
        text += f' <span class="dlcourse-message">{html.escape(message)}</span>'
    return PASSED if float(score) >= float(points) else FAILED, text


def box(cells) -> str:
    """The HTML of one part's result box (`cells`: the part's graded cells)."""
    lines = [_line(c) for c in cells]
    kinds = {kind for kind, _ in lines}
    kind = FAILED if FAILED in kinds else WAITING if WAITING in kinds else PASSED
    items = "".join(f'<li class="{k}">{text}</li>' for k, text in lines)
    return f'<div class="dlcourse-part-result {kind}"><strong>Result of this part</strong><ul>{items}</ul></div>'


def parts(cells) -> list[tuple[int, list]]:
    """[(index of the part's first cell, its graded cells)] in notebook order."""
    found, start, graded = [], 0, []
    for i, cell in enumerate(cells):
        if utils.is_grade(cell):
            graded.append(cell)
            if i + 1 == len(cells) or not utils.is_grade(cells[i + 1]):
                found.append((start, graded))
                start, graded = i + 1, []
    return found


def top(cells, start: int) -> int:
    """Where the box of the part that starts at `start` goes: after the last markdown cell before
    the part's first answer or graded cell, else before that cell."""
    first = next(i for i in range(start, len(cells)) if utils.is_solution(cells[i]) or utils.is_grade(cells[i]))
    task = [i for i in range(start, first) if cells[i].cell_type == "markdown"]
    return task[-1] + 1 if task else first


class PartResults(NbGraderPreprocessor):
    """Insert a result box (scores, the failing test's message) at the top of every part."""

    def preprocess(self, nb, resources):
        for start, graded in reversed(parts(nb.cells)):
            nb.cells.insert(top(nb.cells, start), new_raw_cell(box(graded), metadata={"raw_mimetype": "text/html"}))
        return nb, resources
