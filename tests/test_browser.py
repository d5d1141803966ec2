"""The course in a real browser: headless Chromium (Debian's package) driven by Playwright against
the JupyterLab that `make lab` starts.

* every lecture: open it, clear its outputs, Run All; no cell may end in an error; every widget
  renders (no "Error displaying widget", no "Loading widget..." left), and moving one control of the
  lecture's widget (a slider, a dropdown or a text box) changes what the widget shows;
* every exercise: nbgrader's Validate button reports the failing parts on the untouched release,
  and success once the solution cells are filled in.

The browser works on copies in a temporary folder that the test's JupyterLab serves as its root:
Run All, autosave and Validate (which saves first) must never rewrite the course's own notebooks.

Screenshots of each notebook go to the folder in DLCOURSE_SCREENSHOTS (default
.jupyter-state/screenshots/, git-ignored); the test prints where. Every notebook is an asyncio
task: lectures run PARALLEL at a time on one lab server, each Validate holds one of two other
servers; a job waits on the kernel's status and the page's state, never on a fixed sleep. A page
loads JupyterLab once and then opens one notebook after another (`Tabs`), and the test prints how
long each job waited, opened and ran, and how busy the machine's CPUs were.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

from nbgrader_harness import REPO, grade_id, strip_solution_markers
from system_packages import ensure_debian_packages
from test_lab import free_port

ONLY = [s for s in os.environ.get("DLCOURSE_BROWSER_ONLY", "").split(",") if s]   # e.g. "01_,ps_gan" while debugging
LECTURES = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "lectures").glob("*.ipynb")
                  if not ONLY or any(s in p.name for s in ONLY))
EXERCISES = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "exercises").glob("*/*.ipynb")
                   if not ONLY or any(s in p.as_posix() for s in ONLY))
STATE = REPO / ".jupyter-state"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PARALLEL = 2 * max(2, os.cpu_count() or 2)   # notebooks wait on the browser as often as on the CPU
JOB_TIMEOUT = 420


# ------------------------------------------------------------------ the lab and the browser
def start_lab(home: Path, root: Path, log_path: Path):
    """`make lab` (its command read from `make -n lab`) serving `root`, with the app exposed to
    the page's scripts."""
    port, token = free_port(), secrets.token_hex(8)
    extra = (f"--no-browser --ServerApp.port={port} --ServerApp.port_retries=0 --ServerApp.token={token} "
             "--LabApp.expose_app_in_browser=True")
    dry = subprocess.run(["make", "-s", "-n", "lab", f"LAB_ARGS={extra}"], cwd=REPO, capture_output=True, text=True,
                         check=True)
    cmd = shlex.split(next(line for line in dry.stdout.splitlines() if "jupyter lab" in line))
    assert any(a.startswith("--ServerApp.root_dir=") for a in cmd), cmd
    cmd = [f"--ServerApp.root_dir={root}" if a.startswith("--ServerApp.root_dir=") else a for a in cmd]
    # the test's own workspaces (a fresh, empty one per page; none kept in the course's .jupyter-state)
    assert any(a.startswith("--LabApp.workspaces_dir=") for a in cmd), cmd
    cmd = [f"--LabApp.workspaces_dir={home / 'workspaces'}" if a.startswith("--LabApp.workspaces_dir=") else a
           for a in cmd]
    # Kernels talk over Unix sockets, not TCP: three servers and nbgrader's Validate start dozens of
    # kernels at once here, and a TCP port that jupyter_client found free was taken by another
    # kernel before this one bound it ("Address already in use"; Validate then failed with "Kernel
    # didn't respond"). Both the server and nbgrader read the setting from JUPYTER_CONFIG_PATH; the
    # sockets live in a short runtime folder (a Unix socket's path has at most 107 bytes).
    extra_config = home / "extra-config"
    extra_config.mkdir(exist_ok=True)
    for name in ("jupyter_server_config.json", "nbgrader_config.json"):
        (extra_config / name).write_text(json.dumps({"KernelManager": {"transport": "ipc"}}))
    runtime = tempfile.mkdtemp(prefix="jlab-")
    assert any(a.startswith("JUPYTER_RUNTIME_DIR=") for a in cmd), cmd
    cmd = [f"JUPYTER_RUNTIME_DIR={runtime}" if a.startswith("JUPYTER_RUNTIME_DIR=") else a for a in cmd]
    # one thread per kernel: several notebooks run at once here, and torch's threads of one kernel
    # spinning while another kernel holds the core made a lecture ten times slower
    env = dict(os.environ, HOME=str(home), PATH=f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", JUPYTER_CONFIG_PATH=str(extra_config))
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.runtime = runtime   # removed by stop_lab
    return proc, log, f"http://127.0.0.1:{port}", token


def stop_lab(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(proc.runtime, ignore_errors=True)


@pytest.fixture(scope="module")
def labs(tmp_path_factory):
    """Three JupyterLab servers as `make lab` starts them: one runs the lectures, two the
    exercises' Validate (nbgrader validates inside the server, one notebook at a time)."""
    home, logs = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("lab-logs")
    root = tmp_path_factory.mktemp("course-copies")
    started = [start_lab(home, root, logs / f"lab{i}.log") for i in range(3)]
    try:
        deadline = time.monotonic() + 120
        for proc, log, base, token in started:
            while True:
                try:
                    urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
                    break
                except (urllib.error.URLError, ConnectionError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"JupyterLab did not start: {Path(log.name).read_text()[-3000:]}")
                    time.sleep(0.3)
        yield root, [(base, token) for _, _, base, token in started]
    finally:
        for proc, log, _, _ in started:
            stop_lab(proc)
            log.close()


@pytest.fixture(scope="module")
def chromium() -> str:
    return ensure_debian_packages(["chromium"], binaries=["chromium"])["chromium"]


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = Path(os.environ.get("DLCOURSE_SCREENSHOTS", STATE / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of every notebook: {folder}")
    return folder


# ------------------------------------------------------------------ scripts run in the page
FIND_PANEL = """
(path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) { return null; }
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path === path) { return w; }
  }
  return null;
}
"""
APP_READY = "() => !!(window.jupyterapp && window.jupyterapp.shell)"
RESTORED = "async () => { await window.jupyterapp.restored; return true; }"
OPEN = """async (path) => { const app = window.jupyterapp;
  const panel = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
  app.shell.activateById(panel.id);
  return panel.id; }"""
CLOSE = "async (path) => { const panel = (" + FIND_PANEL + """)(path);
  if (!panel) { return; }
  try { await panel.sessionContext.shutdown(); } catch (e) { /* no kernel, or it is gone already */ }
  panel.dispose(); }"""
OPENED = "(path) => { const panel = (" + FIND_PANEL + """)(path); return !!(panel && panel.content); }"""
READY = "async (path) => { const panel = (" + FIND_PANEL + """)(path);
  await panel.context.ready; await panel.sessionContext.ready;
  return !!(panel.sessionContext.session && panel.sessionContext.session.kernel); }"""
KERNEL_IDLE = "(path) => { const panel = (" + FIND_PANEL + """)(path);
  const k = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!k && k.status === 'idle'; }"""
RUN_ALL = "async (path) => { const panel = (" + FIND_PANEL + """)(path);
  const app = window.jupyterapp;
  app.shell.activateById(panel.id);
  await app.commands.execute('notebook:clear-all-cell-outputs');
  panel.content.widgets.forEach(c => { if (c.model.type === 'code') { c.model.executionCount = null; } });
  await app.commands.execute('notebook:run-all-cells');
  return true; }"""
STATUS = "(path) => { const panel = (" + FIND_PANEL + """)(path);
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  const errors = [];
  cells.forEach((c, i) => c.model.outputs.toJSON().forEach(o => {
    if (o.output_type === 'error') { errors.push(`code cell ${i + 1}: ${o.ename}: ${o.evalue}`); } }));
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {total: cells.length, done: cells.filter(c => c.model.executionCount !== null).length,
          status: kernel ? kernel.status : 'none', errors}; }"""
WIDGET_TEXT = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-OutputArea-output'))
  .map(e => e.innerText).join('\\n')"""


@dataclass
class Job:
    source: str                   # the course's notebook (lectures/..., exercises/...)
    kind: str                     # "lecture", "release" (untouched exercise) or "filled"
    path: str = ""                # the copy the browser opens, relative to the lab's root
    page: object = None           # playwright's async Page (a tab of the pool) while the job runs
    panel: str = ""               # the DOM id of the notebook's panel in that page
    started: float = 0.0
    opened: float = 0.0
    result: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind}-{Path(self.source).stem}"


class Tabs:
    """Long-lived JupyterLab pages of one server, at most `size` at a time. Loading JupyterLab
    costs a page seconds of CPU, so a page opens one notebook after another (docmanager:open),
    each closed with its kernel shut down before the next. A page that broke is closed, not reused."""

    def __init__(self, context, base: str, token: str, size: int):
        self.context, self.base, self.token = context, base, token
        self.slots, self.idle = asyncio.Semaphore(size), []

    async def acquire(self):
        await self.slots.acquire()
        if self.idle:
            return self.idle.pop()
        try:
            page = await self.context.new_page()   # pages of one server share a context: scripts come from its cache
            # a fresh workspace: the page opens nothing but what a job asks for
            await page.goto(f"{self.base}/lab/workspaces/t{secrets.token_hex(6)}?token={self.token}", timeout=120_000)
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    await page.wait_for_function(APP_READY, timeout=120_000, polling=250)
                    await page.evaluate(RESTORED)
                    return page
                except Exception as error:  # JupyterLab reloaded the fresh page while it started
                    if attempt == ATTEMPTS or NAVIGATED not in str(error):
                        raise
                    await page.wait_for_load_state("load")
        except BaseException:
            self.slots.release()
            raise

    async def release(self, page, healthy: bool) -> None:
        if healthy:
            self.idle.append(page)
        else:
            try:
                await page.close()
            except Exception:  # noqa: BLE001 -- a crashed page may not close cleanly; it is dropped either way
                pass
        self.slots.release()


async def open_notebook(job: Job) -> None:
    """Open the job's notebook in its page and wait until its kernel is idle."""
    page = job.page
    job.panel = await page.evaluate(OPEN, job.path)
    await page.wait_for_function(OPENED, arg=job.path, timeout=120_000, polling=250)
    for attempt in range(3):   # the page may replace its session while starting: ask again
        try:
            if await page.evaluate(READY, job.path):
                break
        except Exception as error:  # playwright's Error (e.g. a promise collected with its old session)
            if attempt == 2:
                raise AssertionError(f"{job.path}: the kernel did not start: {error}") from error
        await page.wait_for_timeout(1000)
    await page.wait_for_function(KERNEL_IDLE, arg=job.path, timeout=120_000, polling=250)
    job.started = time.monotonic()


async def close_notebook(job: Job) -> None:
    """Dismiss Validate's dialog, shut the notebook's kernel down and close its panel: the page is
    empty again for the next job."""
    page = job.page
    dialogs = page.locator(".jp-Dialog")
    if await dialogs.count():
        await page.keyboard.press("Escape")
        await dialogs.first.wait_for(state="detached", timeout=10_000)
    await page.evaluate(CLOSE, job.path)
    await page.wait_for_function("(path) => !(" + FIND_PANEL + ")(path)", arg=job.path, timeout=10_000)


async def finished(job: Job) -> bool:
    if time.monotonic() - job.started > JOB_TIMEOUT:
        raise AssertionError(f"{job.path}: not finished after {JOB_TIMEOUT} s")
    page = job.page
    if job.kind == "lecture":
        status = await page.evaluate(STATUS, job.path)
        job.result = status
        return status["done"] == status["total"] and status["status"] == "idle"
    dialog = page.locator(".jp-Dialog .validation-success, .jp-Dialog .validation-failed, .jp-Dialog pre")
    if await dialog.count() == 0:
        return False
    body = page.locator(".jp-Dialog-body").first
    job.result = {"success": await page.locator(".jp-Dialog .validation-success").count() > 0,
                  "text": await body.inner_text()}
    return True


async def move_a_control(job: Job) -> str:
    """Move the controls of the lecture's last widget one after the other until what it shows
    changes; return the kind of control that did it (fails when none changes it within 20 s)."""
    page = job.page
    widgets = page.locator(".jp-OutputArea-output .jupyter-widgets")
    try:  # rendering may lag behind the kernel on a busy machine (and cells out of view render late)
        await page.locator(".jp-Notebook .jp-Cell").last.scroll_into_view_if_needed(timeout=10_000)
        await widgets.first.wait_for(state="attached", timeout=60_000)
    except Exception:
        pass
    assert await widgets.count() > 0, f"{job.path}: no widget rendered"
    text = await page.evaluate(WIDGET_TEXT)
    assert "Error displaying widget" not in text and "Loading widget" not in text, f"{job.path}: a widget did not render"
    controls = ".noUi-handle, .widget-dropdown select, .widget-text input"
    areas = page.locator(".jp-Cell-outputArea").filter(has=page.locator(controls))   # not the progress bars
    assert await areas.count() > 0, f"{job.path}: the widgets have no slider, dropdown or text box"
    area = areas.last
    await area.scroll_into_view_if_needed()
    shown = area.locator(".widget-html-content, .widget-output")   # what the widget shows, not its controls

    async def what_it_shows() -> str:
        return "\n".join([await shown.nth(i).inner_html() for i in range(await shown.count())])

    async def press(handle, key) -> None:
        await handle.focus()
        for _ in range(3):
            await page.keyboard.press(key)

    async def pick_another(select) -> None:  # the next option, read when it is picked (options may change)
        count = await select.locator("option").count()
        current = await select.evaluate("s => s.selectedIndex")
        await select.select_option(index=(current + 1) % max(count, 1), timeout=10_000)

    async def type_into(box) -> None:
        await box.fill("a new sentence to try")
        await box.press("Enter")

    before = await what_it_shows()
    attempts = []                                    # (description, coroutine function), tried in order
    handles = area.locator(".noUi-handle")
    for i in range(await handles.count()):
        for key in ("ArrowRight", "ArrowLeft"):
            attempts.append((f"slider {i + 1} ({key})", lambda h=handles.nth(i), k=key: press(h, k)))
    selects = area.locator(".widget-dropdown select")
    for i in range(await selects.count()):
        attempts.append((f"dropdown {i + 1}", lambda sel=selects.nth(i): pick_another(sel)))
    boxes = area.locator(".widget-text input")
    for i in range(await boxes.count()):
        attempts.append((f"text box {i + 1}", lambda b=boxes.nth(i): type_into(b)))
    failures = []
    for moved, action in attempts:
        try:
            await action()
        except Exception as error:  # playwright's Error or TimeoutError: try the next control
            failures.append(f"{moved}: {str(error).splitlines()[0]}")
            continue
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if await what_it_shows() != before:
                return moved.split(" ")[0] if not moved.startswith("text") else "text box"
            await page.wait_for_timeout(200)
    raise AssertionError(f"{job.path}: moving its controls ({', '.join(m for m, _ in attempts)}) did not change "
                         f"the widget" + (f"; could not move: {'; '.join(failures)}" if failures else ""))


NAVIGATED = "context was destroyed"   # playwright's words when the page reloaded under a script
ATTEMPTS = 3   # a job whose page reloaded under it starts over, up to this many times in all


async def run_job(job: Job, tabs: Tabs, screenshots: Path) -> None:
    """Open the notebook in a tab of the pool, Run All (a lecture) or click Validate (an exercise),
    wait for the end by polling the page, move a lecture's widget, take the screenshot, close it.
    JupyterLab reloads a freshly loaded page now and then while it starts (seen once per full
    run, and once twice in a row): the job then starts over on the reloaded page, up to ATTEMPTS
    times in all (it works on a copy, so running it again changes nothing)."""
    began = time.monotonic()
    healthy = False
    try:
        job.page = await tabs.acquire()
        job.opened = time.monotonic()
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if attempt > 1:   # on the reloaded page, which may reload once more while it starts
                    await job.page.wait_for_load_state("load")
                    await job.page.wait_for_function(APP_READY, timeout=120_000, polling=250)
                    await job.page.evaluate(RESTORED)
                    job.result = {}
                await attempt_job(job)
                break
            except Exception as error:  # playwright's Error
                if attempt == ATTEMPTS or NAVIGATED not in str(error):
                    raise
        job.result["phases"] = {"wait": job.opened - began, "open": job.started - job.opened,
                                "run": time.monotonic() - job.started}
        if job.kind == "lecture" and not job.result["errors"]:
            try:
                job.result["moved"] = await move_a_control(job)
            except Exception as error:  # an assertion, or playwright's Error: this lecture fails
                job.result["moved"] = f"failed: {error}"
        healthy = True
    except Exception as error:  # too slow, or the page broke: report it on this notebook's test
        job.result = {"errors": [f"{type(error).__name__}: {error}"], "success": False, "text": str(error),
                      "done": 0, "total": 0, "moved": "not reached"}
    finally:
        if job.page is not None:
            try:
                await job.page.screenshot(path=str(screenshots / f"{job.name}.png"))
                if healthy:
                    await close_notebook(job)
            except Exception as error:  # noqa: BLE001 -- this page is not reused; the job's result stands
                healthy = False
                job.result.setdefault("notes", []).append(f"closing failed: {error}")
            await tabs.release(job.page, healthy)
        job.result["seconds"] = time.monotonic() - (job.opened or began)


async def attempt_job(job: Job) -> None:
    """Open the notebook, start it (Run All or Validate) and wait until it has finished."""
    await open_notebook(job)
    if job.kind == "lecture":
        await job.page.evaluate(RUN_ALL, job.path)
    else:
        await job.page.locator(f"#{job.panel} .validate-button").first.click()
    while not await finished(job):
        await asyncio.sleep(0.25)


def make_copy(job: Job, root: Path) -> None:
    """Write the notebook the browser opens: the original, or for "filled" the release with every
    solution cell's model answer."""
    nb = nbformat.read(REPO / job.source, as_version=4)
    if job.kind == "filled":
        source = nbformat.read(REPO / "solutions" / Path(job.source).relative_to("exercises"), as_version=4)
        answers = {grade_id(c): strip_solution_markers(c.source) for c in source.cells
                   if c.get("metadata", {}).get("nbgrader", {}).get("solution")}
        for cell in nb.cells:
            if grade_id(cell) in answers:
                cell.source = answers[grade_id(cell)]
    target = root / job.kind / job.source
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    job.path = target.relative_to(root).as_posix()


# ------------------------------------------------------------------ the test
async def run_all(jobs: list[Job], chromium: str, lectures: tuple[str, str], validators: list[tuple[str, str]],
                  screenshots: Path) -> None:
    """Lectures run PARALLEL at a time on one server (their kernels run side by side), each in a
    tab of that server's pool. nbgrader's Validate holds its server while it runs, so each
    validation takes a server (with its one tab) from the pool of the others. Every job is a
    task: a page that loads or a widget that is moved holds up no other."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            lecture_tabs = Tabs(await browser.new_context(viewport={"width": 1400, "height": 1000}), *lectures,
                                size=PARALLEL)
            free = asyncio.Queue()
            for server in validators:
                free.put_nowait(Tabs(await browser.new_context(viewport={"width": 1400, "height": 1000}), *server,
                                     size=1))

            async def validation(job: Job) -> None:
                server = await free.get()
                try:
                    await run_job(job, server, screenshots)
                finally:
                    free.put_nowait(server)

            await asyncio.gather(*(run_job(j, lecture_tabs, screenshots) if j.kind == "lecture" else validation(j)
                                   for j in jobs))
        finally:
            await browser.close()


def cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy (Linux's /proc/stat; 0.0 elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, idle, iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def runs(labs, chromium, screenshots):
    pytest.importorskip("playwright.async_api", reason="playwright is not installed (pip install -e '.[dev]')")
    root, servers = labs
    # the longest first, roughly (a bigger notebook has more to run and to draw), so none is left alone at the end
    lectures = sorted(LECTURES, key=lambda p: -(REPO / p).stat().st_size)
    jobs = [Job(p, "lecture") for p in lectures] + [Job(p, k) for p in EXERCISES for k in ("filled", "release")]
    for job in jobs:
        make_copy(job, root)
    began, cpu = time.monotonic(), cpu_seconds()
    asyncio.run(run_all(jobs, chromium, servers[0], servers[1:], screenshots))
    wall = time.monotonic() - began
    busy = f", the machine's CPUs busy {(cpu_seconds() - cpu) / wall:.2f} of {os.cpu_count()}" if cpu else ""
    print(f"browser: {len(jobs)} notebooks in {wall:.0f} s{busy}; each, from opening to done:")
    for job in sorted(jobs, key=lambda j: -j.result["seconds"]):
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in job.result.get("phases", {}).items())
        print(f"  {job.result['seconds']:6.1f} s  {job.name}  ({phases}; moved: {job.result.get('moved', '-')})")
    return {(j.kind, j.source): j.result for j in jobs}


@pytest.mark.parametrize("path", LECTURES)
def test_lecture_runs_in_the_browser_and_its_widget_responds(runs, path):
    result = runs["lecture", path]
    assert not result["errors"], f"{path}: " + "; ".join(result["errors"])
    assert result["done"] == result["total"] > 0
    assert result["moved"] in ("slider", "dropdown", "text box"), result["moved"]


@pytest.mark.parametrize("path", EXERCISES)
def test_validate_reports_the_untouched_release_as_failing(runs, path):
    result = runs["release", path]
    assert not result["success"] and "The following cell failed" in result["text"], result["text"][:2000]


@pytest.mark.parametrize("path", EXERCISES)
def test_validate_passes_with_the_solutions_filled_in(runs, path):
    result = runs["filled", path]
    assert result["success"], result["text"][:3000]


def test_screenshots_were_written(runs, screenshots):
    names = {p.name for p in screenshots.glob("*.png")}
    expected = {f"lecture-{Path(p).stem}.png" for p in LECTURES} | {f"release-{Path(p).stem}.png" for p in EXERCISES}
    assert expected <= names, sorted(expected - names)
