"""What a student's Assignments tab says of a submission whose feedback they fetched: the score,
and a "(view feedback)" link to the feedback page itself.

nbgrader's tab lists each submission by its timestamp; "(view feedback)" shows the folder
`<assignment>/feedback/<timestamp>/` in the file browser, and the score is nowhere. FeedbackList, the
exchange's list for students (hub/config/student/nbgrader_config.py), fills in both from the
feedback already fetched:

    c.ExchangeFactory.list = "dlcourse.assignments.FeedbackList"

* the row reads "submitted 2027-03-01 16:59:12 UTC · score 13 / 15" (or "score so far 11 / 13, 2 more
  points awaiting grading by hand"), summed over the assignment's notebooks, as their feedback pages
  give it;
* the link's path is the feedback page itself where the assignment has one notebook (the file
  browser opens the folder with the page selected, and the hub's small JupyterLab extension
  hub/labextensions/dlcourse-feedback opens it).

Feedback released again after a new `make grade` reads "(feedback available to fetch)" as before,
with no score until it is fetched.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from nbgrader.exchange.default.list import ExchangeList

HEADER = re.compile(r"\((Score(?: so far)?):\s*([\d.]+)\s*/\s*([\d.]+)(?:;\s*([\d.]+) more points)?")


@dataclass
class Score:
    """A feedback page's score: points, out of (graded so far), and points awaiting a person."""
    points: float
    out_of: float
    awaiting: float = 0.0

    def __add__(self, other: Score) -> Score:
        return Score(self.points + other.points, self.out_of + other.out_of, self.awaiting + other.awaiting)

    def __str__(self) -> str:
        if self.awaiting:
            return (f"score so far {self.points:g} / {self.out_of:g}, {self.awaiting:g} more points "
                    "awaiting grading by hand")
        return f"score {self.points:g} / {self.out_of:g}"


def feedback_score(html: str) -> Score | None:
    """The score in a feedback page's header (the course's template and nbgrader's alike)."""
    found = HEADER.search(" ".join(re.sub(r"<[^>]+>", " ", html).split()))
    if not found:
        return None
    return Score(float(found.group(2)), float(found.group(3)), float(found.group(4) or 0))


def describe(submission: dict) -> dict:
    """One submission of nbgrader's listing, with its score in the row's text and the link on the
    feedback page (one notebook); changed in place and returned."""
    if not submission.get("has_local_feedback") or submission.get("feedback_updated"):
        return submission
    pages = [nb["local_feedback_path"] for nb in submission.get("notebooks", []) if nb.get("local_feedback_path")]
    scores = []
    for page in pages:
        try:
            with open(page, encoding="utf-8", errors="replace") as f:
                scores.append(feedback_score(f.read()))
        except OSError:
            scores.append(None)
    text = "submitted " + re.sub(r"\.\d+", "", submission["timestamp"])   # no microseconds
    if scores and None not in scores:
        text += f" · {sum(scores[1:], scores[0])}"
    submission["timestamp"] = text
    if len(pages) == 1 and submission.get("local_feedback_path"):
        submission["local_feedback_path"] = os.path.join(submission["local_feedback_path"], os.path.basename(pages[0]))
    return submission


class FeedbackList(ExchangeList):
    """nbgrader's exchange list; a student's submissions read with their score (see above)."""

    def parse_assignments(self):
        assignments = super().parse_assignments()
        if self.inbound or self.cached:
            for assignment in assignments:
                for submission in assignment["submissions"]:
                    describe(submission)
        return assignments
