"""JupyterHub for the course on one teaching server: who the instructor and the students are, where
the course, the nbgrader exchange and the hub's own state live, and the JupyterHub settings that follow.

`hub/jupyterhub_config.py` is two lines, ``CourseHub().apply(c)``; `make hub` sets the environment:

    DLCOURSE_HUB_INSTRUCTOR   Unix account of the instructor (owns the course directory)   make HUB_INSTRUCTOR=
    DLCOURSE_HUB_STUDENTS     student accounts, separated by spaces or commas               make HUB_STUDENTS=
    DLCOURSE_HUB_ROSTER       or a file with one student account per line                   make HUB_ROSTER=
    DLCOURSE_HUB_PORT         the hub's port on 127.0.0.1 (the proxy's API uses port+1,    make HUB_PORT=
                              the hub itself port+2)
    DLCOURSE_HUB_IP           address to listen on (default 127.0.0.1; 0.0.0.0 behind TLS)  make HUB_IP=
    DLCOURSE_HUB_COURSE_DIR   the instructor's course directory (default: this checkout)    make HUB_COURSE_DIR=
    DLCOURSE_HUB_STATE        the hub's database, cookie secret and proxy pid file          make HUB_STATE=
    DLCOURSE_EXCHANGE         nbgrader's exchange folder (default /srv/nbgrader/exchange)   make HUB_EXCHANGE=
    DLCOURSE_HUB_API_TOKEN    optional: a token for the "course-admin" service (scripts, tests)

Accounts are real Unix users, logged in with PAM, each server started as its own user by JupyterHub's
local process spawner; accounts that do not exist yet are created with a private (0700) home and
bash, and the instructor's home is made private too. The instructor's server opens on the course
directory with formgrader (in JupyterLab's frame); a student's opens on their home with the
Assignments tab and no formgrader; there each submission reads with its score and "(view feedback)"
opens the feedback page (dlcourse.assignments and hub/labextensions/dlcourse-feedback). Validate
reports part by part (dlcourse.validate). Terminals are bash with the course's Python first on PATH.

What students may read of this checkout and of the course directory is an allow-list (`PUBLIC`:
the library, the lectures, the release, the hub's settings, the virtual environment); everything
else (git history, solutions, tests, benchmarks, students' work, grades, backups) is closed to
them (`close_course`): dlcourse.hub_access. Where the course's Python lies below a folder users
cannot enter, servers start in a bubblewrap view built as the grader's cage builds its sandbox
(dlcourse.grading.cage.reachable_view). To use a university login (OAuth, LTI) or containers
(DockerSpawner, KubeSpawner), set `c.JupyterHub.authenticator_class` / `c.JupyterHub.spawner_class`
after `apply` in hub/jupyterhub_config.py: nothing in the course's files depends on them.
"""
import os
import pwd
import re
import signal
import sys
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Integer, List, Unicode, default, validate
from traitlets.config import Configurable

from dlcourse.grading.cage import blocked_parent, reachable_view
from dlcourse.hub_access import (PRIVATE, PUBLIC, SECRET_MARKERS, close_course, close_home, has_password,
                                 prepare_exchange, protect_course, secret_lines)

__all__ = ["ACCOUNT", "HUB_FILES", "PRIVATE", "PUBLIC", "REPO", "SECRET_MARKERS", "CourseHub", "CourseSpawner",
           "HubConfigError", "blocked_parent", "close_course", "close_home", "default_workspace",
           "formgrader_redirects", "has_password", "main", "prepare_exchange", "protect_course", "reachable_view",
           "secret_lines", "seed_file"]

REPO = Path(__file__).resolve().parents[2]
HUB_FILES = REPO / "hub"
ACCOUNT = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")  # what useradd accepts by default


class HubConfigError(ValueError):
    """The hub's settings cannot work (a missing instructor, a bad account name, ...)."""


def _split(text: str) -> list[str]:
    return [w for w in re.split(r"[\s,]+", text.strip()) if w]


def _accounts(names: list[str]) -> list[str]:
    """The names, each checked, duplicates dropped (first kept)."""
    bad = [n for n in names if not ACCOUNT.match(n)]
    if bad:
        raise HubConfigError(f"not valid Unix account names: {bad} (lower-case letters, digits, _ and -)")
    return list(dict.fromkeys(names))


def formgrader_redirects() -> list[tuple]:
    """The hub's handlers for formgrader's links opened outside JupyterLab: formgrader (nbgrader
    0.9) links folders and notebooks to /tree/<path>, /notebooks/<path> and /edit/<path> without
    the server's base URL, which on the hub is /user/<name>/; the hub redirects them (served at
    /hub/tree/..., where the hub sends every path outside /hub/) to the same path in the JupyterLab
    of whoever is logged in."""
    from jupyterhub.handlers.base import BaseHandler
    from jupyterhub.utils import url_path_join

    class OpenInLab(BaseHandler):
        def get(self, path):
            self.redirect(url_path_join(self.hub.base_url, "user-redirect", "lab", "tree", path))

    return [(rf"/{kind}/(.*)", OpenInLab) for kind in ("tree", "notebooks", "edit")]


class CourseHub(Configurable):
    """The course's JupyterHub settings; every default can be set from the environment (see above)."""

    instructor = Unicode(help="Unix account of the instructor: admin of the hub, owner of the course "
                              "directory, the one user with formgrader").tag(config=True)
    students = List(Unicode(), help="Unix accounts of the students (created if missing)").tag(config=True)
    ip = Unicode(help="address the hub listens on").tag(config=True)
    port = Integer(help="the hub's public port; the proxy's API uses port+1 and the hub port+2").tag(config=True)
    course_dir = Unicode(help="the course directory (nbgrader_config.py, solutions/, exercises/)").tag(config=True)
    state_dir = Unicode(help="JupyterHub's database, cookie secret and proxy pid file").tag(config=True)
    exchange = Unicode(help="nbgrader's exchange folder, shared by everyone on the server").tag(config=True)
    api_token = Unicode(help="token of the 'course-admin' service (admin rights); empty: no service").tag(config=True)
    proxy = Unicode(help="the configurable-http-proxy program (make hub-proxy installs it)").tag(config=True)
    checkout = Unicode(str(REPO), help="the checkout every server runs from (its .venv and lib/); closed "
                                       "to students like the course directory").tag(config=True)

    @default("instructor")
    def _instructor(self):
        name = os.environ.get("DLCOURSE_HUB_INSTRUCTOR", "")
        return _accounts([name])[0] if name else ""

    @default("students")
    def _students(self):
        names = _split(os.environ.get("DLCOURSE_HUB_STUDENTS", ""))
        roster = os.environ.get("DLCOURSE_HUB_ROSTER")
        if roster:
            names += [n for line in Path(roster).read_text().splitlines()
                      if not line.lstrip().startswith("#") for n in _split(line)]
        return _accounts(names)

    @default("ip")
    def _ip(self):
        return os.environ.get("DLCOURSE_HUB_IP", "127.0.0.1")

    @default("port")
    def _port(self):
        return int(os.environ.get("DLCOURSE_HUB_PORT", "8000"))

    @default("course_dir")
    def _course_dir(self):
        return os.environ.get("DLCOURSE_HUB_COURSE_DIR", str(REPO))

    @default("state_dir")
    def _state_dir(self):
        return os.environ.get("DLCOURSE_HUB_STATE", str(REPO / ".hub-state"))

    @default("exchange")
    def _exchange(self):
        return os.environ.get("DLCOURSE_EXCHANGE", "/srv/nbgrader/exchange")

    @default("api_token")
    def _api_token(self):
        return os.environ.get("DLCOURSE_HUB_API_TOKEN", "")

    @default("proxy")
    def _proxy(self):
        return str(Path(sys.prefix) / "hub" / "node_modules" / ".bin" / "configurable-http-proxy")

    @validate("instructor")
    def _check_instructor(self, proposal):
        name = proposal["value"]
        if name and not ACCOUNT.match(name):
            raise HubConfigError(f"instructor {name!r} is not a valid Unix account name")
        return name

    @validate("students")
    def _check_students(self, proposal):
        return _accounts(proposal["value"])

    def check(self) -> None:
        """Raise HubConfigError for settings the hub cannot start with."""
        if not self.instructor:
            raise HubConfigError("name the instructor's Unix account: make hub HUB_INSTRUCTOR=<account> "
                                 "HUB_STUDENTS='<account> ...' (the course directory should belong to it)")
        if self.instructor in self.students:
            raise HubConfigError(f"{self.instructor!r} is both the instructor and a student")
        if not Path(self.course_dir, "nbgrader_config.py").is_file():
            raise HubConfigError(f"{self.course_dir} has no nbgrader_config.py: it is not a course directory")
        try:
            uid = pwd.getpwnam(self.instructor).pw_uid
        except KeyError:
            raise HubConfigError(f"there is no Unix account {self.instructor!r}: create it (useradd --create-home "
                                 f"{self.instructor}) and give it the course (chown -R {self.instructor}: "
                                 f"{self.course_dir})") from None
        if Path(self.course_dir).stat().st_uid != uid:
            raise HubConfigError(f"{self.course_dir} does not belong to the instructor: "
                                 f"chown -R {self.instructor}: {self.course_dir}")
        if not Path(self.proxy).is_file():
            raise HubConfigError(f"the proxy {self.proxy} is missing: run `make hub-proxy`")

    def user_environment(self, user: str) -> dict[str, str]:
        """Environment of a user's server: nbgrader's shared settings (exchange, course id) for everyone,
        and for students the settings that hide the instructor's tools."""
        config = [HUB_FILES / "config" / "common"]
        if user == self.instructor:  # the course's own nbgrader_config.py, whatever the working folder
            config[:0] = [Path(self.course_dir), HUB_FILES / "config" / "instructor"]
        else:
            config.insert(0, HUB_FILES / "config" / "student")
        return {
            "DLCOURSE_EXCHANGE": self.exchange,
            "JUPYTER_CONFIG_PATH": os.pathsep.join(str(p) for p in config),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        }

    def view(self) -> list[str]:
        """bubblewrap arguments that let every user reach the course's Python and files when they sit
        below a folder other users cannot enter (e.g. a Python under /root); [] when not needed."""
        needed = [Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(sys.executable)).parent,
                  REPO, Path(self.course_dir), Path(self.exchange)]
        return reachable_view(needed)

    def apply(self, c) -> None:
        """Fill a JupyterHub config object `c` (the `c` of jupyterhub_config.py)."""
        self.check()
        state = Path(self.state_dir)
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        prepare_exchange(Path(self.exchange))
        protect_course(Path(self.course_dir))
        for folder in dict.fromkeys([Path(self.checkout), Path(self.course_dir)]):
            close_course(folder)
        close_home(self.instructor)
        locked = [name for name in (self.instructor, *self.students) if not has_password(name)]
        if locked:  # PAM logs nobody in without one (OAuth, set after apply, needs none)
            print(f"warning: no password set for {', '.join(locked)}: they cannot log in to the hub until "
                  f"the administrator sets one (chpasswd)", file=sys.stderr)

        c.JupyterHub.bind_url = f"http://{self.ip}:{self.port}"
        c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{self.port + 2}"
        c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{self.port + 1}"
        c.ConfigurableHTTPProxy.command = [self.proxy]
        c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
        c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
        c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
        c.JupyterHub.pid_file = str(state / "jupyterhub.pid")

        c.JupyterHub.authenticator_class = "pam"
        c.Authenticator.allowed_users = {self.instructor, *self.students}
        c.Authenticator.admin_users = {self.instructor}
        c.LocalAuthenticator.create_system_users = True
        c.LocalAuthenticator.add_user_cmd = ["useradd", "--create-home", "--key", "HOME_MODE=0700",
                                             "--shell", "/bin/bash"]

        c.JupyterHub.extra_handlers = formgrader_redirects()

        c.JupyterHub.spawner_class = CourseSpawner
        c.CourseSpawner.view = self.view()
        c.Spawner.cmd = [str(Path(sys.executable).parent / "jupyterhub-singleuser")]
        c.Spawner.default_url = "/lab"
        c.Spawner.start_timeout = 120
        c.Spawner.http_timeout = 120
        c.Spawner.args = [f"--LabApp.app_settings_dir={REPO / 'jupyter' / 'lab' / 'settings'}",
                          f"--LabApp.extra_labextensions_path={HUB_FILES / 'labextensions'}"]
        c.Spawner.pre_spawn_hook = self.pre_spawn

        if self.api_token:
            c.JupyterHub.services = [{"name": "course-admin", "api_token": self.api_token}]
            c.JupyterHub.load_roles = [{"name": "course-admin", "services": ["course-admin"],
                                        "scopes": ["admin:users", "admin:servers", "tokens", "access:servers",
                                                   "read:users", "list:users"]}]

    def pre_spawn(self, spawner) -> None:
        """Per user: the instructor's server opens on the course, a student's on their home with
        the Assignments tab open (their first JupyterLab workspace)."""
        name = spawner.user.name
        spawner.environment.update(self.user_environment(name))
        if name == self.instructor:
            spawner.notebook_dir = self.course_dir
        else:
            spawner.first_workspace = str(HUB_FILES / "workspaces" / "student.jupyterlab-workspace")


def default_workspace(home: str) -> str:
    """The file of JupyterLab's workspace "default" (the one /lab opens) for a user with this home."""
    from jupyterlab_server.workspaces_handler import WORKSPACE_EXTENSION, slugify
    return os.path.join(home, ".jupyter", "lab", "workspaces", slugify("default") + WORKSPACE_EXTENSION)


def seed_file(path: str, content: bytes) -> bool:
    """Write `content` to `path` (0600, its folder 0700) unless something is there already,
    never through a symbolic link; True if written. Runs as the user (see `main`)."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    return True


class CourseSpawner(LocalProcessSpawner):
    """JupyterHub's local process spawner; where the course's Python cannot be reached by the users
    (see `reachable_view`), the server starts as root inside that bubblewrap view and `setpriv` then
    becomes the user (uid, gid and groups), instead of becoming the user before the server starts."""

    view = List(Unicode(), help="bubblewrap arguments of the view; empty: start servers as usual").tag(config=True)
    first_workspace = Unicode(help="a JupyterLab workspace file that becomes the user's default workspace "
                                   "when they have none (written as the user, just before the server starts)")

    def make_preexec_fn(self, name):
        """Start in the server's root folder (formgrader finds the course's config there); as the
        user, or as root when the view is used (setpriv becomes the user afterwards)."""
        become_user = super().make_preexec_fn(name) if not self.view else (lambda: None)
        home = pwd.getpwnam(name).pw_dir  # looked up here: the child of a threaded process should not
        start_in = self.format_string(self.notebook_dir) if self.notebook_dir else None
        if start_in and not os.path.isabs(start_in):  # "~/..." is the user's, not the hub's home
            start_in = os.path.join(home, start_in.removeprefix("~").lstrip("/"))

        def preexec():
            become_user()  # the stock spawner's: setgid, setuid and chdir to the home folder
            for folder in (start_in, home, "/"):
                if folder:
                    try:
                        os.chdir(folder)
                        return
                    except OSError:
                        continue
        return preexec

    async def _signal(self, sig):
        """The server runs under bubblewrap, which passes on no signal and dies of SIGINT: signal
        the whole process group instead (the stock spawner starts each server in a session of its
        own), with SIGTERM for SIGINT (a server without a terminal would only ask whether to stop),
        and count the server as running while anything in its group is."""
        if not self.view:
            return await super()._signal(sig)
        try:
            os.killpg(self.pid, signal.SIGTERM if sig == signal.SIGINT else sig)
        except ProcessLookupError:
            return False
        return True

    async def poll(self):
        """None while anything of the server's process group runs (bubblewrap may be gone first)."""
        pid = self.pid
        status = await super().poll()
        if status is not None and self.view and pid:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return status
            self.pid = pid  # the stock poll forgot it when bubblewrap exited
            return None
        return status

    async def start(self):
        """The server's command, preceded (as the user) by writing their first workspace, and
        where the view is used by bubblewrap and setpriv."""
        user = pwd.getpwnam(self.user.name)
        server = list(self.cmd)
        first = [sys.executable, "-m", "dlcourse.hub", "first-workspace", self.first_workspace,
                 default_workspace(user.pw_dir), "--"] if self.first_workspace else []
        become = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
        self.cmd = [*self.view, "--", *become, *first, *server] if self.view else [*first, *server]
        try:
            return await super().start()
        finally:
            self.cmd = server


def main(argv: list[str] | None = None) -> None:
    """`python -m dlcourse.hub first-workspace SOURCE TARGET -- COMMAND...`: run by each student's
    server as that student, before the server itself: copy SOURCE to TARGET if TARGET does not
    exist yet (`seed_file`), then become COMMAND."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 5 or args[0] != "first-workspace" or args[3] != "--":
        raise SystemExit("usage: python -m dlcourse.hub first-workspace SOURCE TARGET -- COMMAND...")
    seed_file(args[2], Path(args[1]).read_bytes())
    os.execvp(args[4], args[4:])


if __name__ == "__main__":
    main()
