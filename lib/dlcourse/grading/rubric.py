"""Render: ShowRubric, the answer key and marking rubric beside each answer graded by hand, on formgrader's
grading page.

Formgrader renders a student's stored autograded notebook with an HTMLExporter of its own (template
"formgrade"). That notebook has the student's answer and the hidden tests, but the key and rubric of a
written part live only in the instructor's source, solutions/<assignment>/<notebook>.ipynb, inside
the answer cell's ``### BEGIN SOLUTION`` region. This preprocessor of that exporter puts a read-only
markdown cell holding that region right after the student's answer:

    c.HTMLExporter.preprocessors = ["dlcourse.grading.rubric.ShowRubric"]     # nbgrader_config.py

Only the page changes: the stored notebook, the scores and the feedback stay as they are. The
setting also reaches the feedback's exporter (an HTMLExporter too), so the preprocessor does
nothing unless its exporter renders formgrader's template: a student never sees the rubric.
"""
import json
import re
from pathlib import Path

from nbconvert.preprocessors import Preprocessor
from nbformat.v4 import new_markdown_cell
from nbgrader.coursedir import CourseDirectory
from traitlets import Unicode

from dlcourse.grading.cells import is_graded_by_hand

SOLUTION = re.compile(r"^[ \t]*#+ *BEGIN SOLUTION[^\n]*\n(.*?)^[ \t]*#+ *END SOLUTION", re.S | re.M)
HEADING = "Answer key and marking rubric"


def answer_keys(source_notebook: Path) -> dict[str, tuple[str, str]]:
    """{grade_id: (cell type, key text)} of the cells graded by hand in an instructor's source
    notebook; the key is the cell's solution region (the whole cell where it has none)."""
    keys = {}
    for cell in json.loads(source_notebook.read_text(encoding="utf-8"))["cells"]:
        if is_graded_by_hand(cell):
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            regions = SOLUTION.findall(source)
            keys[cell["metadata"]["nbgrader"]["grade_id"]] = (cell["cell_type"],
                                                             "\n".join(regions).strip() or source.strip())
    return keys


def rubric_cell(grade_id: str, cell_type: str, key: str, where: str):
    """The read-only markdown cell shown after the answer `grade_id`."""
    body = key if cell_type == "markdown" else f"```python\n{key}\n```"
    return new_markdown_cell(
        f'<div class="dlcourse-rubric" style="border-left: 4px solid #f0ad4e; background: #fcf8e3; '
        f'padding: 0.2em 1em; margin: 0.5em 0">\n\n**{HEADING}** for `{grade_id}` (the instructor\'s, '
        f'from `{where}`; students never see it)\n\n{body}\n\n</div>',
        metadata={"dlcourse": {"rubric_for": grade_id}})


class ShowRubric(Preprocessor):
    """After each answer graded by hand, a markdown cell with its key and rubric from the source
    notebook; only in an exporter that renders `template` (formgrader's grading page)."""

    template = Unicode("formgrade", help="the exporter's template_name this preprocessor acts under "
                                         "(formgrader's grading page)").tag(config=True)

    def preprocess(self, nb, resources):
        assignment, notebook = resources.get("assignment_id"), resources.get("notebook_id")
        if getattr(self.parent, "template_name", None) != self.template or not assignment or not notebook:
            return nb, resources
        coursedir = CourseDirectory(config=self.config)
        source = Path(coursedir.format_path(coursedir.source_directory, ".", assignment), f"{notebook}.ipynb")
        if not source.is_file():
            self.log.warning("no source notebook %s: the grading page shows no rubric", source)
            return nb, resources
        keys = answer_keys(source)
        where = str(source.relative_to(coursedir.root)) if source.is_relative_to(coursedir.root) else str(source)
        cells = []
        for cell in nb.cells:
            cells.append(cell)
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if is_graded_by_hand(cell) and grade_id in keys:
                cells.append(rubric_cell(grade_id, *keys[grade_id], where))
        nb.cells = cells
        return nb, resources
