"""The grading kernel's cage: bubblewrap, resource limits and an unprivileged user.

Stock nbgrader starts the grading kernel with the instructor's rights in autograded/<student>/,
so student code could read solutions/ and the gradebook. Here every kernel starts as

    bwrap --ro-bind / / --tmpfs <course root> --tmpfs <home> --tmpfs /tmp     (hide them)
          --ro-bind <venv> --ro-bind <dlcourse lib>                           (what the code needs)
          --bind <scratch> --bind <connection dir>                            (the only writable places)
          --unshare-net --unshare-pid --unshare-ipc --die-with-parent ...
          python -I _kernel_stage.py ...  -> rlimits, setsid, a uid of its own (60000 and up), exec ipykernel

Kernel and grader talk over IPC sockets in the connection dir (TCP cannot cross --unshare-net).
Interrupts are sent as messages (a SIGINT to bwrap would kill the whole sandbox). When the worker
dies, bwrap dies with it and the PID namespace takes every process the student started along.

Needs: Linux with Debian's `bubblewrap` (run as root, or unprivileged user namespaces enabled).
Without it grading refuses to run unless asked to run unsandboxed: the limits still apply, and the
unprivileged uid too where that user can reach the Python installation (not under /root).
"""
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbformat.v4 import new_code_cell, new_output
from traitlets import Bool, Dict, Int, List, Unicode

from dlcourse.grading.integrity import baseline_source, check_source, guard_expression, parse_check, parse_guard

STAGE = Path(__file__).with_name("_kernel_stage.py")
FIRST_UID = 60000


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create its namespaces on this machine."""


@dataclass(frozen=True)
class Limits:
    """What one grading kernel may use. memory_mb caps the address space of each process."""
    memory_mb: int = 4096
    processes: int = 64
    cpu_seconds: int = 600
    file_mb: int = 256
    open_files: int = 1024

    def rlimits(self) -> dict:
        return {"RLIMIT_AS": self.memory_mb * 2**20, "RLIMIT_NPROC": self.processes,
                "RLIMIT_CPU": self.cpu_seconds, "RLIMIT_FSIZE": self.file_mb * 2**20,
                "RLIMIT_NOFILE": self.open_files, "RLIMIT_CORE": 0}


def check_bwrap() -> None:
    """Raise SandboxUnavailable (with bwrap's own words) unless a sandbox can start here."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed: apt-get install bubblewrap, "
                                 "or pass --unsandboxed to grade without a sandbox")
    probe = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-net",
             "--unshare-pid", "--die-with-parent", "true"]
    proc = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise SandboxUnavailable(f"bubblewrap cannot start a sandbox here: {proc.stderr.strip()} "
                                 "(pass --unsandboxed to grade without a sandbox)")


def _under(path: Path, roots) -> bool:
    return any(path == r or r in path.parents for r in roots)


def bwrap_prefix(hidden: list[str], scratch: str, connection_dir: str, as_root: bool) -> list[str]:
    """bwrap arguments: the whole filesystem read-only, `hidden` replaced by empty tmpfs,
    the Python environment and the dlcourse package put back read-only, scratch writable."""
    hidden_paths = [Path(p).resolve() for p in dict.fromkeys(["/tmp", *hidden]) if Path(p).exists()]
    cmd = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for h in hidden_paths:
        cmd += ["--tmpfs", str(h)]
    needed = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent,
              STAGE.parents[2]}  # lib/ holding the dlcourse package (students may import it)
    made = set()

    def parents(p: Path) -> list[str]:  # bwrap would create them 0700: unreachable for the kernel's uid
        out = []
        for a in reversed(p.parents):
            if _under(a, hidden_paths) and a not in hidden_paths and a not in made:
                made.add(a)
                out += ["--perms", "0755", "--dir", str(a)]
        return out

    for p in sorted({q.resolve() for q in needed}, key=lambda q: len(q.parts)):
        if _under(p, hidden_paths) and p.exists():
            cmd += parents(p) + ["--ro-bind", str(p), str(p)]
    for p in (Path(scratch), Path(connection_dir)):
        cmd += parents(p) + ["--bind", str(p), str(p)]
    cmd += [
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
            "--chdir", scratch]
    if as_root:  # the stage needs these two to switch to the unprivileged uid, nothing else
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return cmd + ["--"]


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels start through the stage, inside bubblewrap unless sandbox=False."""

    sandbox = Bool(True, config=True)
    scratch = Unicode(config=True, help="the kernel's working directory, the only place it may write")
    connection_dir = Unicode(config=True)
    hidden = List(Unicode(), config=True, help="folders the kernel must not see")
    uid = Int(-1, config=True, help="unprivileged uid for the kernel (-1: keep the current one)")
    limits = Dict(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.transport = "ipc"
        self.connection_file = os.path.join(self.connection_dir, "kernel.json")
        self.ip = os.path.join(self.connection_dir, "k")

    @property
    def kernel_spec(self):
        settings = {"limits": self.limits, "uid": self.uid if self.uid >= 0 else None,
                    "home": self.scratch, "connection_dir": self.connection_dir}
        argv = [sys.executable, "-I", str(STAGE), json.dumps(settings), "{connection_file}", "--",
                sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        if self.sandbox:
            argv = bwrap_prefix(self.hidden, self.scratch, self.connection_dir, os.geteuid() == 0) + argv
        return KernelSpec(argv=argv, display_name="Python 3 (grading)", language="python",
                          interrupt_mode="message")

    @property
    def ipykernel(self) -> bool:
        return True


def _execute_base():
    from nbgrader.preprocessors import Execute
    return Execute


GUARD_FAILED = "the grader could not check the kernel before this test (its hooks were tampered with)"


def is_autograded_test(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


class SandboxedExecute(_execute_base()):
    """nbgrader's Execute with the sandboxed kernel, plus an integrity check around the notebook:
    a hidden first cell records the interpreter's hooks, a hidden last cell reports what changed.
    Right before every graded test cell a guard puts the hooks back (IPython's input and AST
    transformers, events, traceback display, sys.settrace, builtins, numpy/torch comparisons,
    dlcourse.checks); it runs as a user expression of an empty request, which no transformer,
    event or cell of the student sees. A test whose guard does not answer with this run's nonce
    is not run and scores 0. The first and last cells are removed again before grades are saved;
    the report (what changed, what the guards restored) goes to `report_path` as JSON."""

    nonce = Unicode(config=True)
    report_path = Unicode(config=True)

    def __init__(self, *args, **kwargs):
        kwargs["kernel_manager_class"] = SandboxedKernelManager
        super().__init__(*args, **kwargs)
        self.kernel_name = "python3"  # never the submission's kernelspec
        self._restored = set()

    def preprocess(self, nb, resources=None, km=None):
        first = new_code_cell(baseline_source(self.nonce))
        last = new_code_cell(check_source(self.nonce))
        first.id, last.id = f"dlg-first-{self.nonce[:8]}", f"dlg-last-{self.nonce[:8]}"
        nb.cells = [first, *nb.cells, last]
        self._restored = set()
        try:
            nb, resources = super().preprocess(nb, resources, km)
        finally:
            report = parse_check(last.get("outputs", []), self.nonce)
            report = sorted(set(report) | self._restored)
            nb.cells = [c for c in nb.cells if c.get("id") not in (first.id, last.id)]
            if self.report_path:
                Path(self.report_path).write_text(json.dumps(report))
        return nb, resources

    def preprocess_cell(self, cell, resources, index):
        if is_autograded_test(cell) and cell.source.strip():
            restored = self._guard()
            if restored is None:
                self._restored.add("a guard before a test cell did not answer (kernel hooks changed)")
                cell.outputs = [new_output("error", ename="GradingIntegrityError", evalue=GUARD_FAILED,
                                           traceback=[f"GradingIntegrityError: {GUARD_FAILED}"])]
                return cell, self.resources
            self._restored.update(restored)
        return super().preprocess_cell(cell, resources, index)

    def _guard(self) -> list[str] | None:
        """Run the guard in the kernel; the hooks it restored, or None when it did not answer."""
        msg_id = self.kc.execute("", silent=True, store_history=False,
                                 user_expressions={"guard": guard_expression(self.nonce)})
        return parse_guard(self.wait_for_reply(msg_id), self.nonce)


def limits_dict(limits: Limits) -> dict:
    return asdict(limits)
