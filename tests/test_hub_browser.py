"""The semester on `make hub` through its web pages, in a real browser (Debian's Chromium driven by
Playwright), as an instructor and two students would walk it, following the README's section
"A semester on JupyterHub":

1. the administrator creates the instructor's account (the README's `useradd`), gives it a course
   directory (the committed tree of this checkout, with the checkout's `.venv`), starts the hub,
   and sets passwords with `chpasswd`: the instructor's too;
2. the instructor logs in on the hub's login page, opens Nbgrader -> Formgrader in JupyterLab (it
   must render inside JupyterLab's frame), generates and releases ps_convolution there, and the
   formgrader's links work both in the frame and in a tab of their own;
3. in a JupyterLab terminal the instructor runs the README's `nbgrader` command for the due date;
4. alice and bob log in, fetch the assignment in the Assignments tab, alice fills in the answers,
   both press Validate in the notebook, and submit from the Assignments tab;
5. the instructor collects in formgrader, runs the README's `make grade` in their terminal,
   opens alice's submission from formgrader's Manage Students page, grades her written answer
   (1.5 of 2) with the rubric shown under it, generates and releases the feedback in formgrader;
6. the students fetch their feedback in the Assignments tab, read their score there, and open the
   feedback with "(view feedback)": JupyterLab's HTML viewer, untrusted, with the math rendered;
7. as bob, in his terminal, a search of everything he can read on the host: no solution line,
   no hidden test, no readable git history of the course.

Screenshots go to DLCOURSE_SCREENSHOTS (default .jupyter-state/screenshots/hub/). Every account,
process and file made here is removed at the end. Skipped where test_jupyterhub.py skips, and
where Chromium or Playwright cannot be had.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from nbgrader_harness import REPO
from system_packages import ensure_debian_packages
from test_jupyterhub import (COURSE_ID, filled_in, install_proxy, needs_accounts, start_hub,
                             stop_everything)

from dlcourse import hub as course_hub

ASSIGNMENT, NOTEBOOK = "ps_convolution", "convolution"
WRITTEN, WRITTEN_SCORE = "written_flip", 1.5   # alice's written answer, graded by hand in formgrader
PARTS = ["1-D cross-correlation", "2-D cross-correlation", "output size",
         "a convolutional layer: channels, filters, stride and padding", "max pooling", "written question"]
TAG = f"{os.getpid() % 100000:05d}"
INSTRUCTOR, ALICE, BOB = (f"dlcb{TAG}-{n}" for n in ("teach", "alice", "bob"))
STUDENTS = (ALICE, BOB)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PAGE_TIMEOUT = 120_000  # ms: a JupyterLab page on a busy two-core machine
GRADE_TIMEOUT = 300
SEARCH_TIMEOUT = 420
SCREENSHOTS = Path(os.environ.get("DLCOURSE_SCREENSHOTS", REPO / ".jupyter-state" / "screenshots")) / "hub"


# ------------------------------------------------------------------ pages
class User:
    """One person at the browser: their own context (cookies), one JupyterLab page."""

    def __init__(self, browser, base: str, name: str, password: str):
        self.base, self.name, self.password = base, name, password
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.context.set_default_timeout(PAGE_TIMEOUT)
        self.page = self.context.new_page()
        self.server = f"{base}/user/{name}"

    def shot(self, what: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{self.name.split('-')[-1]}-{what}.png"))

    def log_in(self) -> str:
        """The hub's login page; returns the URL JupyterLab opened on."""
        page = self.page
        page.goto(f"{self.base}/hub/login")
        page.fill("#username_input", self.name)
        page.fill("#password_input", self.password)
        page.click("#login_submit")
        page.wait_for_url(re.compile(rf"/user/{re.escape(self.name)}/lab"), timeout=PAGE_TIMEOUT)
        self.wait_for_lab()
        return page.url

    def wait_for_lab(self) -> None:
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Nbgrader$")).wait_for()

    def menu(self, top: str, item: str) -> None:
        page = self.page
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(rf"^{top}$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$")).click()

    def xsrf(self) -> str:
        return next(c["value"] for c in self.context.cookies() if c["name"] == "_xsrf")

    def api(self, method: str, path: str, **kw):
        """A request of the logged-in page (its cookies and XSRF token) to the user's server."""
        response = self.context.request.fetch(f"{self.server}/{path}", method=method,
                                              headers={"X-XSRFToken": self.xsrf()}, **kw)
        assert response.ok, f"{method} {path}: {response.status} {response.text()[:500]}"
        return response.json() if response.text() else {}

    def terminal(self, command: str) -> None:
        """Open a terminal from JupyterLab's launcher, with the file browser on the top folder (a
        terminal starts in the folder the file browser shows), and type `command` into it."""
        page = self.page
        if not page.locator(".jp-FileBrowser").first.is_visible():  # the left sidebar is collapsed
            page.locator('.jp-SideBar [data-id="filebrowser"]').first.click()
        page.locator(".jp-FileBrowser .jp-BreadCrumbs-home").first.click()
        self.menu("File", "New Launcher")
        page.locator(".jp-LauncherCard", has_text="Terminal").first.click()
        term = page.locator(".jp-Terminal").last
        term.locator(".xterm-screen").wait_for()
        term.click()
        page.keyboard.type(command, delay=2)
        page.keyboard.press("Enter")

    def close(self) -> None:
        self.context.close()


def wait_for_manual_score(teach: User, submission_id: str, grade_id: str, timeout: float):
    """The manual score formgrader saved for `grade_id` of the submission (None if none in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        grades = teach.api("GET", "formgrader/api/grades", params={"submission_id": submission_id})
        score = next((g["manual_score"] for g in grades if g["name"] == grade_id), None)
        if score is not None:
            return score
        time.sleep(1.0)
    return None


def wait_for_file(path: Path, timeout: float, what: str) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text(errors="replace")
        time.sleep(1.0)
    raise AssertionError(f"{what}: nothing in {path} after {timeout:.0f} s")


def in_home(user: str, name: str) -> Path:
    return Path(os.path.expanduser(f"~{user}")) / name


def run_and_record(user: User, command: str, out: str, timeout: float) -> tuple[int, str]:
    """Type `command` into a terminal of `user`'s JupyterLab; its output and exit status land in
    files of their home (the terminal's screen is a canvas)."""
    user.terminal(f"( {command} ) > ~/{out}.log 2>&1; echo $? > ~/{out}.rc")
    rc = wait_for_file(in_home(user.name, f"{out}.rc"), timeout, command)
    return int(rc.strip() or -1), in_home(user.name, f"{out}.log").read_text(errors="replace")


# ------------------------------------------------------------------ formgrader
def formgrader_frame(teach: User):
    """Nbgrader -> Formgrader, as the menu opens it: the frame inside JupyterLab, once its
    assignment table is there."""
    teach.menu("Nbgrader", "Formgrader")
    frame = teach.page.frame_locator("iframe[src*='formgrader']").last
    frame.locator("td.name", has_text=ASSIGNMENT).wait_for()
    return frame


def formgrader_action(teach: User, frame, column: str, what: str) -> str:
    """Click the icon in `column` of the assignment's row; returns the log of the success dialog."""
    row = frame.locator("tr", has=frame.locator("td.name", has_text=ASSIGNMENT))
    row.locator(f"td.{column} a").click()
    modal = frame.locator("#success-modal, #error-modal")
    modal.wait_for()
    text = modal.inner_text()
    teach.shot(what)
    assert frame.locator("#success-modal").count() == 1, f"formgrader: {what} failed:\n{text[-3000:]}"
    modal.locator("button.close").first.click()
    modal.wait_for(state="detached")
    return text


# ------------------------------------------------------------------ the search
def secret_patterns() -> set[str]:
    public = "".join(p.read_text(errors="replace") for d in ("lib", "lectures", "exercises")
                     for p in sorted((REPO / d).rglob("*")) if p.suffix in (".py", ".ipynb", ".md"))
    return course_hub.secret_lines(REPO / "solutions", public)


def search_command(patterns: Path, tops: list[str]) -> str:
    """As the user who types it: every regular text file they can read that holds a secret line
    (-I skips binary files), and every git repository whose objects they can read."""
    where = " ".join(tops)
    return (f"grep -rIl -F -f {patterns} {where} 2>/dev/null > ~/leaks.txt; "
            f"find {where} -name objects -type d -readable 2>/dev/null "
            "| while read o; do g=$(dirname \"$o\"); [ -f \"$g/HEAD\" ] && [ -r \"$g/HEAD\" ] && echo \"$g\"; done "
            "> ~/gits.txt; true")


# ------------------------------------------------------------------ the semester
@pytest.fixture(scope="module")
def walk():
    needs_accounts()
    ensure_debian_packages(["bubblewrap"], binaries=["bwrap"])
    chromium = ensure_debian_packages(["chromium"], binaries=["chromium"])["chromium"]
    playwright_api = pytest.importorskip("playwright.sync_api")
    install_proxy()
    clash = [u for u in (INSTRUCTOR, *STUDENTS) if subprocess.run(["id", u], capture_output=True).returncode == 0]
    assert not clash, f"accounts {clash} exist already: a previous run was not cleaned up"

    started = time.time()
    root = Path(tempfile.mkdtemp(prefix="dlcourse-hubweb-", dir="/tmp"))
    root.chmod(0o755)
    course = root / "course"
    # the course directory: the committed tree of this checkout (the README gives the checkout
    # itself), sharing the checkout's virtual environment
    course.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(course)], input=archive, check=True)
    (course / ".venv").symlink_to(REPO / ".venv")
    # `make` must not see a pyproject.toml newer than the checkout's install (it would reinstall)
    stamp = (REPO / ".venv" / ".installed-stamp").stat().st_mtime_ns - 1_000_000_000
    os.utime(course / "pyproject.toml", ns=(stamp, stamp))
    record: dict = {"course": course, "exchange": root / "exchange", "started": started}
    hub, people, playwright, browser = None, {}, None, None
    passwords = {u: secrets.token_urlsafe(12) for u in (INSTRUCTOR, *STUDENTS)}
    try:
        # 1. the administrator (README): the instructor's account, the course, the hub, passwords
        subprocess.run(["useradd", "--create-home", "--key", "HOME_MODE=0700", "--shell", "/bin/bash", INSTRUCTOR],
                       check=True)
        subprocess.run(["chown", "-R", "--no-dereference", f"{INSTRUCTOR}:", str(course)], check=True)
        course.chmod(0o755)
        hub = start_hub(root, course, INSTRUCTOR, STUDENTS)
        subprocess.run(["chpasswd"], input="".join(f"{u}:{p}\n" for u, p in passwords.items()), text=True,
                       check=True)
        record["homes"] = {u: in_home(u, "").stat().st_mode & 0o777 for u in (INSTRUCTOR, *STUDENTS)}
        record["shells"] = {u: subprocess.run(["getent", "passwd", u], capture_output=True, text=True).stdout
                            .strip().split(":")[-1] for u in (INSTRUCTOR, *STUDENTS)}

        playwright = playwright_api.sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        people.update({u: User(browser, hub.base, u, passwords[u]) for u in (INSTRUCTOR, ALICE, BOB)})
        teach, alice, bob = people[INSTRUCTOR], people[ALICE], people[BOB]

        # 2. the instructor: formgrader in JupyterLab's frame; generate, release
        record["teach_landing"] = teach.log_in()
        frame = formgrader_frame(teach)
        teach.shot("formgrader")
        record["generate"] = formgrader_action(teach, frame, "assign", "generate")
        record["release"] = formgrader_action(teach, frame, "release", "release")
        # the preview link in the frame opens the release in JupyterLab's file browser
        row = frame.locator("tr", has=frame.locator("td.name", has_text=ASSIGNMENT))
        row.locator("td.preview a").click()
        teach.page.locator(".jp-FileBrowser .jp-BreadCrumbs", has_text=ASSIGNMENT).wait_for()
        record["preview_in_frame"] = teach.page.locator(".jp-FileBrowser .jp-BreadCrumbs").inner_text()
        teach.shot("preview")
        # formgrader in a tab of its own: every link of its assignments page leads somewhere
        own = teach.context.new_page()
        own.goto(f"{teach.server}/formgrader/manage_assignments")
        own.locator("td.name a", has_text=ASSIGNMENT).wait_for()
        row = own.locator("tr", has=own.locator("td.name", has_text=ASSIGNMENT))
        links = {which: row.locator(f"td.{which} a").first.get_attribute("href") for which in ("name", "preview")}
        record["own_tab"] = {}
        for which, href in links.items():  # followed with the instructor's cookies, redirects and all
            response = own.request.get(f"{hub.base}{href}" if href.startswith("/") else href)
            record["own_tab"][which] = (href, response.status, response.url)
        own.close()

        # 3. the README's nbgrader command for the due date, in the instructor's terminal
        due = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() + 3600))
        record["duedate"] = run_and_record(
            teach, f"command -v nbgrader && nbgrader db assignment add {ASSIGNMENT} --duedate='{due}' "
                   "&& nbgrader db assignment list",
            "duedate", 120)

        # 4. the students: Assignments tab, fetch; alice answers; Validate; submit
        record["landing"], record["validate"] = {}, {}
        record["assignments_tab_at_login"] = {}
        for student in (alice, bob):
            record["landing"][student.name] = student.log_in()
            tab = student.page.locator("#jp-main-dock-panel .lm-TabBar-tabLabel", has_text="Assignments")
            try:
                tab.wait_for(timeout=30_000)
                record["assignments_tab_at_login"][student.name] = True
            except playwright_api.TimeoutError:
                record["assignments_tab_at_login"][student.name] = False
            student.shot("landing")
            student.menu("Nbgrader", "Assignment List")
            fetch = student.page.locator("#released_assignments_list button", has_text="Fetch")
            fetch.click()
            student.page.locator("#fetched_assignments_list", has_text=ASSIGNMENT).wait_for()
        # who may frame whose pages: the instructor's server its own (formgrader), a student's none
        record["csp"] = {}
        for user in (teach, alice):
            response = user.context.request.get(f"{user.server}/lab", max_redirects=0)
            record["csp"][user.name] = (response.status, response.headers.get("content-security-policy"))
        path = f"{ASSIGNMENT}/{NOTEBOOK}.ipynb"
        released = alice.api("GET", f"api/contents/{path}")["content"]
        alice.api("PUT", f"api/contents/{path}", data=json.dumps({"type": "notebook", "content": filled_in(released)}))
        for student in (alice, bob):
            page = student.page
            page.goto(f"{student.server}/lab/tree/{path}")
            student.wait_for_lab()
            page.locator(".jp-NotebookPanel-toolbar button, .jp-NotebookPanel-toolbar jp-button",
                         has_text="Validate").first.click()
            dialog = page.locator(".jp-Dialog")
            dialog.wait_for(timeout=GRADE_TIMEOUT * 1000)
            dialog.locator(".jp-Dialog-content", has_text=re.compile(r"\S")).wait_for()
            page.wait_for_function("() => !document.querySelector('.jp-Dialog')?.innerText.includes('Validating')",
                                   timeout=GRADE_TIMEOUT * 1000)
            record["validate"][student.name] = dialog.inner_text()
            student.shot("validate")
            page.keyboard.press("Escape")
            dialog.wait_for(state="detached")
            student.menu("Nbgrader", "Assignment List")
            submit = page.locator("#fetched_assignments_list button", has_text="Submit")
            submit.click()
            page.locator("#submitted_assignments_list", has_text=ASSIGNMENT).wait_for()
            student.shot("submitted")

        # 5. the instructor: collect in formgrader, `make grade` in the terminal, the manual
        #    grading page, release feedback
        teach.page.goto(f"{teach.server}/lab")
        teach.wait_for_lab()
        frame = formgrader_frame(teach)
        record["collect"] = formgrader_action(teach, frame, "collect", "collect")
        t0 = time.monotonic()
        record["grade"] = run_and_record(
            teach, f"make grade ASSIGNMENT={ASSIGNMENT} SUBMISSIONS=submitted GRADE_ARGS='--workers 2 --quiet'",
            "grade", GRADE_TIMEOUT)
        record["grade_seconds"] = time.monotonic() - t0
        own = teach.context.new_page()
        own.goto(f"{teach.server}/formgrader/manage_submissions/{ASSIGNMENT}")
        own.locator("td", has_text=ALICE).first.wait_for()
        record["submissions_page"] = own.locator("body").inner_text()
        # manual grading: Manage Students -> alice -> ps_convolution -> the notebook; the written
        # answer gets 1.5 of 2, its rubric shown under it
        own.goto(f"{teach.server}/formgrader/manage_students/{ALICE}/{ASSIGNMENT}")
        own.locator("td.name a", has_text=NOTEBOOK).first.click()
        own.locator("input.score").first.wait_for()
        rubric = own.locator(".dlcourse-rubric")
        record["manual_grading"] = {
            "url": own.url, "scores": own.locator("input.score").count(), "rubrics": rubric.count(),
            "rubric": rubric.first.inner_text() if rubric.count() else "",
            "rubric_visible": rubric.count() > 0 and rubric.first.is_visible(),
            # the rubric sits right after the written answer's panel (its score box), before the next cell
            "rubric_follows_answer": own.evaluate(f"""() => {{
                const answer = document.getElementById("{WRITTEN}").closest(".cell");
                const next = answer.nextElementSibling;
                return !!(next && next.querySelector(".dlcourse-rubric")); }}""")}
        # formgrader's script has bound the score box once it gave the extra-credit box its placeholder
        own.locator(f"input#{WRITTEN}_extra_credit[placeholder]").wait_for(state="attached")
        own.fill(f"input.score#{WRITTEN}", str(WRITTEN_SCORE))
        own.keyboard.press("Tab")
        submission_id = re.search(r"/submissions/([^/?]+)", own.url).group(1)
        record["manual_score"] = wait_for_manual_score(teach, submission_id, WRITTEN, 30)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        rubric.first.scroll_into_view_if_needed()
        own.screenshot(path=str(SCREENSHOTS / "teach-manual-grading.png"))
        own.close()
        teach.page.goto(f"{teach.server}/lab")
        teach.wait_for_lab()
        frame = formgrader_frame(teach)
        record["generate_feedback"] = formgrader_action(teach, frame, "generate-feedback", "generate-feedback")
        record["release_feedback"] = formgrader_action(teach, frame, "release-feedback", "release-feedback")

        # 6. the students fetch their feedback
        record["feedback"], record["view_feedback"] = {}, {}
        for student in (alice, bob):
            page = student.page
            page.goto(f"{student.server}/lab")
            student.wait_for_lab()
            student.menu("Nbgrader", "Assignment List")
            page.locator("#submitted_assignments_list button", has_text="Fetch Feedback").first.click()
            page.locator("#submitted_assignments_list", has_text="view feedback").wait_for()
            row = page.locator("#submitted_assignments_list .nested_list_item").first.inner_text()
            student.shot("feedback-row")
            page.locator("#submitted_assignments_list a", has_text="view feedback").first.click()
            viewer = page.locator(".jp-HTMLViewer").last
            viewer.wait_for()
            shown = page.frame_locator(".jp-HTMLViewer iframe").last
            shown.locator("h4").first.wait_for()
            record["view_feedback"][student.name] = {
                "row": row,
                "tab": page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current").first.inner_text(),
                "sandbox": viewer.locator("iframe").first.get_attribute("sandbox"),
                "header": shown.locator("h4").first.inner_text(),
                "math": shown.locator("math").count(),
                "text": shown.locator("body").inner_text(),
                "scripts": shown.locator("script[src]").count()}
            student.shot("feedback")
            listing = student.api("GET", f"api/contents/{ASSIGNMENT}/feedback")["content"]
            pages = {}
            for folder in listing:
                for f in student.api("GET", f"api/contents/{folder['path']}")["content"]:
                    if f["name"].endswith(".html"):
                        pages[f["path"]] = student.api("GET", f"api/contents/{f['path']}",
                                                       params={"type": "file", "format": "text"})["content"]
            record["feedback"][student.name] = pages

        # 7. everything bob can read, searched from his terminal (alice's own answers would be found
        #    in her home: the model answers were typed into her notebook)
        patterns = root / "patterns.txt"
        record["patterns"] = secret_patterns()
        patterns.write_text("".join(f"{p}\n" for p in sorted(record["patterns"])))
        patterns.chmod(0o644)
        tops = sorted(str(p) for p in Path("/").iterdir()
                      if p.name not in ("proc", "sys", "dev", "run") and not p.is_symlink())
        t0 = time.monotonic()
        record["search"] = run_and_record(bob, search_command(patterns, tops), "search", SEARCH_TIMEOUT)
        record["search_seconds"] = time.monotonic() - t0
        record["leaks"] = [line for line in in_home(BOB, "leaks.txt").read_text().splitlines()
                           if line != str(patterns)]
        record["gits"] = in_home(BOB, "gits.txt").read_text().splitlines()
        record["hub"] = hub
        yield record
    except BaseException:
        for step in ("duedate", "grade", "search"):  # what the terminal commands said
            if step in record:
                print(f"\n--- {step}: exit status {record[step][0]} ---\n{record[step][1][-3000:]}")
        for person in people.values():  # what each page showed when it went wrong
            try:
                person.shot("at-failure")
            except Exception:  # noqa: BLE001 (a page that is gone has nothing to show)
                pass
        raise
    finally:
        for person in people.values():
            try:
                person.close()
            except Exception:  # noqa: BLE001 (closing what may be half-made; the accounts go below)
                pass
        if browser is not None:
            browser.close()
        if playwright is not None:
            playwright.stop()
        forced = stop_everything(hub, [INSTRUCTOR, *STUDENTS])
        left = [u for u in (INSTRUCTOR, *STUDENTS) if subprocess.run(["id", u], capture_output=True).returncode == 0]
        shutil.rmtree(root, ignore_errors=True)
        print(f"\nhub walk-through: {time.time() - started:.1f} s (make grade {record.get('grade_seconds', 0):.1f} s, "
              f"the search {record.get('search_seconds', 0):.1f} s); screenshots in {SCREENSHOTS}; "
              f"stopped by force: {forced or 'nothing'}")
        assert not left, f"accounts left behind: {left}"
        assert not forced, f"the hub did not stop these by itself: {forced}"


# ------------------------------------------------------------------ what must hold
def test_accounts_as_the_readme_makes_them(walk):
    assert walk["homes"] == {u: 0o700 for u in (INSTRUCTOR, *STUDENTS)}, walk["homes"]
    assert walk["shells"] == {u: "/bin/bash" for u in (INSTRUCTOR, *STUDENTS)}, walk["shells"]


def test_formgrader_opens_in_jupyterlabs_frame_and_releases(walk):
    assert "/lab" in walk["teach_landing"]
    assert "Successfully" in walk["generate"] and "Successfully" in walk["release"]
    assert (walk["exchange"] / COURSE_ID / "outbound" / ASSIGNMENT / f"{NOTEBOOK}.ipynb").is_file()
    assert "exercises" in walk["preview_in_frame"] and ASSIGNMENT in walk["preview_in_frame"]


def test_only_the_instructors_server_may_be_framed_by_its_own_pages(walk):
    (teach_status, teach_csp), (alice_status, alice_csp) = walk["csp"][INSTRUCTOR], walk["csp"][ALICE]
    assert teach_status == alice_status == 200, walk["csp"]
    assert "frame-ancestors 'self'" in teach_csp and "frame-ancestors 'none'" in alice_csp, walk["csp"]


def test_formgraders_links_work_in_a_tab_of_their_own(walk):
    for which, (href, status, landed) in walk["own_tab"].items():
        assert status == 200 and f"/user/{INSTRUCTOR}/lab/tree/" in landed, (which, href, status, landed)


def test_the_readmes_nbgrader_commands_run_in_the_instructors_terminal(walk):
    rc, out = walk["duedate"]
    assert rc == 0 and "not found" not in out, out[-2000:]
    assert out.splitlines()[0] == str(REPO / ".venv" / "bin" / "nbgrader"), out[:500]
    assert ASSIGNMENT in out


def test_students_land_on_the_assignments_tab(walk):
    assert walk["assignments_tab_at_login"] == {s: True for s in STUDENTS}, walk["assignments_tab_at_login"]
    for s in STUDENTS:
        assert f"/user/{s}/lab" in walk["landing"][s]


def test_students_fetch_validate_and_submit_in_the_browser(walk):
    assert "Success! Your notebook passes all the tests." in walk["validate"][ALICE], walk["validate"][ALICE][:2000]
    bob = walk["validate"][BOB]
    for n, title in enumerate(PARTS, 1):   # the untouched release: one line per part, no test source
        assert f"Part {n} not answered yet ({title})" in bob, bob[:2000]
    assert len(bob) < 1500 and "Traceback" not in bob and "check_close" not in bob, bob[:2000]
    for s in STUDENTS:
        assert (walk["course"] / "submitted" / s / ASSIGNMENT / f"{NOTEBOOK}.ipynb").is_file()


def test_make_grade_in_the_instructors_terminal(walk):
    rc, out = walk["grade"]
    assert rc == 0, out[-4000:]
    assert "2 students: 2 graded, 0 late, 0 failed" in out, out[-4000:]
    assert f"only once it is released, again after every grading: nbgrader release_feedback {ASSIGNMENT}" in out
    assert ALICE in walk["submissions_page"] and BOB in walk["submissions_page"]


def test_manual_grading_page_shows_the_rubric_under_the_written_answer(walk):
    grading = walk["manual_grading"]
    assert "/formgrader/submissions/" in grading["url"] and grading["scores"] >= 1, grading["url"]
    assert grading["rubrics"] == 1 and grading["rubric_visible"] and grading["rubric_follows_answer"], grading
    assert "Marking rubric (2 points; half points allowed)" in grading["rubric"], grading["rubric"][:1000]
    assert walk["manual_score"] == WRITTEN_SCORE, walk["manual_score"]


def test_feedback_released_from_formgrader_reaches_each_student(walk):
    assert "Successfully" in walk["generate_feedback"] and "Successfully" in walk["release_feedback"]
    for s in STUDENTS:
        pages = walk["feedback"][s]
        assert len(pages) == 1, f"{s}: {sorted(pages)}"
        text = " ".join(re.sub(r"<[^>]+>", " ", next(iter(pages.values()))).split())
        assert re.search(r"Score:\s*[0-9.]+\s*/\s*[0-9.]+", text), text[:500]


def test_nothing_a_student_can_read_holds_a_solution_or_a_hidden_test(walk):
    """Findings under the checkout, the course, the exchange or a hub user's home, or owned by
    one of the hub's accounts wherever they are, are the course's: none may exist. Anything else
    readable on the host (a copy someone else left in /tmp, say) is reported, not failed: the hub
    cannot know of it."""
    assert len(walk["patterns"]) > 100
    rc, out = walk["search"]
    assert rc == 0, out[-2000:]
    ours = [str(REPO), str(walk["course"]), str(walk["exchange"])] + \
           [os.path.expanduser(f"~{u}") for u in (INSTRUCTOR, *STUDENTS)]

    accounts = {pwd.getpwnam(u).pw_uid for u in (INSTRUCTOR, *STUDENTS)}

    def is_ours(path: str) -> bool:
        try:
            owned = os.lstat(path).st_uid in accounts
        except OSError:
            owned = False
        return owned or any(path == o or path.startswith(o.rstrip("/") + "/") for o in ours)

    mine = [p for p in walk["leaks"] if is_ours(p)]
    elsewhere = [p for p in walk["leaks"] if not is_ours(p)]
    if elsewhere:
        print(f"\nreadable by a student, holding solution lines, not the course's: {elsewhere[:20]}")
    assert not mine, f"a student can read solution or hidden-test lines in: {mine[:20]}"
    history = []
    for git in filter(is_ours, walk["gits"]):
        log = subprocess.run(["git", f"--git-dir={git}", "log", "--all", "--format=", "--name-only", "--",
                              "solutions"], capture_output=True, text=True)
        if log.stdout.strip():
            history.append(git)
    assert not history, f"a student can read the course's git history: {history}"
    foreign = [g for g in walk["gits"] if not is_ours(g)]
    if foreign:
        print(f"\ngit repositories a student can read, not the course's: {foreign[:20]}")


def test_the_assignments_tab_shows_the_score_and_opens_the_feedback(walk):
    """alice: 11 points from the tests and 1.5 of 2 by hand; bob: nothing answered (nbgrader
    scores a written answer left as released 0, with no one to grade it). "(view feedback)" opens the page in JupyterLab's HTML viewer,
    untrusted (no scripts), where the math is MathML that needs neither scripts nor network."""
    views = walk["view_feedback"]
    assert "score 12.5 / 13" in views[ALICE]["row"], views[ALICE]["row"]
    assert "score 0 / 13" in views[BOB]["row"], views[BOB]["row"]   # an answer left as released scores 0
    for s in STUDENTS:
        view = views[s]
        assert f"{NOTEBOOK}.html" in view["tab"], view["tab"]
        assert "allow-scripts" not in (view["sandbox"] or ""), view["sandbox"]   # the untrusted viewer
        assert view["math"] > 0 and "$$" not in view["text"] and "\\sum" not in view["text"], view["text"][:1000]
        assert view["scripts"] == 0, "the feedback needs no script from anywhere"
    assert "Score: 12.5 / 13" in views[ALICE]["header"], views[ALICE]["header"]
    # the grading page's rubric stays there (alice typed in the model answer, rubric and all: bob's tells)
    assert all("Answer key and marking rubric" not in views[s]["text"] for s in STUDENTS)
    assert "Marking rubric" not in views[BOB]["text"]
