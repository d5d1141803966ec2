"""nbgrader settings every user's server on the course hub shares (instructor and students):
which course this is and where the exchange is. The hub puts this folder on JUPYTER_CONFIG_PATH."""
import os

c = get_config()  # noqa: F821 (injected by traitlets when nbgrader loads this file)

c.CourseDirectory.course_id = "dlcourse"
c.Exchange.root = os.environ.get("DLCOURSE_EXCHANGE", "/srv/nbgrader/exchange")
