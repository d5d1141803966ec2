"""Render: MarkAwaitingGrades: the feedback says which parts await grading by hand.

nbgrader's feedback shows a written answer nobody has graded yet as "Score: 0.0 / 2.0" and counts
its points in the total (11 / 13), as if the student had lost them. This preprocessor runs after
GetGrades and marks every graded cell whose grade has neither an automatic nor a manual score
(`cell.metadata.nbgrader.awaiting = True`); `resources["nbgrader"]["awaiting_points"]` is the sum of
their points. The course's feedback template (feedback.py) reads both: such a cell reads
"awaiting grading by hand", and the header gives the score so far out of the points graded so far.

    c.GenerateFeedback.preprocessors = ["nbgrader.preprocessors.GetGrades",
                                        "dlcourse.grading.awaiting.MarkAwaitingGrades", ...]
"""
from nbgrader.api import Gradebook
from nbgrader.preprocessors import NbGraderPreprocessor


class MarkAwaitingGrades(NbGraderPreprocessor):
    """Mark the graded cells that no one has graded yet (neither automatic nor manual score)."""

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        with Gradebook(info["db_url"]) as gb:
            notebook = gb.find_submission_notebook(info["notebook"], info["assignment"], info["student"])
            pending = {g.name: g.max_score for g in notebook.grades
                       if g.auto_score is None and g.manual_score is None}
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") and meta.get("grade_id") in pending:
                meta["awaiting"] = True
        info["awaiting_points"] = sum(pending.values())
        return nb, resources
