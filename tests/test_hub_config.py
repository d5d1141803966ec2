"""dlcourse.hub: the course's JupyterHub settings, checked without starting a hub
(tests/test_jupyterhub.py runs the real one)."""
import os
import pwd
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from dlcourse import hub
from dlcourse.hub import (
    PUBLIC,
    CourseHub,
    CourseSpawner,
    HubConfigError,
    blocked_parent,
    close_course,
    close_home,
    formgrader_redirects,
    protect_course,
    reachable_view,
)
from traitlets.config import Config

ME = pwd.getpwuid(os.getuid()).pw_name  # an account that exists and owns the test's course


@pytest.fixture(autouse=True)
def no_home_changes(monkeypatch):
    """apply() makes the instructor's home private: not the home of whoever runs these tests."""
    calls = []
    monkeypatch.setattr(hub, "close_home", calls.append)
    return calls


@pytest.fixture
def course(tmp_path, monkeypatch):
    for var in list(os.environ):
        if var.startswith("DLCOURSE_HUB_") or var == "DLCOURSE_EXCHANGE":
            monkeypatch.delenv(var)
    (tmp_path / "course").mkdir()
    (tmp_path / "course" / "nbgrader_config.py").write_text("c = get_config()\n")
    proxy = tmp_path / "configurable-http-proxy"
    proxy.write_text("#!/bin/sh\n")
    monkeypatch.setenv("DLCOURSE_HUB_COURSE_DIR", str(tmp_path / "course"))
    monkeypatch.setenv("DLCOURSE_HUB_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("DLCOURSE_EXCHANGE", str(tmp_path / "exchange"))
    # apply() closes the checkout the servers run from: the tests pass a stand-in (checkout=...)
    (tmp_path / "checkout").mkdir()
    return tmp_path, proxy


def test_settings_come_from_the_environment(course, monkeypatch):
    tmp, proxy = course
    monkeypatch.setenv("DLCOURSE_HUB_INSTRUCTOR", "teach")
    monkeypatch.setenv("DLCOURSE_HUB_STUDENTS", "alice, bob  carol,alice")
    roster = tmp / "roster.txt"
    roster.write_text("# section 2\ndave\n\nerin\n")
    monkeypatch.setenv("DLCOURSE_HUB_ROSTER", str(roster))
    monkeypatch.setenv("DLCOURSE_HUB_PORT", "8123")
    h = CourseHub()
    assert h.instructor == "teach"
    assert h.students == ["alice", "bob", "carol", "dave", "erin"]  # duplicates dropped, order kept
    assert h.port == 8123 and h.ip == "127.0.0.1"
    assert h.exchange == str(tmp / "exchange")


def test_apply_fills_the_jupyterhub_config(course, monkeypatch):
    tmp, proxy = course
    c = Config()
    CourseHub(instructor=ME, students=["alice", "bob"], port=8200, proxy=str(proxy), api_token="t0k",
              checkout=str(tmp / "checkout")).apply(c)
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8200"
    assert c.ConfigurableHTTPProxy.api_url == "http://127.0.0.1:8201"
    assert c.JupyterHub.hub_bind_url == "http://127.0.0.1:8202"
    assert c.Authenticator.allowed_users == {ME, "alice", "bob"}
    assert c.Authenticator.admin_users == {ME}
    assert c.JupyterHub.authenticator_class == "pam" and c.JupyterHub.spawner_class is CourseSpawner
    assert c.LocalAuthenticator.create_system_users is True
    assert "HOME_MODE=0700" in c.LocalAuthenticator.add_user_cmd
    assert c.JupyterHub.db_url.startswith(f"sqlite:///{tmp / 'state'}")
    assert c.JupyterHub.services == [{"name": "course-admin", "api_token": "t0k"}]
    # the exchange exists, is writable by everyone and sticky (only owners delete)
    assert (tmp / "exchange").stat().st_mode & 0o7777 == 0o1777
    assert (tmp / "state").stat().st_mode & 0o777 == 0o700


def test_every_server_loads_the_hubs_jupyterlab_extension(course):
    """hub/labextensions/dlcourse-feedback is a prebuilt extension JupyterLab finds on the path
    the servers are given (it opens the feedback page that "(view feedback)" points at)."""
    from jupyterlab_server.config import get_federated_extensions
    tmp, proxy = course
    c = Config()
    CourseHub(instructor=ME, students=["alice"], proxy=str(proxy), checkout=str(tmp / "checkout")).apply(c)
    paths = [a.split("=", 1)[1] for a in c.Spawner.args if a.startswith("--LabApp.extra_labextensions_path=")]
    assert paths == [str(hub.HUB_FILES / "labextensions")]
    found = get_federated_extensions(paths)["dlcourse-feedback"]
    assert found["jupyterlab"]["_build"] == {"load": "static/remoteEntry.js", "extension": "./extension"}
    entry = (Path(found["ext_path"]) / "static" / "remoteEntry.js").read_text()
    assert '"dlcourse-feedback"' in entry and "filebrowser:go-to-path" in entry and "docmanager:open" in entry


def test_students_list_their_submissions_with_the_score():
    from traitlets.config.loader import PyFileConfigLoader
    cfg = PyFileConfigLoader("nbgrader_config.py", path=str(hub.HUB_FILES / "config" / "student")).load_config()
    assert cfg.ExchangeFactory.list == "dlcourse.assignments.FeedbackList"


def test_no_service_without_a_token(course):
    tmp, proxy = course
    c = Config()
    CourseHub(instructor=ME, students=["alice"], proxy=str(proxy), checkout=str(tmp / "checkout")).apply(c)
    assert "services" not in c.JupyterHub


@pytest.mark.parametrize("settings, message", [
    (dict(instructor="", students=["alice"]), "name the instructor"),
    (dict(instructor="teach", students=["teach"]), "both the instructor and a student"),
    (dict(instructor="nosuchaccount-dlc", students=["alice"]), "there is no Unix account"),
])
def test_settings_the_hub_cannot_start_with(course, settings, message):
    tmp, proxy = course
    with pytest.raises(HubConfigError, match=message):
        CourseHub(proxy=str(proxy), checkout=str(tmp / "checkout"), **settings).apply(Config())


@pytest.mark.parametrize("names", [["Alice"], ["bob smith"], ["../etc"], ["root;rm"], ["x" * 33]])
def test_account_names_are_checked(course, names):
    with pytest.raises(HubConfigError, match="not valid Unix account names"):
        CourseHub(students=names)


def test_missing_proxy_and_missing_course_are_reported(course, monkeypatch):
    tmp, proxy = course
    with pytest.raises(HubConfigError, match="make hub-proxy"):
        CourseHub(instructor=ME, proxy=str(tmp / "nowhere")).check()
    with pytest.raises(HubConfigError, match="not a course directory"):
        CourseHub(instructor=ME, proxy=str(proxy), course_dir=str(tmp)).check()


def test_the_course_must_belong_to_the_instructor(course):
    tmp, proxy = course
    others = [p for p in pwd.getpwall() if p.pw_uid != os.getuid()]
    if not others:
        pytest.skip("no second account on this machine")
    with pytest.raises(HubConfigError, match="does not belong to the instructor: chown -R"):
        CourseHub(instructor=others[0].pw_name, proxy=str(proxy)).check()


def test_the_instructors_parts_of_the_course_are_kept_private(course):
    tmp, proxy = course
    root = tmp / "course"
    (root / "solutions").mkdir(mode=0o755)
    (root / "exercises").mkdir(mode=0o755)
    protect_course(root)
    assert (root / "gradebook.db").stat().st_size == 0  # created empty, before nbgrader makes it 0644
    (root / "gradebook.db").chmod(0o644)
    protect_course(root)
    for name in ("solutions", "submitted", "autograded", "feedback", "grades"):
        assert (root / name).is_dir() and (root / name).stat().st_mode & 0o777 == 0o700, name
    assert (root / "gradebook.db").stat().st_mode & 0o777 == 0o600
    assert (root / "exercises").stat().st_mode & 0o777 == 0o755  # the release stays readable


def test_students_get_the_shared_nbgrader_settings_without_formgrader(course):
    tmp, proxy = course
    h = CourseHub(instructor="teach", students=["alice"], proxy=str(proxy))
    student = h.user_environment("alice")["JUPYTER_CONFIG_PATH"].split(os.pathsep)
    teacher = h.user_environment("teach")["JUPYTER_CONFIG_PATH"].split(os.pathsep)
    common = str(hub.HUB_FILES / "config" / "common")
    assert student == [str(hub.HUB_FILES / "config" / "student"), common]
    assert teacher == [str(tmp / "course"), str(hub.HUB_FILES / "config" / "instructor"), common]
    assert h.user_environment("alice")["DLCOURSE_EXCHANGE"] == str(tmp / "exchange")
    assert h.user_environment("alice")["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    off = (hub.HUB_FILES / "config" / "student" / "jupyter_server_config.json").read_text()
    assert '"nbgrader.server_extensions.formgrader": false' in off


def server_extensions(config_path: list[str]) -> dict:
    """The server extensions a user's server turns on or off, from its JUPYTER_CONFIG_PATH merged as
    jupyter_server merges it (a later folder's dict replaces an earlier one's: it is not merged key
    by key, so each user's folder must name every extension it changes)."""
    import json
    import subprocess
    code = ("import json; from jupyter_server.serverapp import ServerApp; a = ServerApp(); a.load_config_file(); "
            "print(json.dumps(a.config.ServerApp.get('jpserver_extensions', {})))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "JUPYTER_CONFIG_PATH": os.pathsep.join(config_path)},
                         capture_output=True, text=True, check=True, cwd="/").stdout
    return json.loads(out)


def test_every_users_validate_button_reports_part_by_part(course):
    tmp, proxy = course
    h = CourseHub(instructor="teach", students=["alice"], proxy=str(proxy))
    for user in ("teach", "alice"):
        on = server_extensions(h.user_environment(user)["JUPYTER_CONFIG_PATH"].split(os.pathsep))
        assert on.get("dlcourse.validate") is True, (user, on)
        assert on.get("nbgrader.server_extensions.validate_assignment") is False, (user, on)
    student = server_extensions(h.user_environment("alice")["JUPYTER_CONFIG_PATH"].split(os.pathsep))
    assert student.get("nbgrader.server_extensions.formgrader") is False, student


def test_the_shared_nbgrader_config_names_the_exchange(monkeypatch, tmp_path):
    from traitlets.config.loader import PyFileConfigLoader
    monkeypatch.setenv("DLCOURSE_EXCHANGE", str(tmp_path / "ex"))
    cfg = PyFileConfigLoader("nbgrader_config.py", path=str(hub.HUB_FILES / "config" / "common")).load_config()
    assert cfg.Exchange.root == str(tmp_path / "ex") and cfg.CourseDirectory.course_id == "dlcourse"


@pytest.fixture
def open_dir():
    """A folder every user can enter (pytest's own tmp_path sits in a private folder)."""
    path = Path(tempfile.mkdtemp(prefix="dlcourse-view-", dir="/tmp"))
    path.chmod(0o755)
    if blocked_parent(path / "x") is not None:
        pytest.skip("/tmp is closed to other users here")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_blocked_parent_finds_the_outermost_closed_folder(open_dir):
    tmp_path = open_dir
    a = tmp_path / "a"
    (a / "b" / "c").mkdir(parents=True)
    tmp_path.chmod(0o755)
    a.chmod(0o755)
    (a / "b").chmod(0o700)
    try:
        assert blocked_parent(a / "b" / "c" / "d") == a / "b"
        assert blocked_parent(a / "b") is None  # the path itself may be private
        (a / "b").chmod(0o711)
        assert blocked_parent(a / "b" / "c" / "d") is None
    finally:
        (a / "b").chmod(0o755)


def test_reachable_view_is_empty_when_nothing_is_closed(open_dir):
    (open_dir / "open").mkdir(mode=0o755)
    assert reachable_view([open_dir / "open" / "x", open_dir]) == []


def test_reachable_view_binds_the_needed_paths_into_an_open_folder(open_dir):
    tmp_path = open_dir
    closed = tmp_path / "root"
    (closed / "py" / "lib").mkdir(parents=True)
    (closed / "course").mkdir()
    closed.chmod(0o700)
    try:
        args = reachable_view([closed / "py", closed / "py" / "lib", closed / "course"], bwrap="bwrap")
    finally:
        closed.chmod(0o755)
    assert args[:4] == ["bwrap", "--dev-bind", "/", "/"]
    text = " ".join(args)
    assert f"--perms 0755 --tmpfs {closed}" in text
    assert f"--bind {closed / 'py'} {closed / 'py'}" in text
    assert f"--bind {closed / 'course'} {closed / 'course'}" in text
    assert f"--bind {closed / 'py' / 'lib'}" not in text  # shown by the bind of its parent


def test_account_names_from_the_environment_are_checked_too(course, monkeypatch):
    monkeypatch.setenv("DLCOURSE_HUB_STUDENTS", "alice Bob")
    with pytest.raises(HubConfigError, match="Bob"):
        CourseHub().students
    monkeypatch.setenv("DLCOURSE_HUB_INSTRUCTOR", "te ach")
    with pytest.raises(HubConfigError, match="te ach"):
        CourseHub().instructor


def test_apply_closes_the_checkout_the_course_and_the_instructors_home(course, no_home_changes):
    tmp, proxy = course
    for folder in (tmp / "checkout", tmp / "course"):
        for name in (".git", "tests", "lib"):
            (folder / name).mkdir(mode=0o755)
    CourseHub(instructor=ME, students=["alice"], proxy=str(proxy), checkout=str(tmp / "checkout")).apply(Config())
    for folder in (tmp / "checkout", tmp / "course"):
        assert (folder / ".git").stat().st_mode & 0o777 == 0o700
        assert (folder / "tests").stat().st_mode & 0o777 == 0o700
        assert (folder / "lib").stat().st_mode & 0o777 == 0o755
    assert no_home_changes == [ME]


def test_close_course_leaves_only_the_public_parts_open(tmp_path):
    root = tmp_path / "checkout"
    root.mkdir(mode=0o755)
    for name in (".git", "solutions", "tests", "benchmarks", ".jupyter-state", "lib", "lectures", "exercises",
                 ".venv", "hub", "jupyter"):
        (root / name).mkdir(mode=0o755)
    for name in ("README.md", "START.md", "Makefile", "solutions.tar.gz", "gradebook.db.bak"):
        (root / name).write_text("x")
        (root / name).chmod(0o644)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (root / "link").symlink_to(elsewhere)
    closed = close_course(root)
    assert sorted(p.name for p in closed) == [".git", ".jupyter-state", "benchmarks", "gradebook.db.bak",
                                              "solutions", "solutions.tar.gz", "tests"]
    for entry in root.iterdir():
        mode = entry.lstat().st_mode & 0o777
        if entry.is_symlink():
            assert elsewhere.stat().st_mode & 0o777 == 0o755, "chmod followed the link"
        elif entry.name in PUBLIC:
            assert mode in (0o755, 0o644), entry
        else:
            assert mode & 0o077 == 0, entry
    assert root.stat().st_mode & 0o777 == 0o755, "the checkout itself stays open (the servers run from it)"
    assert close_course(root) == [], "a second run changes nothing"


def test_close_home_makes_the_instructors_home_private(tmp_path, monkeypatch):
    real_close_home = close_home  # imported before the fixture above replaced hub.close_home
    home = tmp_path / "teach"
    home.mkdir(mode=0o755)
    fake = type("pw", (), {"pw_dir": str(home), "pw_uid": os.getuid()})
    monkeypatch.setattr(hub.pwd, "getpwnam", lambda name: fake)
    assert real_close_home("teach") is True and home.stat().st_mode & 0o777 == 0o700
    assert real_close_home("teach") is False
    fake.pw_uid = os.getuid() + 1  # a home that belongs to someone else (e.g. "/") is left alone
    home.chmod(0o755)
    assert real_close_home("teach") is False and home.stat().st_mode & 0o777 == 0o755


def test_what_students_can_read_of_this_checkout_holds_no_solution():
    """The allow-list's own contents (the library, the lectures, the release, the hub's and
    JupyterLab's settings; the virtual environment is searched by tests/test_jupyterhub.py)
    hold no solution line and no hidden test of any assignment, and no notebook holds solution
    or hidden-test markers."""
    repo = hub.REPO
    files = [p for name in sorted(PUBLIC - {".venv"}) for p in ([repo / name] if (repo / name).is_file()
             else sorted((repo / name).rglob("*"))) if p.is_file() and "__pycache__" not in p.parts]
    public = {p: p.read_text(errors="replace") for p in files}
    shared = "".join(text for p, text in public.items() if p.suffix in (".py", ".ipynb"))
    secrets = hub.secret_lines(repo / "solutions", shared)
    assert len(secrets) > 100, "no solution lines found: is solutions/ there?"
    leaks = {str(p.relative_to(repo)): sorted(s for s in secrets if s in text)[:3]
             for p, text in public.items() if any(s in text for s in secrets)}
    assert not leaks, leaks
    markers = [str(p.relative_to(repo)) for p, text in public.items()
               if p.suffix == ".ipynb" and hub.SECRET_MARKERS.search(text)]
    assert not markers, markers


def test_the_instructors_server_may_be_framed_by_its_own_jupyterlab():
    import json
    config = json.loads((hub.HUB_FILES / "config" / "instructor" / "jupyter_server_config.json").read_text())
    assert config["ServerApp"]["tornado_settings"]["headers"]["Content-Security-Policy"] == "frame-ancestors 'self'"
    assert not (hub.HUB_FILES / "config" / "student" / "jupyter_server_config.json").read_text().count("frame")


def test_terminals_are_bash_that_keeps_the_servers_path():
    """A login shell would read /etc/profile, which on Debian sets PATH anew (no course Python)."""
    import json
    config = json.loads((hub.HUB_FILES / "config" / "common" / "jupyter_server_config.json").read_text())
    shell = config["ServerApp"]["terminado_settings"]["shell_command"]
    assert shell[0] == "/bin/bash" and "-l" not in shell and "--login" not in shell


def test_formgraders_links_outside_jupyterlab_are_redirected():
    import re
    patterns = {pattern for pattern, handler in formgrader_redirects()}
    assert patterns == {r"/tree/(.*)", r"/notebooks/(.*)", r"/edit/(.*)"}
    assert re.fullmatch(r"/tree/(.*)", "/tree/exercises/ps_convolution")[1] == "exercises/ps_convolution"


def test_students_first_workspace_opens_the_assignments_tab(tmp_path):
    import json
    from jupyterlab_server.workspaces_handler import WorkspacesManager
    content = (hub.HUB_FILES / "workspaces" / "student.jupyterlab-workspace").read_bytes()
    layout = json.loads(content)["data"]["layout-restorer:data"]["main"]
    assert layout["dock"]["widgets"] == ["nbgrader-assignment-list:nbgrader-assignment-list"]
    path = hub.default_workspace(str(tmp_path))
    assert hub.seed_file(path, content) is True
    # JupyterLab's own workspace manager finds it as the workspace "default"
    assert WorkspacesManager(str(tmp_path / ".jupyter" / "lab" / "workspaces")).load("default")["data"] == \
        json.loads(content)["data"]
    Path(path).write_text('{"data": {}, "metadata": {"id": "default"}}')
    assert hub.seed_file(path, content) is False, "a workspace of the student's own is kept"
    assert json.loads(Path(path).read_text())["data"] == {}


def test_the_first_workspace_is_never_written_through_a_link(tmp_path):
    target = tmp_path / "elsewhere"
    path = Path(hub.default_workspace(str(tmp_path / "home")))
    path.parent.mkdir(parents=True)
    path.symlink_to(target)
    assert hub.seed_file(str(path), b"{}") is False and not target.exists()


def test_the_first_workspace_is_written_before_the_server_starts(tmp_path):
    """What each student's server runs first (`python -m dlcourse.hub first-workspace ...`)."""
    import subprocess
    source, target = tmp_path / "source.json", tmp_path / "home" / "ws" / "default.json"
    source.write_text('{"data": {}}')
    run = [sys.executable, "-m", "dlcourse.hub", "first-workspace", str(source), str(target), "--"]
    done = subprocess.run([*run, sys.executable, "-c", "print('the server')"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "the server\n", done.stderr
    assert target.read_text() == '{"data": {}}' and target.parent.stat().st_mode & 0o777 == 0o700
    target.write_text("the student's own")
    assert subprocess.run([*run, "true"]).returncode == 0 and target.read_text() == "the student's own"
    assert subprocess.run(run[:4], capture_output=True).returncode != 0  # no command: the usage


def test_accounts_without_a_password_are_named(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.write_text("teach:$y$j9T$abc$def:20000:0:99999:7:::\nalice:!:20000::::::\nbob:*:20000::::::\n"
                      "carol::20000::::::\n")
    assert hub.has_password("teach", shadow) is True
    assert [hub.has_password(n, shadow) for n in ("alice", "bob", "carol", "dave")] == [False] * 4
    assert hub.has_password("teach", tmp_path / "unreadable") is True
