"""JupyterHub configuration of the course (`make hub` starts `jupyterhub -f hub/jupyterhub_config.py`).

The settings come from the environment that `make hub` sets (HUB_INSTRUCTOR, HUB_STUDENTS, ...);
dlcourse.hub.CourseHub documents each one. To switch to a university login or to containers, add
after `apply`, for example:

    c.JupyterHub.authenticator_class = "generic-oauth"     # pip install oauthenticator; or "ltiauthenticator"
    c.JupyterHub.spawner_class = "docker"                  # pip install dockerspawner

Both need the same nbgrader settings in the user's server: mount the exchange and set
DLCOURSE_EXCHANGE and JUPYTER_CONFIG_PATH as CourseHub.user_environment does.
"""
from dlcourse.hub import CourseHub

c = get_config()  # noqa: F821 (injected by traitlets when JupyterHub loads this file)

CourseHub(config=c).apply(c)
