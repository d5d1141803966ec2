"""The Assignments tab's submission rows (lib/dlcourse/assignments.py): the score from the fetched
feedback, and the link on the feedback page itself. Run on an exchange laid out as nbgrader's
submit and fetch_feedback leave it in a student's account."""
import nbformat
import pytest
from nbgrader.auth import Authenticator
from nbgrader.coursedir import CourseDirectory
from nbgrader.exchange import ExchangeFactory
from traitlets.config import Config

from dlcourse.assignments import FeedbackList, Score, describe, feedback_score

STAMP = "2027-03-01 16:59:12.123456 UTC"


def page(header: str) -> str:
    return f'<div class="panel-heading">\n<h4>{header}</h4>\n<div id="toc"><ol><li>Score: 2.0 / 2.0</li></ol></div>'


@pytest.mark.parametrize("header, score", [
    ("convolution (Score: 13.0 / 15.0)", Score(13, 15)),
    ("convolution (Score so far: 11.5 / 13.0;\n 2.0 more points <span>awaiting grading by hand</span>)",
     Score(11.5, 13, 2)),
])
def test_the_score_comes_from_the_feedback_pages_header(header, score):
    assert feedback_score(page(header)) == score


def test_the_score_reads_as_a_student_would_say_it():
    assert str(Score(13, 15)) == "score 13 / 15"
    assert str(Score(11.5, 13, 2)) == "score so far 11.5 / 13, 2 more points awaiting grading by hand"
    assert str(Score(5, 6) + Score(8, 9, 1)) == "score so far 13 / 15, 1 more points awaiting grading by hand"


def listing(tmp_path, monkeypatch, feedback: str | None):
    """nbgrader's cached listing of alice's ps_convolution (submitted at STAMP) through FeedbackList,
    with `feedback` fetched into her assignment folder (None: not fetched)."""
    cache, home = tmp_path / "cache", tmp_path / "home"
    submitted = cache / "dlcourse" / f"alice+ps_convolution+{STAMP}"
    submitted.mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(), submitted / "convolution.ipynb")
    (home / "ps_convolution").mkdir(parents=True)
    (tmp_path / "exchange").mkdir(mode=0o777)
    (tmp_path / "exchange").chmod(0o777)   # as nbgrader wants the exchange
    if feedback is not None:
        folder = home / "ps_convolution" / "feedback" / STAMP
        folder.mkdir(parents=True)
        (folder / "convolution.html").write_text(feedback)
    monkeypatch.chdir(home)
    config = Config()
    config.CourseDirectory.course_id = "dlcourse"
    config.Exchange.root = str(tmp_path / "exchange")
    config.Exchange.cache = str(cache)
    config.ExchangeList.cached = True
    config.ExchangeFactory.list = "dlcourse.assignments.FeedbackList"
    lister = ExchangeFactory(config=config).List(coursedir=CourseDirectory(config=config),
                                                 authenticator=Authenticator(config=config), config=config)
    assert isinstance(lister, FeedbackList)
    (assignment,) = lister.start()
    (submission,) = assignment["submissions"]
    return home, submission


def test_a_submission_with_its_feedback_reads_its_score_and_links_the_page(tmp_path, monkeypatch):
    home, row = listing(tmp_path, monkeypatch, page("convolution (Score: 13.0 / 15.0)"))
    assert row["timestamp"] == "submitted 2027-03-01 16:59:12 UTC · score 13 / 15"
    assert row["local_feedback_path"] == str(home / "ps_convolution" / "feedback" / STAMP / "convolution.html")


def test_a_submission_without_feedback_is_listed_as_nbgrader_lists_it(tmp_path, monkeypatch):
    _, row = listing(tmp_path, monkeypatch, None)
    assert row["timestamp"] == STAMP and row["local_feedback_path"] is None


def test_feedback_released_again_shows_no_old_score():
    row = {"timestamp": STAMP, "has_local_feedback": True, "feedback_updated": True,
           "local_feedback_path": "ps_convolution/feedback/x", "notebooks": []}
    assert describe(dict(row)) == row
