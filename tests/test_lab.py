"""`make lab` starts a JupyterLab that serves the course: lectures, exercises, a kernel; it opens
on START.md with the course's settings (no news pop-up) and writes nothing into the home directory."""
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from nbgrader_harness import REPO


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_command(port: int, token: str) -> list[str]:
    """The command `make lab` runs (read from `make -n`, so the test follows the Makefile)."""
    extra = f"--no-browser --ServerApp.port={port} --ServerApp.port_retries=0 --ServerApp.token={token}"
    dry = subprocess.run(["make", "-s", "-n", "lab", f"LAB_ARGS={extra}"], cwd=REPO, capture_output=True, text=True, check=True)
    lines = [line for line in dry.stdout.splitlines() if "jupyter lab" in line]
    assert len(lines) == 1, dry.stdout
    return shlex.split(lines[0])


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """An empty home directory for the lab: it must still be empty when the lab has stopped."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def lab(home):
    port, token = free_port(), secrets.token_hex(8)
    cmd = lab_command(port, token)
    assert "--ServerApp.ip=127.0.0.1" in cmd, "JupyterLab must listen on localhost only"
    env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}", HOME=str(home))
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR", "XDG_CACHE_HOME",
                "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        env.pop(var, None)   # the Makefile must set what it needs itself
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def get(path, method="GET", body=None, follow=True):
        req = urllib.request.Request(base + path, method=method, data=body,
                                     headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
        opener = urllib.request.build_opener() if follow else urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=10) as resp:
                return resp.status, resp.read() if follow else resp.headers.get("Location", "")
        except urllib.error.HTTPError as error:
            if not follow and 300 <= error.code < 400:
                return error.code, error.headers.get("Location", "")
            raise

    deadline = time.monotonic() + 90
    while True:
        try:
            get("/api/status")
            break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode(errors="replace") if proc.poll() is not None else ""
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(f"JupyterLab did not start: {out[-3000:]}")
            time.sleep(0.5)
    yield get
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_lab_serves_the_lecture_and_the_exercise(lab):
    status, _ = lab("/lab")
    assert status == 200
    for folder in ("lectures", "exercises/ps_convolution"):
        listing = json.loads(lab(f"/api/contents/{folder}")[1])
        names = {item["name"] for item in listing["content"]}
        expected = {p.name for p in (REPO / folder).glob("*.ipynb")}
        assert expected and expected <= names
    nb = json.loads(lab("/api/contents/exercises/ps_convolution/convolution.ipynb")[1])
    assert nb["type"] == "notebook" and nb["content"]["cells"]


def test_lab_starts_a_python_kernel(lab):
    body = json.dumps({"path": "lectures/scratch.ipynb", "type": "notebook", "name": "scratch",
                       "kernel": {"name": "python3"}}).encode()
    status, reply = lab("/api/sessions", method="POST", body=body)
    assert status == 201
    session = json.loads(reply)
    kernels = json.loads(lab("/api/kernels")[1])
    assert session["kernel"]["id"] in {k["id"] for k in kernels}
    lab(f"/api/sessions/{session['id']}", method="DELETE")


def test_lab_opens_on_the_start_page(lab):
    status, location = lab("/", follow=False)
    assert status in (301, 302) and location.split("?")[0].endswith("/lab/tree/START.md"), (status, location)
    page = json.loads(lab("/api/contents/START.md")[1])
    assert page["type"] == "file" and "Lectures and problem sets" in page["content"]


def test_lab_uses_the_course_settings(lab):
    """No "get notified about official Jupyter news?" pop-up; Markdown opens rendered."""
    notification = json.loads(lab("/lab/api/settings/@jupyterlab/apputils-extension:notification")[1])
    props = notification["schema"]["properties"]
    assert props["fetchNews"]["default"] == "false" and props["checkForUpdates"]["default"] is False
    docmanager = json.loads(lab("/lab/api/settings/@jupyterlab/docmanager-extension:plugin")[1])
    assert docmanager["schema"]["properties"]["defaultViewers"]["default"] == {"markdown": "Markdown Preview"}


def test_lab_writes_nothing_into_the_home_directory(lab, home):
    lab("/lab")
    lab("/api/contents/lectures")
    assert sorted(p.name for p in home.rglob("*")) == []


def test_start_page_links_every_lecture_and_exercise():
    text = (REPO / "START.md").read_text()
    links = set(re.findall(r"\]\(([^)]+)\)", text))
    for link in links:
        assert (REPO / link).exists(), f"START.md links to {link}, which does not exist"
    expected = {p.relative_to(REPO).as_posix() for p in [*REPO.glob("lectures/*.ipynb"), *REPO.glob("exercises/*/*.ipynb")]}
    assert expected <= links, f"START.md does not link {sorted(expected - links)}"
