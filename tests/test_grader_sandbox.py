"""The grading kernel's sandbox is an allow-list, and one student cannot stop everyone's grading.

One batch of the tiny assignment (tests/fixtures/tiny_assignment.py) after copies of the course,
solutions included, were planted world-readable under /srv, /opt, /var and /mnt, next to a
PostgreSQL-like socket, an instructor secret in the grader's environment and a TCP listener:

* `thief` searches the file system for solution notebooks and runs the solution it finds;
* `spy` lists what it can see (the root, the planted folders, /tmp, its scratch folder's parents)
  and tries the socket, the secret, the gradebook and the network;
* `peeker` tries to import and read the instructor's tools in the course's package (the grader,
  the hub, the notebook tools), which its kernel must not see, and the modules notebooks use;
* `disk` writes 15 files of 200 MB into its scratch folder (quota: 256 MB);
* `hog` allocates 150 MB in each of 8 processes (cap of the whole kernel: 768 MB);
* `alice` and `bob` are honest and must be graded as usual in the same batch, and `plotter`
  (torch, numpy, a matplotlib figure) must run without a word on stderr: in a test cell any
  stderr output (say, a library complaining about a file the sandbox left out) scores 0.

The cgroup v1/v2 detection is also tested on fake cgroup folders, which runs anywhere; the
package's view alone is also tested in a bare sandbox (a fresh kernel's: the batch's are forks).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest

from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK, POINTS, write_source
from nbgrader_harness import grade_id, solved, tiny_course
from system_packages import ensure_debian_packages

from dlcourse.grading import kernel_library
from dlcourse.grading.batch import MEMORY_CAP, Settings, grade_batch
from dlcourse.grading.cage import SandboxUnavailable, bwrap_prefix, check_bwrap, instructor_modules
from dlcourse.grading.cgroups import MemoryCap, find_parent
from dlcourse.grading.kernel_template import NOT_PRELOADED
from dlcourse.grading.sandbox import Limits, readable_paths

REPO = Path(__file__).resolve().parents[1]
PLANT_IN = ("/srv", "/opt", "/var", "/mnt")
SECRET = "DLCOURSE_TEST_INSTRUCTOR_SECRET"
LIMITS = Limits(memory_mb=1536, processes=40, cpu_seconds=60, total_memory_mb=768, scratch_mb=256)

THIEF = '''
import os
found = []
for top in ("/", "/srv", "/opt", "/var", "/mnt", "/home", "/root", "/tmp", "/work"):
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "usr", "site-packages", "lib")]
        if folder.count("/") > 7:
            dirs[:] = []
        for name in files:
            if name.endswith(".ipynb"):
                try:
                    text = open(os.path.join(folder, name)).read()
                except OSError:
                    continue
                if "BEGIN SOLUTION" in text:
                    found.append(os.path.join(folder, name))
print("THIEF", sorted(set(found)))
def add(a, b):
    return a - b
for path in found:
    import json
    for cell in json.load(open(path))["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "add":
            exec("".join(cell["source"]))
'''

SPY = '''
import glob, json, os, socket
def _try(f):
    try:
        return f()
    except Exception as e:
        return type(e).__name__
def _secret_in_proc():
    hits = []
    for path in glob.glob("/proc/*/environ"):
        try:
            if b"{secret}" in open(path, "rb").read():
                hits.append(path)
        except OSError:
            pass
    return hits
def _unix(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return "connected"
seen = {{
    "listing": {{d: _try(lambda d=d: sorted(os.listdir(d))) for d in ("/", "/srv", "/opt", "/var", "/mnt", "/tmp", "/home", "/etc")}},
    "planted": {{p: _try(lambda p=p: sorted(os.listdir(p))) for p in {planted!r}}},
    "ancestors": {{str(p): _try(lambda p=p: sorted(os.listdir(p))) for p in __import__("pathlib").Path.cwd().parents}},
    "socket": _try(lambda: _unix({socket_path!r})),
    "gradebook": _try(lambda: open("{root}/gradebook.db", "rb").read(16).decode("latin-1")),
    "env": "{secret}" in os.environ or any("{secret}" in v for v in os.environ.values()),
    "proc_environ": _secret_in_proc(),
    "network": _try(lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2) and "connected"),
    "uid": os.getuid(),
}}
print("SPY", json.dumps(seen))
def add(a, b):
    return a + b
'''

# what a kernel finds of the instructor's tools, and of two modules that notebooks import
PEEK = '''
import importlib, json, os, sys
import dlcourse
def _import(name):
    try:
        importlib.import_module(name)
        return "imported"
    except Exception as e:
        return type(e).__name__
def _read(path):
    try:
        with open(os.path.join(os.path.dirname(dlcourse.__file__), path), "rb") as f:
            return f"read {len(f.read())} bytes"
    except Exception as e:
        return type(e).__name__
print("PEEK", json.dumps({
    "loaded": sorted(m for m in sys.modules if m.startswith(("dlcourse.grading", "dlcourse.hub", "dlcourse.notebooks"))),
    "imports": {m: _import(m) for m in ("dlcourse.hub", "dlcourse.hub_access", "dlcourse.grading.batch",
                                        "dlcourse.grading.cage", "dlcourse.notebooks",
                                        "dlcourse.conv", "dlcourse.checks")},
    "files": {f: _read(f) for f in ("hub.py", "hub_access.py", "notebooks.py", "grading/batch.py", "grading/__init__.py",
                                    "grading/kernel_checks.py", f"__pycache__/hub.{sys.implementation.cache_tag}.pyc")},
}))
def add(a, b):
    return a + b
'''
HIDDEN = {"dlcourse.hub": "ModuleNotFoundError", "dlcourse.hub_access": "ModuleNotFoundError",
          "dlcourse.grading.batch": "ModuleNotFoundError", "dlcourse.grading.cage": "ModuleNotFoundError", "dlcourse.notebooks": "ModuleNotFoundError",
          "dlcourse.conv": "imported", "dlcourse.checks": "imported"}

DISK = '''
import os
written, error = 0, None
chunk = b"x" * (8 * 2**20)
try:
    for i in range(15):
        with open(f"big{i}.bin", "wb") as f:
            for _ in range(25):
                f.write(chunk)
                written += len(chunk)
except OSError as e:
    error = f"{type(e).__name__}: {e.strerror}"
st = os.statvfs(".")
print("DISK", written // 2**20, error, st.f_blocks * st.f_frsize // 2**20)
for name in os.listdir("."):
    if name.startswith("big"):
        os.remove(name)
def add(a, b):
    return a + b
'''

PLOTTER = '''
import matplotlib
matplotlib.use("agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
fig, ax = plt.subplots(figsize=(2, 2))
ax.plot(np.arange(3), torch.arange(3.0).numpy())
ax.set_title("what students draw")
fig.canvas.draw()
def add(a, b):
    return a + b
'''

HOG = '''
import os, time
children = []
for _ in range(8):
    pid = os.fork()
    if pid == 0:
        block = b"x" * (150 * 2**20)
        time.sleep(30)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
def add(a, b):
    return a + b
'''


def _plant(tmp_name: str) -> list[Path]:
    """World-readable copies of a course with its solutions in PLANT_IN; the folders made."""
    made = []
    for top in PLANT_IN:
        folder = Path(top) / tmp_name
        write_source(folder / "course-copy")
        (folder / "course-copy" / "gradebook.db").write_bytes(b"SQLite format 3\0")
        for p in [folder, *folder.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        made.append(folder)
    return made


def _cell_text(course, student, gid="add") -> str:
    nb = course.read("autograded", student, ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    cell = next(c for c in nb.cells if grade_id(c) == gid)
    return "".join(o.get("text", "") for o in cell.outputs)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("planting course copies under /srv, /opt, /var and /mnt needs root")
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    root = tmp_path_factory.mktemp("course")
    course = tiny_course(root)

    name = f"dlcourse-planted-{uuid.uuid4().hex[:8]}"
    planted = _plant(name)
    sock_dir = Path("/run") / name
    sock_dir.mkdir(mode=0o755)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(sock_dir / ".s.PGSQL.5432"))
    os.chmod(sock_dir / ".s.PGSQL.5432", 0o777)
    unix.listen()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    spy = SPY.format(secret=SECRET, root=root, port=listener.getsockname()[1], socket_path=str(sock_dir / ".s.PGSQL.5432"),
                     planted=[str(p / "course-copy" / "solutions") for p in planted])

    folder = tmp_path_factory.mktemp("submissions")
    for student, code in {"alice": None, "bob": "release", "thief": THIEF, "spy": spy, "disk": DISK, "hog": HOG,
                          "plotter": PLOTTER, "peeker": PEEK}.items():
        nb = course.read("exercises", ASSIGNMENT, f"{NOTEBOOK}.ipynb") if code == "release" \
            else solved(course, ASSIGNMENT, NOTEBOOK, {"add": code} if code else None)
        (folder / student).mkdir(parents=True)
        nbformat.write(nb, folder / student / f"{NOTEBOOK}.ipynb")
    os.environ[SECRET] = SECRET + "-value"
    try:
        rows = grade_batch(root, ASSIGNMENT, folder, Settings(cell_timeout=20, budget=90, workers=2, feedback=False,
                                                              limits=LIMITS), progress=False)
    finally:
        os.environ.pop(SECRET, None)
        listener.close()
        unix.close()
        for p in [*planted, sock_dir]:
            shutil.rmtree(p, ignore_errors=True)
    return course, planted, {r["student"]: r for r in rows}


def _parts(row):
    return {k: v for k, v in row["parts"].items() if k in POINTS}


def test_planted_course_copies_are_neither_listed_nor_used(batch):
    course, planted, rows = batch
    assert rows["thief"]["status"] == "graded", rows["thief"]
    found = _cell_text(course, "thief").split("THIEF ", 1)[1].splitlines()[0]
    assert found == "[]", f"the kernel found solution notebooks: {found}"
    assert rows["thief"]["parts"]["test_add"] == 0, "a stolen solution earned points"


def test_kernel_sees_only_what_it_needs(batch):
    course, planted, rows = batch
    assert _parts(rows["spy"]) == POINTS, rows["spy"]
    seen = json.loads(_cell_text(course, "spy").split("SPY ", 1)[1].splitlines()[0])
    for p in seen["planted"]:
        assert seen["planted"][p] == "FileNotFoundError", seen["planted"]
    for top in ("/srv", "/opt", "/var", "/mnt"):  # planted folders' parents: absent or without the copy
        listing = seen["listing"][top]
        assert listing == "FileNotFoundError" or planted[0].name not in listing, (top, listing)
    allowed = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "dev", "proc", "tmp"}
    python_tops = {Path(p).resolve().parts[1] for p in (os.sys.prefix, os.sys.base_prefix, REPO)}
    assert set(seen["listing"]["/"]) <= allowed | python_tops, seen["listing"]["/"]
    assert set(seen["listing"]["/etc"]) <= {"ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime",
                                            "nsswitch.conf", "hosts", "mime.types", "fonts"}, seen["listing"]["/etc"]
    chain = sorted(seen["ancestors"], key=len)  # /, /tmp, /tmp/dlg-*, .../s<slot>, .../spy, .../box
    on_the_way = {}  # a course checked out under /tmp: the path down to its venv and package shows too
    for bound in readable_paths():
        for parent, child in zip(bound.parents, [bound, *bound.parents]):
            on_the_way.setdefault(str(parent), set()).add(child.name)
    for folder, child in zip(chain[1:], chain[2:] + ["scratch"]):
        extra = {"conn"} if folder == chain[-1] else set()  # box holds scratch and the connection folder
        extra |= on_the_way.get(folder, set())
        assert set(seen["ancestors"][folder]) <= {Path(child).name} | extra, \
            f"{folder} shows {seen['ancestors'][folder]}: other students' folders or the host's files"
    assert seen["socket"] == "FileNotFoundError", seen
    assert seen["gradebook"] == "FileNotFoundError", seen
    assert seen["env"] is False and seen["proc_environ"] == [], seen
    assert seen["network"] in ("ConnectionRefusedError", "OSError", "TimeoutError"), seen
    assert seen["uid"] != 0


def _assert_no_instructor_tools(seen: dict) -> None:
    assert seen["imports"] == HIDDEN, seen["imports"]
    assert seen["loaded"] == [], f"a kernel forked from the template kept the grader's modules: {seen['loaded']}"
    cached = seen["files"].pop(f"__pycache__/hub.{sys.implementation.cache_tag}.pyc")
    assert set(seen["files"].values()) == {"FileNotFoundError"}, seen["files"]
    assert cached in ("FileNotFoundError", "read 0 bytes"), cached   # the hub's bytecode is masked


def test_the_kernel_has_no_instructor_tools(batch):
    """From inside a graded kernel: the grader, the hub and the notebook tools can be neither
    imported nor read; the modules notebooks use import as usual."""
    course, _, rows = batch
    assert _parts(rows["peeker"]) == POINTS, rows["peeker"]
    _assert_no_instructor_tools(json.loads(_cell_text(course, "peeker").split("PEEK ", 1)[1].splitlines()[0]))


def test_a_bare_sandbox_shows_the_package_without_instructor_tools(tmp_path):
    """The same from the first process of a sandbox, as a fresh kernel (no template) starts."""
    try:
        check_bwrap()
    except SandboxUnavailable as e:
        pytest.skip(str(e))
    scratch, connection = tmp_path / "scratch", tmp_path / "conn"
    scratch.mkdir(mode=0o777)
    connection.mkdir()
    (scratch / "peek.py").write_text(PEEK)
    cmd = bwrap_prefix(str(scratch), str(connection), os.geteuid() == 0) + [sys.executable, "-I", "peek.py"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    _assert_no_instructor_tools(json.loads(out.split("PEEK ", 1)[1]))


def test_one_list_names_the_instructor_tools():
    """The kernel template preloads none of them, and the kernel's integrity check snapshots none
    (kernel_library.py runs in the kernel, stdlib only: it keeps a copy of the list)."""
    assert set(NOT_PRELOADED) == set(kernel_library.INSTRUCTOR_TOOLS) == set(instructor_modules())
    assert {"dlcourse.grading", "dlcourse.hub", "dlcourse.notebooks"} <= set(instructor_modules())


def test_what_students_use_runs_without_complaints_in_the_sandbox(batch):
    course, _, rows = batch
    assert _parts(rows["plotter"]) == POINTS, rows["plotter"]
    nb = course.read("autograded", "plotter", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    noise = [o.get("text") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert noise == [], f"stderr inside the sandbox: {noise}"


def test_scratch_quota_stops_a_disk_filler_and_it_is_still_graded(batch):
    course, _, rows = batch
    assert _parts(rows["disk"]) == POINTS, rows["disk"]
    written, *error, size = _cell_text(course, "disk").split("DISK ", 1)[1].split()
    assert " ".join(error) == "OSError: No space left on device", error
    assert int(written) <= LIMITS.scratch_mb < 15 * 200, f"wrote {written} MB past a quota of {LIMITS.scratch_mb} MB"
    assert int(size) == LIMITS.scratch_mb, f"the scratch folder's file system holds {size} MB"


def test_memory_cap_stops_a_many_process_allocator_and_the_rest_is_graded(batch):
    _, _, rows = batch
    row = rows["hog"]
    if row.get("status") != "failed" and "cgroup" not in str(row.get("reason")):
        assert MemoryCap.create("dlcourse-probe", 64) is None, f"a memory cgroup exists but did not stop hog: {row}"
        pytest.skip("no memory cgroup on this machine")
    assert row["status"] == "failed" and row["reason"] == MEMORY_CAP.format(mb=LIMITS.total_memory_mb), row
    assert row.get("score") is None
    assert _parts(rows["alice"]) == POINTS and rows["alice"]["status"] == "graded", rows["alice"]
    assert rows["alice"]["flags"] == [], rows["alice"]["flags"]
    assert _parts(rows["bob"]) == dict.fromkeys(POINTS, 0), rows["bob"]


# --- cgroup v1 and v2 layouts, on fake cgroup folders (runs anywhere) --------------------------

def _fake(tmp_path, files: dict[str, str], own: str) -> tuple[Path, Path]:
    fs = tmp_path / "cgroup"
    for name, text in files.items():
        (fs / name).parent.mkdir(parents=True, exist_ok=True)
        (fs / name).write_text(text)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(own)
    return fs, proc


def test_cgroup_v2_is_used_where_it_has_the_memory_controller(tmp_path):
    fs, proc = _fake(tmp_path, {"cgroup.controllers": "cpu memory pids", "cgroup.subtree_control": "memory pids",
                                "grader.slice/cgroup.subtree_control": ""}, "0::/grader.slice\n")
    assert find_parent(fs, proc) == (fs, 2), "the grader's own cgroup cannot take children: the root can"
    (fs / "grader.slice/cgroup.subtree_control").write_text("memory")
    assert find_parent(fs, proc) == (fs / "grader.slice", 2), "a delegated cgroup is preferred"
    cap = MemoryCap.create("k0", 300, fs, proc)
    assert (cap.path / "memory.max").read_text() == str(300 * 2**20)
    assert (cap.path / "memory.swap.max").read_text() == "0" and (cap.path / "memory.oom.group").read_text() == "1"
    (cap.path / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 2\n")
    assert cap.oom_kills() == 2


def test_cgroup_v1_is_used_in_a_hybrid_layout_without_v2_memory(tmp_path):
    fs, proc = _fake(tmp_path, {"unified/cgroup.controllers": "hugetlb", "memory/memory.limit_in_bytes": "9",
                                "memory/batch/memory.limit_in_bytes": "9"},
                     "4:memory:/batch\n1:cpu,cpuacct:/\n0::/\n")
    assert find_parent(fs, proc) == (fs / "memory" / "batch", 1)
    cap = MemoryCap.create("k1", 200, fs, proc)
    assert cap.version == 1 and (cap.path / "memory.limit_in_bytes").read_text() == str(200 * 2**20)
    (cap.path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    assert cap.oom_kills() == 3


def test_no_memory_controller_means_no_cap(tmp_path):
    fs, proc = _fake(tmp_path, {"cgroup.controllers": "cpu pids", "cgroup.subtree_control": "cpu"}, "0::/\n")
    assert find_parent(fs, proc) is None and MemoryCap.create("k2", 100, fs, proc) is None


def test_the_batch_forked_its_kernels_from_the_template(batch):
    """The cases above ran in kernels forked from the kernel template (the default), not fresh
    ones. A forked run that timed out was graded again afresh; its log is <student>.forked.log."""
    from dlcourse.grading.kernel_template import FORKED
    course, _, rows = batch
    logs = course.path("grades", ASSIGNMENT, "logs")
    first = {s: logs / f"{s}.forked.log" if (logs / f"{s}.forked.log").exists() else logs / f"{s}.log" for s in rows}
    forked = {s for s, log in first.items() if FORKED in log.read_text()}
    assert forked == set(rows), f"not forked from the template: {sorted(set(rows) - forked)}"


def test_the_graders_hidden_first_cell_takes_no_prompt_number(batch):
    """The integrity baseline runs before the student's first cell without a number of its own:
    the autograded notebook (and the feedback) count the student's cells from In [1], as stock
    nbgrader does."""
    course, planted, rows = batch
    nb = course.read("autograded", "alice", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), counts
