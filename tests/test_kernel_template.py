"""Kernels forked from the kernel template (lib/dlcourse/grading/kernel_template.py) are caged
exactly like fresh ones, share nothing with each other, and fall back to a fresh start.

The same probe runs in a fresh sandboxed kernel and in a forked one (root and bubblewrap, as
the grader runs them): who it is, what it sees (files, processes, network, host name), its
environment, limits, capabilities and privileges must agree. Two forks in a row must not see
each other's globals, files or random numbers. A run whose forked kernel got into trouble
(stopped answering, timed out, died) is graded again with a fresh kernel, so that its result is
the one a batch without the template gives.
"""
import asyncio
import json
import os
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest

from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK, POINTS
from nbgrader_harness import solved, tiny_course
from system_packages import ensure_debian_packages

from dlcourse.grading.batch import Failure, Outcome, Settings, fork_trouble, grade_batch

from dlcourse.grading.kernel_template import ANCHOR, FORKED, KernelTemplate, is_anchor
from dlcourse.grading.sandbox import FIRST_UID, Limits, SandboxedKernelManager, bwrap_prefix

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the kernel template enters sandboxes: needs root")
LIMITS = Limits(memory_mb=2048, processes=50, cpu_seconds=60, file_mb=64, open_files=512)
UID = FIRST_UID + 990   # far from the uids that grading batches claim from FIRST_UID up

PROBE = r'''
import json, os, resource, socket, sys
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
limits = {n: resource.getrlimit(getattr(resource, n)) for n in
          ("RLIMIT_NPROC", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE", "RLIMIT_AS")}
print("PROBE" + json.dumps({
    "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()],
    "cwd": os.getcwd(), "env": sorted(os.environ), "home": os.environ.get("HOME"),
    "root": sorted(os.listdir("/")), "tmp": sorted(os.listdir("/tmp")),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "net": sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]),
    "hostname": socket.gethostname(), "sid_is_own": os.getsid(0) != 0,
    "caps": {k: status[k].strip() for k in ("CapPrm", "CapEff", "CapAmb")}, "inheritable": status["CapInh"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(), "limits": limits,
    "torch_loaded": "torch" in sys.modules, "history": get_ipython().history_manager.hist_file,
    "nice": os.getpriority(os.PRIO_PROCESS, 0),
    "threads": __import__("torch").get_num_threads(),
}))
'''


def run_kernel(work: Path, template: KernelTemplate | None, cells: list[str]) -> list[str]:
    """Start a sandboxed kernel (forked from `template`, or fresh), run the cells, return each
    cell's stdout; the kernel is shut down again."""
    scratch, conn = work / "scratch", work / "conn"
    for d in (scratch, conn):
        d.mkdir(parents=True)
        os.chown(d, UID, UID)
        d.chmod(0o700)
    km = SandboxedKernelManager(sandbox=True, scratch=str(scratch), connection_dir=str(conn), uid=UID,
                                limits=LIMITS.rlimits(), template_socket=str(template.socket_path) if template else "")

    async def go():
        await km.start_kernel(extra_arguments=["--HistoryManager.hist_file=:memory:"])   # as nbclient does
        kc = km.client()
        kc.start_channels()
        outputs = []
        try:
            await kc.wait_for_ready(timeout=60)
            for code in cells:
                out = []

                def hook(msg, out=out):
                    if msg["msg_type"] == "stream":
                        out.append(msg["content"]["text"])
                    elif msg["msg_type"] == "error":
                        out.append(f"ERROR {msg['content']['ename']}: {msg['content']['evalue']}")
                await kc.execute_interactive(code, output_hook=hook, timeout=60)
                outputs.append("".join(out))
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
        return outputs

    return asyncio.run(go())


def probe(work: Path, template) -> dict:
    out = run_kernel(work, template, [PROBE])[0]
    assert out.startswith("PROBE"), out
    return json.loads(out[len("PROBE"):])


def test_the_anchor_is_told_apart_from_bwrap_that_starts_it():
    """bwrap's own processes carry the anchor's command line among their arguments; entering one of
    them while it still builds the sandbox gave kernels a root without /dev (found under load)."""
    anchor = [b"/venv/bin/python", b"-I", b"-S", str(ANCHOR).encode(), b"/conn/kernel-alive", b"60001"]
    bwrap = [a.encode() for a in bwrap_prefix("/scratch", "/conn", True)] + anchor
    assert is_anchor(anchor)
    assert not is_anchor(bwrap)
    assert not is_anchor([b"sh", b"-c", b"JOIN", b"sh", b"/cgroup.procs"] + bwrap)


@pytest.fixture(scope="module")
def template():
    if os.geteuid() != 0:
        pytest.skip("the kernel template enters sandboxes: needs root")
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    t = KernelTemplate()
    t.launch()
    why = t.wait_ready()
    assert not why, why
    yield t
    t.stop()


@pytest.fixture
def work():
    folder = Path(tempfile.mkdtemp(prefix="dlg-test-"))
    folder.chmod(0o711)
    yield folder
    import shutil
    shutil.rmtree(folder, ignore_errors=True)


@ROOT_ONLY
def test_a_forked_kernel_is_caged_like_a_fresh_one(template, work):
    fresh, forked = probe(work / "fresh", None), probe(work / "forked", template)
    assert forked["torch_loaded"] and not fresh["torch_loaded"], "the fork must come from the template"
    assert forked["ids"] == fresh["ids"] == [UID, UID, UID, UID, []]
    for key in ("root", "tmp", "net", "hostname", "caps", "no_new_privs", "env", "history", "sid_is_own", "nice",
                "threads"):
        assert forked[key] == fresh[key], (key, forked[key], fresh[key])
    assert forked["threads"] == 1, "one core per grading slot: torch runs one thread (Limits.threads)"
    assert forked["cwd"].endswith("/forked/scratch") and forked["home"] == forked["cwd"]
    assert forked["caps"]["CapEff"] == "0000000000000000" and forked["no_new_privs"] == "1"
    assert forked["inheritable"] == "0000000000000000"   # stricter than bwrap leaves a fresh kernel
    assert max(forked["pids"]) < 10 and len(forked["pids"]) <= 3, forked["pids"]   # its own PID namespace
    assert forked["net"] == ["lo"], forked["net"]
    assert forked["history"] == ":memory:"   # the client's own arguments reach the fork
    # every limit as the fresh kernel has it, but the address space: the template's modules are
    # mapped from the start, so the fork's cap is raised by their size (room for the student's own)
    for name, value in fresh["limits"].items():
        if name != "RLIMIT_AS":
            assert forked["limits"][name] == value, (name, forked["limits"][name], value)
    assert fresh["limits"]["RLIMIT_AS"][0] == LIMITS.memory_mb * 2**20
    assert forked["limits"]["RLIMIT_AS"][0] > LIMITS.memory_mb * 2**20


@ROOT_ONLY
def test_two_forks_share_nothing(template, work):
    first = run_kernel(work / "a", template, [
        "secret = 'from-a'\nopen('left-behind.txt', 'w').write('a')\n"
        "import random, torch\nprint(random.random(), torch.rand(1).item())"])[0]
    second = run_kernel(work / "b", template, [
        "print('secret' in globals(), __import__('os').path.exists('left-behind.txt'))\n"
        "print(sorted(__import__('os').listdir('..')))\n"
        "import random, torch\nprint(random.random(), torch.rand(1).item())"])[0].splitlines()
    assert second[0] == "False False", second
    assert second[1] == "['conn', 'scratch']", second   # the first kernel's folders are not in its sandbox
    assert second[2] != first.strip(), "two forks drew the same random numbers"


@ROOT_ONLY
def test_a_kernel_starts_afresh_when_the_template_cannot_answer(work):
    gone = KernelTemplate()   # never launched: nothing listens on its socket
    try:
        out = run_kernel(work, gone, ["import sys\nprint('torch' in sys.modules, 1 + 1)"])[0]
    finally:
        gone.stop()
    assert out.strip() == "False 2", out


@ROOT_ONLY
def test_the_template_imports_what_the_assignment_imports(work):
    """A batch's template imports what the assignment's source notebooks import (and what every
    kernel needs), not the whole course: a module no notebook names is left to the kernel, and one
    that cannot be imported does not stop the template."""
    t = KernelTemplate(["dlcourse.conv", "no_such_module_anywhere"])
    t.launch()
    try:
        assert not t.wait_ready()
        out = run_kernel(work, t, ["import sys\nprint([m for m in ('torch', 'dlcourse.conv', 'dlcourse.gan', "
                                   "'matplotlib.pyplot') if m in sys.modules])"])[0]
    finally:
        t.stop()
    assert out.strip() == "['torch', 'dlcourse.conv']", out


@ROOT_ONLY
def test_forked_kernels_start_every_time(template, work):
    """Kernels started two at a time, as two workers do, each answer (a fork that entered a
    half-built sandbox never did)."""
    async def pair(i):
        return await asyncio.gather(*(asyncio.to_thread(run_kernel, work / f"{i}-{j}", template, ["print(6 * 7)"])
                                      for j in (0, 1)))
    for i in range(4):
        assert asyncio.run(pair(i)) == [["42\n"], ["42\n"]]


# A submission that is honest in a fresh kernel and loops forever in a forked one (the kernel's
# command line is the template's): a student who tells the two apart, hoping a fork's trouble
# earns a second run under other conditions.
LOOPS_WHEN_FORKED = ("import sys\nif 'kernel_template' in ' '.join(sys.orig_argv):\n    while True:\n        pass\n"
                     "def mean(xs):\n    return sum(xs) / len(xs)")
ALWAYS_LOOPS = "def mean(xs):\n    while True:\n        pass"
DIES_WHEN_FORKED = ("import os, sys\nif 'kernel_template' in ' '.join(sys.orig_argv):\n    os._exit(1)\n"
                    "def mean(xs):\n    return sum(xs) / len(xs)")
RUN_AGAIN = {"honest": None, "loops_when_forked": {"mean": LOOPS_WHEN_FORKED}, "always_loops": {"mean": ALWAYS_LOOPS},
             "dies_when_forked": {"mean": DIES_WHEN_FORKED}}


@ROOT_ONLY
def test_what_a_student_does_in_a_forked_kernel_is_the_students_outcome(tmp_path):
    """A loop, a deaf kernel or a kernel killed by the student's own code is graded where it
    happened: one time limit per looping cell, never a second run with a fresh kernel (where a
    student who can tell the two apart would behave otherwise)."""
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    pristine = tmp_path / "pristine"
    course = tiny_course(pristine)
    folder = tmp_path / "submissions"
    for student, overrides in RUN_AGAIN.items():
        (folder / student).mkdir(parents=True)
        nbformat.write(solved(course, ASSIGNMENT, NOTEBOOK, overrides), folder / student / f"{NOTEBOOK}.ipynb")
    root = tmp_path / "forked"
    shutil.copytree(pristine, root)
    timeout = 4
    rows = grade_batch(root, ASSIGNMENT, folder, Settings(
        cell_timeout=timeout, budget=60, workers=2, feedback=False,
        limits=Limits(memory_mb=1536, processes=40, cpu_seconds=60)), progress=False)
    rows = {r["student"]: r for r in rows}
    logs = root / "grades" / ASSIGNMENT / "logs"
    assert {k: rows["honest"]["parts"][k] for k in POINTS} == POINTS, rows["honest"]
    for student in ("loops_when_forked", "always_loops"):
        row = rows[student]
        assert row["status"] == "graded" and row["parts"]["test_mean"] == 0, row
        assert row["parts"]["test_add"] == POINTS["test_add"], row
        assert any(n.endswith("mean: hit the time limit") for n in row["notes"]), row["notes"]
        assert not any("second" in n for n in row["notes"]), f"{student}: one time limit, not two: {row['notes']}"
    dead = rows["dies_when_forked"]
    assert dead["status"] == "failed" and "kernel died" in dead["reason"], dead
    assert not list(logs.glob("*.forked.log")), "no student was graded again with a fresh kernel"
    for student in RUN_AGAIN:
        assert FORKED in (logs / f"{student}.log").read_text(), f"{student} was not graded in a fork"


@pytest.mark.parametrize("failure, student_code, again", [
    (Failure.KERNEL_DIED, False, True), (Failure.UNRESPONSIVE, False, True), (Failure.CELL_TIMEOUT, False, True),
    (Failure.BUDGET, False, True), (Failure.WORKER_DIED, True, True), (Failure.GRADER_ERROR, True, True),
    (Failure.KERNEL_DIED, True, False), (Failure.UNRESPONSIVE, True, False), (Failure.CELL_TIMEOUT, True, False),
    (Failure.BUDGET, True, False), (Failure.AUTOGRADE, False, False), (Failure.MEMORY_CAP, True, False)])
def test_only_trouble_before_the_students_first_cell_or_the_graders_own_earns_a_fresh_kernel(failure, student_code, again):
    outcome = Outcome(False, failure.value, failure=failure, student_code=student_code)
    assert bool(fork_trouble(outcome)) is again
    assert fork_trouble(Outcome(True, student_code=student_code)) == ""
