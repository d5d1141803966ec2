"""nbgrader configuration for the course (read by every `nbgrader` command run here).

Layout: solutions/<assignment>/<notebook>.ipynb is the instructor's source,
exercises/<assignment>/<notebook>.ipynb the student release; students' work lives in
submitted/, autograded/ and feedback/ (git-ignored).

Environment variables:
  DLCOURSE_GRADEBOOK_URL  any SQLAlchemy URL (e.g. postgresql://user@host/db);
                          default: sqlite:///<course root>/gradebook.db
  DLCOURSE_CELL_TIMEOUT   seconds one cell may run while grading (default 300)
"""
import os
from pathlib import Path

c = get_config()  # noqa: F821 (injected by traitlets when nbgrader loads this file)

ROOT = Path(__file__).resolve().parent

c.CourseDirectory.root = str(ROOT)
c.CourseDirectory.course_id = "dlcourse"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.db_url = os.environ.get(
    "DLCOURSE_GRADEBOOK_URL", f"sqlite:///{ROOT / 'gradebook.db'}"
)

# Training cells take tens of seconds on a laptop CPU; an endless loop is cut off here
# and only the cell that hangs loses its points (the kernel is interrupted, not killed).
c.Execute.timeout = int(os.environ.get("DLCOURSE_CELL_TIMEOUT", "300"))
c.Execute.interrupt_on_timeout = True

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# A student who deletes a test cell must not lose (or dodge) its points: put it back.
c.OverwriteCells.add_missing_cells = True

# Any stderr output zeroes a test cell in nbgrader. Harmless library warnings
# (torch, numpy, matplotlib) must not cost a correct answer its marks.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"\w*Warning\b"

# Late work (after the due date given with `nbgrader db assignment add --duedate` or
# `dlcourse-grade --duedate`) scores 0; set "none" to grade late work like the rest.
c.LateSubmissionPlugin.penalty_method = "zero"

# What formgrader shows of a student's notebook is the stored autograded copy, on the
# instructor's own origin: clean the student's HTML before it is stored (`make grade` does the
# same with its sandboxed Execute; this covers a plain `nbgrader autograde`).
from nbgrader.converters import Autograde  # noqa: E402

c.Autograde.autograde_preprocessors = [*Autograde.class_traits()["autograde_preprocessors"].default(),
                                       "dlcourse.grading.sanitize.SanitizeStudentOutput"]

# Feedback must not show hidden tests: neither their source, nor their tracebacks, nor an
# output that quotes them; and no student HTML that could run in the reader's browser.
# A part awaiting grading by hand says so (not "0 / 2"); each part opens with its result and the
# failing test's message; the math is MathML, readable offline (no MathJax from a CDN).
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "dlcourse.grading.awaiting.MarkAwaitingGrades",
    "dlcourse.grading.sanitize.SanitizeStudentOutput",
    "dlcourse.grading.redact.RedactHiddenSource",
    "dlcourse.grading.preprocessors.HideHiddenTests",
    "dlcourse.grading.part_results.PartResults",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
c.GenerateFeedback.exporter_class = "dlcourse.grading.feedback.FeedbackExporter"
c.FeedbackExporter.offline_math = True
c.FeedbackExporter.template_file = "dlcourse_feedback.html.j2"

# Formgrader's grading page: each answer graded by hand is followed by its answer key and marking
# rubric from solutions/ (the page only: the stored notebook, the scores and the feedback are
# untouched; rubric.py acts only under formgrader's template).
c.HTMLExporter.preprocessors = ["dlcourse.grading.rubric.ShowRubric"]
