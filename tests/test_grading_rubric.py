"""ShowRubric (lib/dlcourse/grading/rubric.py): formgrader's grading page shows the answer key and
marking rubric of a written answer, from the source notebook; the feedback never does.

The exporters are built as formgrader and `make grade` build theirs, from the course's own
nbgrader_config.py: formgrader's HTMLExporter with its "formgrade" template, the feedback's
FeedbackExporter."""
import copy
import re

import nbformat
import pytest
from nbconvert.exporters import HTMLExporter
from nbgrader.server_extensions.formgrader import handlers
from nbgrader_harness import REPO
from traitlets.config import Config, PyFileConfigLoader

from dlcourse.grading.feedback import FeedbackExporter
from dlcourse.grading.rubric import HEADING, ShowRubric, answer_keys

ASSIGNMENT, NOTEBOOK, WRITTEN = "ps_convolution", "convolution", "written_flip"
SOURCE = REPO / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
STUDENT_ANSWER = "Both kernels of the slides read the same backwards."


def course_config() -> Config:
    return PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config()


def student_notebook():
    """The release of ps_convolution with a written answer, as an autograded copy holds it."""
    nb = nbformat.read(REPO / "exercises" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == WRITTEN:
            cell.source = STUDENT_ANSWER
    return nb


def formgrader_page(nb) -> str:
    """The grading page of `nb` as formgrader renders it (handlers.SubmissionHandler)."""
    config = course_config()
    config.HTMLExporter.template_name = "formgrade"
    config.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    resources = {"assignment_id": ASSIGNMENT, "notebook_id": NOTEBOOK, "submission_id": "abc", "index": 0,
                 "total": 1, "base_url": "/user/teach", "student": "alice", "last_name": "", "first_name": "",
                 "notebook_path": f"autograded/alice/{ASSIGNMENT}/{NOTEBOOK}.ipynb"}
    html, _ = HTMLExporter(config=config).from_notebook_node(copy.deepcopy(nb), resources=resources)
    return html


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_the_source_notebook_holds_the_key_and_rubric_of_the_written_answer():
    kind, key = answer_keys(SOURCE)[WRITTEN]
    assert kind == "markdown" and "Marking rubric" in key and "BEGIN SOLUTION" not in key


def test_the_grading_page_shows_the_rubric_right_after_the_students_answer():
    text = text_of(formgrader_page(student_notebook()))
    answer, rubric, next_part = (text.find(STUDENT_ANSWER), text.find(HEADING),
                                 text.find("The answer key of part 6 is the instructor"))
    assert -1 < answer < rubric, (answer, rubric)
    assert "Marking rubric (2 points; half points allowed)" in text
    assert "an asymmetric length-3 kernel with both results right" in text
    assert rubric < next_part, "the rubric should sit between the answer and the next cell"


def test_the_grading_page_leaves_the_notebook_as_it_was():
    nb = student_notebook()
    before = copy.deepcopy(nb)
    formgrader_page(nb)
    assert nb == before


@pytest.mark.parametrize("exporter", [FeedbackExporter, HTMLExporter])
def test_other_exporters_with_the_same_settings_show_no_rubric(exporter):
    """The feedback's exporter reads the same c.HTMLExporter.preprocessors: it must not act there."""
    config = course_config()
    assert "dlcourse.grading.rubric.ShowRubric" in config.HTMLExporter.preprocessors
    resources = {"assignment_id": ASSIGNMENT, "notebook_id": NOTEBOOK}
    shown = [p for p in exporter(config=config)._preprocessors if isinstance(p, ShowRubric)]
    assert len(shown) == 1 and shown[0].enabled
    nb, _ = shown[0](student_notebook(), resources)
    assert nb == student_notebook()
