"""`make lab` starts a JupyterLab that serves the course: lectures, exercises, a kernel."""
import json
import os
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
def lab():
    port, token = free_port(), secrets.token_hex(8)
    cmd = lab_command(port, token)
    assert "--ServerApp.ip=127.0.0.1" in cmd, "JupyterLab must listen on localhost only"
    env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def get(path, method="GET", body=None):
        req = urllib.request.Request(base + path, method=method, data=body,
                                     headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()

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
