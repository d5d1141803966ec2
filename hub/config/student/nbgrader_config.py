"""nbgrader settings of the students' servers on the course hub (hub/config/common has the shared
ones): the Assignments tab shows each submission's score and links its feedback page
(dlcourse/assignments.py)."""
c = get_config()  # noqa: F821 (injected by traitlets when nbgrader loads this file)

c.ExchangeFactory.list = "dlcourse.assignments.FeedbackList"
