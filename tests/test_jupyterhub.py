"""The whole course loop on a real JupyterHub (`make hub`), driven as its real users would drive it.

The hub runs from `make hub` on a free loopback port with its npm proxy, PAM accounts that the hub
creates itself (an instructor and three students, real Unix users with private homes) and the
nbgrader exchange. Everything then goes through the hub's REST API and each user's own server,
with each user's own API token:

1. the instructor generates and releases ps_convolution from formgrader;
2. three students fetch it from the Assignments API; alice submits the model answers, bob the
   untouched release, and carol the model answers after the due date the instructor set;
3. the instructor collects, runs `make grade ... SUBMISSIONS=<course>/submitted` in a terminal of
   their server (the batch grader, sandboxed) and releases the feedback;
4. each student fetches their own feedback; requests for another student's files fail, both through
   the hub (another user's server, formgrader) and on the file system (homes, exchange, course);
5. the gradebook holds full marks for alice, zero for bob, and carol's late penalty.

Every process started here is stopped, and the accounts and their homes are removed, at the end.
Skipped only where Unix accounts cannot be created (not root, no useradd) or the proxy cannot be
installed (no node/npm and no way to install them).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pytest
import requests
from nbgrader_harness import REPO, grade_id, strip_solution_markers
from system_packages import ensure_debian_packages
from test_lab import free_port

ASSIGNMENT, NOTEBOOK, COURSE_ID = "ps_convolution", "convolution", "dlcourse"
TAG = f"{os.getpid() % 100000:05d}"
INSTRUCTOR = f"dlct{TAG}-teach"
ALICE, BOB, CAROL = (f"dlct{TAG}-{n}" for n in ("alice", "bob", "carol"))
STUDENTS = (ALICE, BOB, CAROL)
START_TIMEOUT = 120
GRADE_TIMEOUT = 240


# ------------------------------------------------------------------ machine prerequisites
def needs_accounts() -> None:
    if os.geteuid() != 0:
        pytest.skip("creating the course's Unix accounts and starting the hub needs root")
    missing = [p for p in ("useradd", "userdel", "runuser", "setpriv") if shutil.which(p) is None]
    if missing:
        pytest.skip(f"cannot create or switch Unix accounts here: {', '.join(missing)} missing")


def install_proxy() -> None:
    """The proxy as the project installs it (`make hub-proxy`: npm, pinned, into .venv/hub)."""
    ensure_debian_packages(["nodejs", "npm"], binaries=["node", "npm"])
    proc = subprocess.run(["make", "-s", "hub-proxy"], cwd=REPO, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"cannot install the hub's proxy with npm: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")


def free_ports(count: int = 3) -> int:
    """A port p with p, p+1, ... p+count-1 free (hub, proxy API, hub API)."""
    for _ in range(50):
        p = free_port()
        if p + count < 65536 and all(_is_free(p + i) for i in range(count)):
            return p
    raise RuntimeError("no run of free loopback ports")


def _is_free(port: int) -> bool:
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


# ------------------------------------------------------------------ the hub
class Hub:
    def __init__(self, base: str, admin_token: str, proc: subprocess.Popen, log: Path, state: Path):
        self.base, self.admin_token, self.proc, self.log, self.state = base, admin_token, proc, log, state
        self.tokens: dict[str, str] = {}

    def api(self, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
        headers = {"Authorization": f"token {token or self.admin_token}"}
        return requests.request(method, f"{self.base}{path}", headers=headers, timeout=120,
                                allow_redirects=False, **kw)

    def as_user(self, user: str, method: str, path: str, **kw) -> requests.Response:
        """A request by `user` (with their own token) to their own server: /user/<user>/<path>."""
        return self.api(method, f"/user/{user}/{path}", token=self.tokens[user], **kw)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def ok(self, response: requests.Response) -> dict | list:
        assert response.status_code < 300, (f"{response.request.method} {response.url}: {response.status_code}\n"
                                            f"{response.text[:2000]}\n--- hub log ---\n{self.log_tail()}")
        return response.json() if response.content else {}


def start_hub(root: Path, course: Path, instructor: str = INSTRUCTOR, students: tuple[str, ...] = STUDENTS) -> Hub:
    port, token = free_ports(), secrets.token_hex(16)
    log = root / "hub.log"
    env = dict(os.environ, DLCOURSE_HUB_API_TOKEN=token)
    cmd = ["make", "-s", "hub", f"HUB_INSTRUCTOR={instructor}", f"HUB_STUDENTS={' '.join(students)}",
           f"HUB_PORT={port}", f"HUB_COURSE_DIR={course}", f"HUB_STATE={root / 'state'}",
           f"HUB_EXCHANGE={root / 'exchange'}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    hub = Hub(f"http://127.0.0.1:{port}", token, proc, log, root / "state")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"make hub exited with {proc.returncode}:\n{hub.log_tail()}"
        try:
            if hub.api("GET", "/hub/api/").status_code == 200:
                return hub
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the hub did not answer within {START_TIMEOUT} s:\n{hub.log_tail()}")


def start_servers(hub: Hub, users: list[str]) -> None:
    for user in users:
        r = hub.api("POST", f"/hub/api/users/{user}/server")
        assert r.status_code in (201, 202), f"{user}: {r.status_code} {r.text}\n{hub.log_tail()}"
    deadline = time.monotonic() + START_TIMEOUT
    waiting = set(users)
    while waiting and time.monotonic() < deadline:
        for user in list(waiting):
            server = hub.ok(hub.api("GET", f"/hub/api/users/{user}")).get("servers", {}).get("", {})
            if server.get("ready"):
                waiting.discard(user)
        time.sleep(0.5)
    assert not waiting, f"servers not ready after {START_TIMEOUT} s: {sorted(waiting)}\n{hub.log_tail()}"
    for user in users:  # each user's own token: what they would get by logging in
        hub.tokens[user] = hub.ok(hub.api("POST", f"/hub/api/users/{user}/tokens",
                                          json={"note": "course test", "expires_in": 3600}))["token"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_everything(hub: Hub | None, users: list[str]) -> list[str]:
    """Stop the hub (which stops the servers), then anything left of the users; remove the accounts.
    Returns what had to be killed by force, for the record."""
    forced = []
    if hub is not None:
        # JupyterHub (its pid file names it) stops the servers and its proxy on SIGTERM, as on Ctrl-C
        pid_file = hub.state / "jupyterhub.pid"
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                forced.append("hub")
                os.kill(pid, signal.SIGKILL)
        try:
            hub.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            forced.append("make")
        if hub.proc.poll() is None or forced:
            os.killpg(hub.proc.pid, signal.SIGKILL)  # make, and anything left in its process group
            hub.proc.wait(timeout=10)
    for user in users:
        if subprocess.run(["pgrep", "-u", user], capture_output=True).returncode == 0:
            forced.append(user)
            subprocess.run(["pkill", "-KILL", "-u", user])
            time.sleep(0.5)
        subprocess.run(["userdel", "--remove", user], capture_output=True)
    return forced


# ------------------------------------------------------------------ notebooks and the terminal
def filled_in(released: dict) -> dict:
    """The released notebook with the model answers typed into its solution cells."""
    source = nbformat.read(REPO / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    answers = {grade_id(c): strip_solution_markers(c.source) for c in source.cells
               if c.get("metadata", {}).get("nbgrader", {}).get("solution")}
    nb = nbformat.from_dict(json.loads(json.dumps(released)))
    filled = 0
    for cell in nb.cells:
        if grade_id(cell) in answers:
            cell.source = answers[grade_id(cell)]
            filled += 1
    assert filled == len(answers), "the release lost solution cells"
    return nb


def run_in_terminal(hub: Hub, user: str, command: str, timeout: float) -> tuple[int, str]:
    """Open a terminal in `user`'s JupyterLab (its REST and websocket API), type `command`, and
    return its exit status and what the terminal showed."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    name = hub.ok(hub.as_user(user, "POST", "api/terminals"))["name"]
    url = f"{hub.base.replace('http', 'ws', 1)}/user/{user}/terminals/websocket/{name}"

    async def session() -> tuple[int, str]:
        ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {hub.tokens[user]}"}))
        await ws.write_message(json.dumps(["stdin", f"{command}; echo DLCOURSE-EXIT-$((40000+$?))\r"]))
        shown, deadline = "", time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = await asyncio.wait_for(ws.read_message(), timeout=max(1.0, deadline - time.monotonic()))
            except TimeoutError:
                break
            if message is None:
                break
            kind, *payload = json.loads(message)
            if kind == "stdout":
                shown += payload[0]
                done = re.search(r"DLCOURSE-EXIT-4(\d{4})", shown)
                if done:
                    ws.close()
                    return int(done.group(1)), shown
        ws.close()
        return -1, shown

    try:
        return asyncio.run(session())
    finally:
        hub.as_user(user, "DELETE", f"api/terminals/{name}")


def as_unix_user(user: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, timeout=60,
                          errors="replace")


# ------------------------------------------------------------------ the semester, in one run
@pytest.fixture(scope="module")
def semester():
    needs_accounts()
    ensure_debian_packages(["bubblewrap"], binaries=["bwrap"])  # the grader's sandbox (and the hub's view)
    install_proxy()
    clash = [u for u in (INSTRUCTOR, *STUDENTS) if subprocess.run(["id", u], capture_output=True).returncode == 0]
    assert not clash, f"accounts {clash} exist already: a previous run was not cleaned up"

    root = Path(tempfile.mkdtemp(prefix="dlcourse-hub-", dir="/tmp"))
    root.chmod(0o755)  # the accounts must reach the exchange below it
    course = root / "course"
    course.mkdir()
    shutil.copy(REPO / "nbgrader_config.py", course / "nbgrader_config.py")
    shutil.copytree(REPO / "solutions" / ASSIGNMENT, course / "solutions" / ASSIGNMENT)

    hub, record, t0 = None, {"course": course, "exchange": root / "exchange"}, time.monotonic()
    try:
        # the instructor's account exists and owns the course (README); the students' the hub creates
        subprocess.run(["useradd", "--create-home", "--key", "HOME_MODE=0700", INSTRUCTOR], check=True)
        subprocess.run(["chown", "-R", f"{INSTRUCTOR}:", str(course)], check=True)
        course.chmod(0o755)
        hub = start_hub(root, course)
        for user in STUDENTS:
            assert subprocess.run(["id", user], capture_output=True).returncode == 0, f"no account {user}"
            home = Path(os.path.expanduser(f"~{user}"))
            assert home.stat().st_mode & 0o077 == 0, f"{home} is readable by others"
        start_servers(hub, [INSTRUCTOR, *STUDENTS])
        record["hub"] = hub

        # 1. the instructor generates and releases the assignment from formgrader
        record["assign"] = hub.ok(hub.as_user(INSTRUCTOR, "POST", f"formgrader/api/assignment/{ASSIGNMENT}/assign"))
        record["release"] = hub.ok(hub.as_user(INSTRUCTOR, "POST", f"formgrader/api/assignment/{ASSIGNMENT}/release"))

        # 2. the students fetch it; alice and bob submit before the due date, carol after it
        record["listed"] = {s: hub.ok(hub.as_user(s, "GET", "assignments", params={"course_id": COURSE_ID}))
                            for s in STUDENTS}
        job = {"course_id": COURSE_ID, "assignment_id": ASSIGNMENT}
        path = f"api/contents/{ASSIGNMENT}/{NOTEBOOK}.ipynb"
        for s in STUDENTS:
            hub.ok(hub.as_user(s, "POST", "assignments/fetch", json=job))
        released = hub.ok(hub.as_user(ALICE, "GET", path))["content"]
        record["released"] = released
        for s in (ALICE, CAROL):
            hub.ok(hub.as_user(s, "PUT", path, json={"type": "notebook", "content": filled_in(released)}))
        record["submit"] = {s: hub.ok(hub.as_user(s, "POST", "assignments/submit", json=job)) for s in (ALICE, BOB)}
        due = datetime.now(UTC)
        hub.ok(hub.as_user(INSTRUCTOR, "PUT", f"formgrader/api/assignment/{ASSIGNMENT}",
                           json={"duedate_notimezone": due.strftime("%Y-%m-%d %H:%M:%S.%f"),
                                 "duedate_timezone": "UTC"}))
        time.sleep(1.0)
        record["submit"][CAROL] = hub.ok(hub.as_user(CAROL, "POST", "assignments/submit", json=job))

        # 3. collect, grade in the instructor's terminal, release the feedback
        record["collect"] = hub.ok(hub.as_user(INSTRUCTOR, "POST", f"formgrader/api/assignment/{ASSIGNMENT}/collect"))
        command = (f"make -s -C {REPO} grade ASSIGNMENT={ASSIGNMENT} SUBMISSIONS={course}/submitted "
                   f"GRADE_ARGS='--course-dir {course} --workers 2 --quiet'")
        t_grade = time.monotonic()
        record["grade_rc"], record["grade_output"] = run_in_terminal(hub, INSTRUCTOR, command, GRADE_TIMEOUT)
        record["grade_seconds"] = time.monotonic() - t_grade
        record["release_feedback"] = hub.ok(hub.as_user(
            INSTRUCTOR, "POST", f"formgrader/api/assignment/{ASSIGNMENT}/release_feedback"))

        # 4. each student fetches their feedback
        record["feedback"] = {}
        for s in STUDENTS:
            hub.ok(hub.as_user(s, "POST", "assignments/fetch_feedback", json=job))
            folders = hub.ok(hub.as_user(s, "GET", f"api/contents/{ASSIGNMENT}/feedback"))["content"]
            pages = {}
            for folder in folders:
                listing = hub.ok(hub.as_user(s, "GET", f"api/contents/{folder['path']}"))["content"]
                for f in listing:
                    if f["name"].endswith(".html"):
                        pages[f["path"]] = hub.ok(hub.as_user(s, "GET", f"api/contents/{f['path']}",
                                                              params={"format": "text", "type": "file"}))["content"]
            record["feedback"][s] = pages
        record["seconds"] = time.monotonic() - t0
        yield record
    finally:
        forced = stop_everything(hub, [INSTRUCTOR, *STUDENTS])
        left = [u for u in (INSTRUCTOR, *STUDENTS) if subprocess.run(["id", u], capture_output=True).returncode == 0]
        shutil.rmtree(root, ignore_errors=True)
        print(f"\nhub test: {time.monotonic() - t0:.1f} s; stopped by force: {forced or 'nothing'}")
        assert not left, f"accounts left behind: {left}"
        assert not forced, f"the hub did not stop these by itself: {forced}"


def auto_maximum(submission) -> float:
    """Points of the autograded parts (the written answers are graded by hand later)."""
    return sum(g.max_score for nb in submission.notebooks for g in nb.grades if g.auto_score is not None)


def auto_score(submission) -> float:
    return sum(g.auto_score for nb in submission.notebooks for g in nb.grades if g.auto_score is not None)


def gradebook(course: Path):
    from nbgrader.api import Gradebook
    return Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID)


# ------------------------------------------------------------------ what must hold
def test_instructor_generates_and_releases_from_formgrader(semester):
    assert semester["assign"]["success"], semester["assign"]
    assert semester["release"]["success"], semester["release"]
    outbound = semester["exchange"] / COURSE_ID / "outbound" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    assert outbound.is_file()
    for s in STUDENTS:
        listed = semester["listed"][s]["value"]
        assert [(a["assignment_id"], a["status"]) for a in listed] == [(ASSIGNMENT, "released")], listed


def test_students_fetch_the_release_without_solutions(semester):
    text = json.dumps(semester["released"])
    assert "### BEGIN SOLUTION" not in text and "raise NotImplementedError()" in text


def test_submissions_reach_the_exchange_and_are_collected(semester):
    for s in STUDENTS:
        assert semester["submit"][s]["success"], semester["submit"][s]
        assert (semester["course"] / "submitted" / s / ASSIGNMENT / f"{NOTEBOOK}.ipynb").is_file()
        assert (semester["course"] / "submitted" / s / ASSIGNMENT / "timestamp.txt").is_file()


def test_make_grade_in_the_instructors_terminal_grades_everyone_sandboxed(semester):
    out = semester["grade_output"]
    assert semester["grade_rc"] == 0, out[-4000:]
    assert "3 students: 2 graded, 1 late, 0 failed" in out, out[-4000:]
    assert "unsandboxed" not in out
    rows = (semester["course"] / "grades" / ASSIGNMENT / "grades.csv").read_text().splitlines()
    assert len(rows) == 1 + len(STUDENTS)


def test_gradebook_full_marks_zero_and_the_late_policy(semester):
    with gradebook(semester["course"]) as gb:
        subs = {s: gb.find_submission(ASSIGNMENT, s) for s in STUDENTS}
        maximum = auto_maximum(subs[ALICE])
        assert maximum > 0
        assert auto_score(subs[ALICE]) == maximum and subs[ALICE].total_seconds_late == 0
        assert subs[ALICE].score == maximum, "nothing but the autograded parts is graded yet"
        assert auto_score(subs[BOB]) == 0 and subs[BOB].score == 0 and subs[BOB].total_seconds_late == 0
        carol = subs[CAROL]
        assert carol.total_seconds_late > 0, "carol submitted after the due date"
        assert auto_score(carol) == maximum, "carol's answers are right: the tests pass"
        # nbgrader keeps the tests' score and the penalty apart; what counts is the difference
        assert carol.late_submission_penalty == maximum, "late work scores 0 (nbgrader_config.py)"
        assert carol.score - carol.late_submission_penalty == 0


def test_each_student_gets_their_own_feedback(semester):
    with gradebook(semester["course"]) as gb:
        auto = auto_maximum(gb.find_submission(ASSIGNMENT, ALICE))
        maximum = gb.find_submission(ASSIGNMENT, ALICE).max_score
    expected = {ALICE: auto, BOB: 0.0}
    for s, score in expected.items():
        pages = semester["feedback"][s]
        assert len(pages) == 1, f"{s} should get exactly one feedback page, got {sorted(pages)}"
        html = next(iter(pages.values()))
        text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
        # the notebook's total among the scores shown (the page may show each part's score too):
        # out of every point, or "so far" out of the points graded before the written answers
        shown = {(kind, float(a), float(b)) for kind, a, b in
                 re.findall(r"Score( so far)?:\s*([0-9.]+)\s*/\s*([0-9.]+)", text)}
        assert ("", score, maximum) in shown or (" so far", score, auto) in shown, \
            f"{s}'s feedback shows {sorted(shown)[:6]}, not {score:g} / {maximum:g} (or {score:g} / {auto:g} so far)"
    assert len(semester["feedback"][CAROL]) == 1


def test_a_student_cannot_reach_another_students_work(semester):
    hub: Hub = semester["hub"]
    # through the hub: another user's server, the instructor's formgrader, another user's record
    for path in (f"/user/{BOB}/api/contents/{ASSIGNMENT}", f"/user/{BOB}/api/contents/{ASSIGNMENT}/feedback",
                 f"/user/{INSTRUCTOR}/formgrader/api/submissions/{ASSIGNMENT}",
                 f"/user/{INSTRUCTOR}/api/contents/submitted/{BOB}", f"/hub/api/users/{BOB}"):
        r = hub.api("GET", path, token=hub.tokens[ALICE])
        assert r.status_code in (302, 403, 404), f"alice got {r.status_code} for {path}"
        assert BOB not in r.text or r.status_code != 200
    # the instructor's formgrader answers the instructor (the checks above are not a broken server)
    assert hub.as_user(INSTRUCTOR, "GET", f"formgrader/api/submissions/{ASSIGNMENT}").status_code == 200
    # on the file system, as the Unix user alice: bob's home, the exchange's inbox and feedback, the course
    bob_feedback = next(iter(semester["feedback"][BOB]))
    course, exchange = semester["course"], semester["exchange"] / COURSE_ID
    attempts = {
        "bob's feedback in his home": ["cat", str(Path(os.path.expanduser(f"~{BOB}")) / bob_feedback)],
        "the exchange's inbox": ["ls", str(exchange / "inbound")],
        "the exchange's feedback folder": ["ls", str(exchange / "feedback")],
        "bob's collected submission": ["cat", str(course / "submitted" / BOB / ASSIGNMENT / f"{NOTEBOOK}.ipynb")],
        "the gradebook": ["cat", str(course / "gradebook.db")],
        "the hidden tests": ["ls", str(course / "solutions")],
    }
    for what, argv in attempts.items():
        proc = as_unix_user(ALICE, *argv)
        assert proc.returncode != 0 and "Permission denied" in proc.stderr, f"alice could read {what}: {proc}"
    # and alice can read her own feedback on disk (the denials above are about ownership)
    own = next(iter(semester["feedback"][ALICE]))
    assert as_unix_user(ALICE, "cat", str(Path(os.path.expanduser(f"~{ALICE}")) / own)).returncode == 0


def test_students_have_no_formgrader(semester):
    hub: Hub = semester["hub"]
    r = hub.as_user(ALICE, "GET", "formgrader/api/assignments")
    assert r.status_code == 404, f"a student's server serves formgrader ({r.status_code})"


def test_the_loop_runs_in_time(semester):
    assert semester["seconds"] < 180, f"the loop took {semester['seconds']:.0f} s"


def test_a_student_logs_in_with_their_unix_password(semester):
    """PAM: the password of the Unix account opens the hub; a wrong one does not."""
    hub: Hub = semester["hub"]
    password = secrets.token_urlsafe(12)
    subprocess.run(["chpasswd"], input=f"{ALICE}:{password}\n", text=True, check=True)

    def login(secret: str) -> requests.Response:
        with requests.Session() as browser:
            browser.get(f"{hub.base}/hub/login", timeout=30)
            xsrf = browser.cookies.get("_xsrf")
            return browser.post(f"{hub.base}/hub/login", timeout=60, allow_redirects=False,
                                data={"username": ALICE, "password": secret, "_xsrf": xsrf})

    good, bad = login(password), login(password + "x")
    assert good.status_code == 302 and "jupyterhub-session-id" in good.cookies, (good.status_code, good.text[:500])
    assert bad.status_code == 403 and "jupyterhub-session-id" not in bad.cookies, bad.status_code
