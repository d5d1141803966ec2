"""The grading kernel's cage: bubblewrap, resource limits, a memory cgroup and an unprivileged user.

Stock nbgrader starts the grading kernel with the instructor's rights in autograded/<student>/,
so student code could read solutions/ and the gradebook. Here every kernel starts as

    sh -c JOIN <cgroup.procs>                                 (joins its memory cgroup, see cgroups.py)
    bwrap --tmpfs /                                           (an empty root: an allow-list, not a deny-list)
          --ro-bind /usr, /bin -> usr/bin, ...                (system programs and libraries)
          --ro-bind /etc/ld.so.cache, /etc/localtime, ...     (the few /etc files Python reads)
          --ro-bind <python> <venv> <dlcourse package>        (the interpreter and what student code imports)
          --tmpfs /tmp                                        (empty, read-only for the kernel's uid)
          --bind <scratch> --bind <connection dir>            (the only writable places, on a size-limited tmpfs)
          --unshare-net --unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup --die-with-parent ...
          python -I _kernel_stage.py ...  -> rlimits, setsid, a uid of its own (60000 and up), exec ipykernel

With a kernel template (kernel_template.py; as root, by default; not with --no-fork-kernels) the
sandbox's first process is `_sandbox_anchor.py` instead of the stage: the template forks a kernel that has torch,
ipykernel and dlcourse imported already, moves it into this sandbox's namespaces and cgroup, and
gives it the stage's limits, uid and environment; the anchor lives as long as that kernel.

Nothing else of the host exists inside: not the course, other checkouts of it under /srv or
/opt, other students' scratch folders, the gradebook or its PostgreSQL socket, /home, /root.
The kernel starts with an environment of a few whitelisted variables (KEEP_ENV).

Kernel and grader talk over IPC sockets in the connection dir (TCP cannot cross --unshare-net).
Interrupts are sent as messages (a SIGINT to bwrap would kill the whole sandbox). When the worker
dies, bwrap dies with it and the PID namespace takes every process the student started along.

Needs: Linux with Debian's `bubblewrap` (run as root, or unprivileged user namespaces enabled).
Without it grading refuses to run unless asked to run unsandboxed: the limits still apply, and the
unprivileged uid too where that user can reach the Python installation (not under /root).
"""
import asyncio
import ctypes
import json
import time
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from queue import Empty

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbclient.util import run_sync
from nbformat.v4 import new_code_cell, new_markdown_cell, new_output
from traitlets import Bool, DottedObjectName, Dict, Int, List, Type, Unicode, default
import zmq.asyncio

from dlcourse.grading._kernel_stage import KEEP_ENV
from dlcourse.grading.cgroups import JOIN
from dlcourse.grading.integrity import (CHECK_MISSING, baseline_source, check_expression, guard_expression,
                                        parse_answer)
from dlcourse.grading.kernel_template import ANCHOR, TemplateError, find_anchor, fork_kernel
from dlcourse.grading.timelimits import CellTimeLimits, cell_key

STAGE = Path(__file__).with_name("_kernel_stage.py")
PACKAGE_ROOT = STAGE.parents[1]  # lib/dlcourse: the package students may import
FIRST_UID = 60000
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "hosts", "mime.types", "fonts")


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create its namespaces on this machine."""


@dataclass(frozen=True)
class Limits:
    """What one grading kernel may use.

    memory_mb caps the address space of each process (a MemoryError in the student's code);
    total_memory_mb caps all the kernel's processes together (memory cgroup: the submission is
    stopped); scratch_mb is the size of the tmpfs holding everything the kernel may write;
    threads is how many threads torch and the BLAS libraries run (a grading slot is one core:
    more threads only wait for each other, spinning, while the other slots' kernels run)."""
    memory_mb: int = 4096
    processes: int = 64
    cpu_seconds: int = 600
    file_mb: int = 256
    open_files: int = 1024
    total_memory_mb: int = 6144
    scratch_mb: int = 512
    threads: int = 1

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
    probe = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--size", str(2**20),
             "--tmpfs", "/tmp", "--unshare-net", "--unshare-pid", "--die-with-parent", "true"]
    proc = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise SandboxUnavailable(f"bubblewrap cannot start a sandbox here: {proc.stderr.strip()} "
                                 "(pass --unsandboxed to grade without a sandbox)")


def readable_paths() -> list[Path]:
    """Host folders the kernel reads besides the system's: the interpreter, the virtual
    environment and the dlcourse package (nothing else of the course)."""
    wanted = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
              Path(sys.executable).resolve().parent, PACKAGE_ROOT.resolve()}
    system = [Path(s).resolve() for s in SYSTEM]
    kept = []
    for p in sorted(wanted, key=lambda q: len(q.parts)):  # skip what an outer bind already shows
        if not any(p == s or s in p.parents for s in system + kept):
            kept.append(p)
    return kept


class _Tree:
    """bwrap arguments that build the sandbox's file tree on an empty root, each missing parent
    folder made 0755 (bwrap would make them 0700: unreachable for the kernel's uid)."""

    def __init__(self):
        self.args: list[str] = ["--tmpfs", "/"]
        self.made = {Path("/")}

    def _parents(self, path: Path) -> None:
        for a in reversed(path.parents):
            if a not in self.made:
                self.made.add(a)
                self.args += ["--perms", "0755", "--dir", str(a)]
        self.made.add(path)

    def add(self, option: str, path, *, source=None, before=()) -> None:
        path = Path(path)
        self._parents(path)
        self.args += [*before, option, *([str(source)] if source is not None else []), str(path)]


def bwrap_prefix(scratch: str, connection_dir: str, as_root: bool, scratch_tmpfs_mb: int = 0) -> list[str]:
    """bwrap arguments for an allow-list sandbox: an empty root with only the system folders, a
    few /etc files, the Python environment and the dlcourse package (read-only), and scratch and
    the connection folder (writable). scratch_tmpfs_mb > 0 mounts scratch as a tmpfs of that size
    inside the sandbox (for callers that could not put it on a size-limited tmpfs themselves)."""
    tree = _Tree()
    tree.args += ["--dev", "/dev", "--proc", "/proc"]
    # an empty /tmp that only root could write: the kernel's TMPDIR is its scratch folder. It is
    # mounted first, so that what is bound below it (a course checked out under /tmp, scratch)
    # lands on top of it instead of being hidden by it.
    tree.add("--tmpfs", "/tmp", before=["--perms", "0755", "--size", str(2**20)])
    for name in SYSTEM:
        p = Path(name)
        if p.is_symlink():  # merged /usr: /bin -> usr/bin
            tree.add("--symlink", p, source=os.readlink(p))
        elif p.is_dir():
            tree.add("--ro-bind", p, source=p)
    for name in ETC:
        if (Path("/etc") / name).exists():
            tree.add("--ro-bind", Path("/etc") / name, source=Path("/etc") / name)
    for p in readable_paths():
        tree.add("--ro-bind", p, source=p)
    if scratch_tmpfs_mb > 0:
        tree.add("--tmpfs", scratch, before=["--perms", "1777", "--size", str(scratch_tmpfs_mb * 2**20)])
    else:
        tree.add("--bind", scratch, source=scratch)
    tree.add("--bind", connection_dir, source=connection_dir)
    cmd = ["bwrap", *tree.args, "--remount-ro", "/",
           "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
           "--die-with-parent", "--chdir", scratch]
    if as_root:  # the stage needs these two to switch to the unprivileged uid, nothing else
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return cmd + ["--"]


def private_tmpfs(path: Path, size_mb: int) -> bool:
    """Mount a tmpfs of size_mb on `path` that only this process and its children see (a mount
    namespace of its own, gone with them): the kernel's scratch and connection folders go there,
    so writing past the quota fails with ENOSPC in the student's code and the host's disk is
    untouched. Needs root; False (nothing mounted) where it cannot be done."""
    if os.geteuid() != 0 or size_mb <= 0:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rec, ms_private, ms_nosuid, ms_nodev = 0x20000, 0x4000, 1 << 18, 0x2, 0x4
    if libc.unshare(clone_newns) != 0 or libc.mount(b"none", b"/", None, ms_rec | ms_private, None) != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_mb}m,mode=0711".encode()
    return libc.mount(b"dlcourse-scratch", str(path).encode(), b"tmpfs", ms_nosuid | ms_nodev, options) == 0


def clean_environment() -> dict[str, str]:
    """The environment every kernel process starts with: KEEP_ENV only (no database URLs,
    tokens or other instructor secrets reach bwrap's processes either)."""
    return {k: v for k, v in os.environ.items() if k in KEEP_ENV}


class SandboxedKernelClient(AsyncKernelClient):
    """jupyter_client's client, ready as soon as the kernel has answered kernel_info on the shell
    channel and its IOPub is known to be connected: the kernel's welcome to a new subscriber
    (ipykernel 7, JEP 65) or that request's 'idle' status arrived. Not after 0.2 s of IOPub
    silence on top (jupyter_client's flush), which every submission paid. Its sockets retry a
    connection every RECONNECT_MS, not every 100 ms (zmq's default): they connect before the
    kernel has bound its end, and each missed first try cost a submission up to 0.1 s."""

    RECONNECT_MS = 5

    @default("context")
    def _context_default(self) -> zmq.asyncio.Context:
        context = super()._context_default()
        context.setsockopt(zmq.RECONNECT_IVL, self.RECONNECT_MS)   # default for the sockets made from it
        return context

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        asked = set()   # our kernel_info requests: a late answer to an earlier one counts too
        while True:
            asked.add(self.kernel_info())
            reply = await self._next(self.shell_channel, seconds=1, wanted=lambda m: m["parent_header"].get("msg_id") in asked)
            # a welcome or an 'idle' on IOPub proves IOPub connected; without either (a kernel
            # without welcomes whose subscription came too late for the idle) ask again
            if reply is not None and await self._next(self.iopub_channel, seconds=0.2, wanted=lambda m: (
                    m["msg_type"] == "iopub_welcome" or m["msg_type"] == "status"
                    and m["parent_header"].get("msg_id") in asked and m["content"].get("execution_state") == "idle")):
                self._handle_kernel_info_reply(reply)
                return
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout} seconds")

    @staticmethod
    async def _next(channel, seconds: float, wanted) -> dict | None:
        """The first message on `channel` within `seconds` for which wanted(msg) holds, else None."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                msg = await channel.get_msg(timeout=left)
            except Empty:
                return None
            if wanted(msg):
                return msg
        return None


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels start through the stage, inside bubblewrap unless sandbox=False."""

    client_class = DottedObjectName("dlcourse.grading.sandbox.SandboxedKernelClient")
    client_factory = Type(klass=SandboxedKernelClient)

    sandbox = Bool(True, help="start the kernel inside bubblewrap").tag(config=True)
    scratch = Unicode(help="the kernel's working directory, the only place it may write").tag(config=True)
    connection_dir = Unicode(help="folder of the kernel's connection file and IPC sockets").tag(config=True)
    scratch_tmpfs_mb = Int(0, help="mount scratch as a tmpfs of this size in the sandbox (0: bind it)").tag(config=True)
    uid = Int(-1, help="unprivileged uid for the kernel (-1: keep the current one)").tag(config=True)
    limits = Dict(help="resource limits of every kernel process (Limits.rlimits())").tag(config=True)
    threads = Int(1, help="threads of torch and the BLAS libraries in the kernel (OMP_NUM_THREADS & co.)").tag(config=True)
    cgroup_procs = Unicode("", help="cgroup.procs of the kernel's memory cgroup ('' for none)").tag(config=True)
    template_socket = Unicode("", help="socket of a kernel template (kernel_template.py) to fork the kernel "
                              "from, inside its sandbox ('': start a fresh Python)").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.forked_pid = 0   # host pid of a kernel forked from the template (0: none)
        self.transport = "ipc"
        self.connection_file = os.path.join(self.connection_dir, "kernel.json")
        self.ip = os.path.join(self.connection_dir, "k")

    @property
    def kernel_spec(self):
        settings = self._stage_settings()
        argv = [sys.executable, "-I", str(STAGE), json.dumps(settings), "{connection_file}", "--",
                sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        if self.template_socket:   # the sandbox's first process waits for the kernel forked into it
            argv = [sys.executable, "-I", "-S", str(ANCHOR), self._fifo, str(self.uid)]
        if self.sandbox:
            argv = bwrap_prefix(self.scratch, self.connection_dir, os.geteuid() == 0, self.scratch_tmpfs_mb) + argv
        if self.cgroup_procs:
            argv = ["/bin/sh", "-c", JOIN, "sh", self.cgroup_procs] + argv
        return KernelSpec(argv=argv, display_name="Python 3 (grading)", language="python",
                          interrupt_mode="message")

    @property
    def _fifo(self) -> str:
        return os.path.join(self.connection_dir, "kernel-alive")

    def _stage_settings(self) -> dict:
        return {"limits": self.limits, "uid": self.uid if self.uid >= 0 else None,
                "home": self.scratch, "connection_dir": self.connection_dir, "threads": self.threads}

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        kw["env"] = clean_environment()
        # what the client asked the kernel to take besides the spec (nbclient: an in-memory history)
        extra = kernel_cmd[len(self.format_kernel_cmd()):]
        if self.template_socket and not (self.sandbox and os.geteuid() == 0):
            self.template_socket = ""   # entering a sandbox's namespaces takes root
            kernel_cmd = self.format_kernel_cmd() + extra
        if not self.template_socket:
            await super()._async_launch_kernel(kernel_cmd, **kw)
            return
        if os.path.lexists(self._fifo):
            os.unlink(self._fifo)
        os.mkfifo(self._fifo, 0o600)
        if self.uid >= 0:
            os.chown(self._fifo, self.uid, self.uid)
        await super()._async_launch_kernel(kernel_cmd, **kw)
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._fork_from_template, kw["env"], extra,
                                                       kw.get("stdout"))
        except (TemplateError, OSError) as error:
            print(f"[WARNING] {error}; this kernel starts afresh", flush=True)
            await self.provisioner.kill()
            await self.provisioner.wait()
            self.template_socket = ""
            await super()._async_launch_kernel(self.format_kernel_cmd() + extra, **kw)

    async def _async_wait(self, pollinterval: float = 0.1) -> None:
        """Wait until the kernel has ended, looking every 5 ms (jupyter_client looks every 0.1 s:
        a killed sandbox is gone within milliseconds, and every student would wait the rest)."""
        await super()._async_wait(pollinterval=min(pollinterval, 0.005))

    def _fork_from_template(self, env: dict, extra: list[str], log_fd: int | None = None) -> None:
        anchor = find_anchor(self.provisioner.process.pid)
        request = {"sandbox_pid": anchor, "fifo": self._fifo, "connection_file": self.connection_file,
                   "settings": self._stage_settings(), "env": env, "cgroup_procs": self.cgroup_procs,
                   "kernel_args": extra}
        self.forked_pid = fork_kernel(self.template_socket, request,
                                      sys.stdout.fileno() if log_fd is None else log_fd)

    @property
    def ipykernel(self) -> bool:
        return True
def _peak_mb(pid: int) -> float | None:
    """Peak resident memory (VmHWM) of a running process in MB; None without one."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines() if pid else ():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _execute_base():
    from nbgrader.preprocessors import Execute
    return Execute


GUARD_FAILED = "the grader could not check the kernel before this test (its hooks were tampered with)"


def is_autograded_test(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


# --- output caps: what a notebook keeps of a submission's output, and what reaches the log ---
OUTPUT_KINDS = ("stream", "display_data", "execute_result", "error", "update_display_data")
STUB_CHARS, STUBS = 1000, 20   # past the cap, an error, stderr or result is kept this short, this many per cell
TRUNCATED = "output truncated: {dropped:,} bytes not kept (the grader keeps {cell} per cell and {notebook} per notebook)"


def output_bytes(obj) -> int:
    """Bytes of the text and data in (part of) a message: the UTF-8 of every string, binary lengths."""
    total, todo = 0, [obj]
    while todo:
        x = todo.pop()
        if isinstance(x, str):
            total += len(x) if x.isascii() else len(x.encode("utf-8", "surrogatepass"))
        elif isinstance(x, dict):
            todo += [*x.keys(), *x.values()]
        elif isinstance(x, (list, tuple)):
            todo += x
        elif isinstance(x, (bytes, bytearray)):
            total += len(x)
    return total


def _head(text: str, nbytes: int) -> str:
    """The longest start of `text` that is at most `nbytes` bytes of UTF-8."""
    if text.isascii():
        return text[:nbytes]
    return text.encode("utf-8", "surrogatepass")[:nbytes].decode("utf-8", "ignore")


def short_error(content: dict) -> dict:
    """An error's name, value and traceback as a stub keeps them (first and last traceback lines)."""
    tb = [str(line) for line in content.get("traceback", [])]
    tb = tb if len(tb) <= 2 else [tb[0], "... traceback truncated ...", tb[-1]]
    return {"ename": _head(str(content.get("ename", "")), STUB_CHARS // 4),
            "evalue": _head(str(content.get("evalue", "")), STUB_CHARS),
            "traceback": [_head(line, STUB_CHARS // 2) for line in tb]}


def _size_text(n: float) -> str:
    return "no limit" if n == float("inf") else f"{n / 2**20:g} MB" if n >= 2**20 else f"{n:,} bytes"


class OutputCap:
    """What one notebook keeps of its output, decided as each IOPub message arrives (`admit`), so
    a flood never piles up in the grader: output that fits the bytes left for its cell and for the
    notebook is kept exactly as it came; past them stdout (the part that fits) and displays are
    dropped, while what nbgrader scores by (an error, stderr, the result) is kept shortened to
    STUB_CHARS, STUBS per cell. A cell that lost output shows TRUNCATED (`show`). Cleared output
    (clear_output) gives its bytes back; an update of a display counts what it adds. Widget state
    (stored in the notebook's metadata) counts against the notebook's bytes: an update that does
    not fit is dropped. `client` is the NotebookClient whose notebook this is."""

    def __init__(self, cell_bytes: int, notebook_bytes: int, client):
        self.cell_max = float("inf") if cell_bytes < 0 else cell_bytes
        self.nb_max = float("inf") if notebook_bytes < 0 else notebook_bytes
        self.client, self.nb, self.nb_kept, self.cell = client, client.nb, 0, None

    def _start(self, cell) -> None:
        self.cell, self.cell_kept, self.dropped, self.stubs, self.note, self.clear_pending = cell, 0, 0, 0, None, False

    def _clear(self) -> None:
        self.nb_kept -= self.cell_kept
        self.cell_kept, self.stubs, self.clear_pending = 0, 0, False

    def admit(self, msg: dict, cell) -> dict | None:
        """The message to handle: itself while it fits, a shortened copy, or None (dropped)."""
        if cell is not self.cell:
            self._start(cell)
        kind, content = msg["msg_type"], msg["content"]
        if kind in ("comm_open", "comm_msg"):
            return self._widget_state(msg)
        if kind == "clear_output":
            if content.get("wait"):
                self.clear_pending = True
            else:
                self._clear()
            return msg
        if kind not in OUTPUT_KINDS:
            return msg
        if self.clear_pending and kind != "update_display_data":   # nbclient clears before this output
            self._clear()
        if kind == "stream":
            size = output_bytes(content.get("text", ""))
        elif kind == "error":
            size = output_bytes(content)
        else:   # measured as _displayed measures what an update replaces
            size = output_bytes(content.get("data", {})) + output_bytes(content.get("metadata", {}))
        cost = 0 if kind == "update_display_data" else size
        display_id = (content.get("transient") or {}).get("display_id") if kind != "stream" else None
        if display_id:
            count, now = self._displayed(display_id)
            cost += size * count - now
        room = min(self.cell_max - self.cell_kept, self.nb_max - self.nb_kept)
        if cost <= room:
            self.cell_kept += cost
            self.nb_kept += cost
            return msg
        return self._shorten(msg, kind, content, size, max(0, int(room)))

    def _displayed(self, display_id: str) -> tuple[int, int]:
        """How many outputs show `display_id`, and their bytes now (an update replaces them all)."""
        count = size = 0
        for index, positions in self.client._display_id_map.get(display_id, {}).items():
            outputs = self.nb.cells[index].outputs
            for p in positions:
                if p < len(outputs):
                    count += 1
                    size += output_bytes(outputs[p].get("data", {})) + output_bytes(outputs[p].get("metadata", {}))
        return count, size

    def _widget_state(self, msg: dict) -> dict | None:
        """A widget's state as nbclient stores it (keys updated, buffers base64 by path): kept while
        what it adds fits the notebook's bytes left."""
        content = msg["content"]
        data = content.get("data")
        state = data.get("state") if isinstance(data, dict) else None
        if not isinstance(state, dict):
            return msg
        old = self.client.widget_state.get(content.get("comm_id"), {})
        old_buffers = self.client.widget_buffers.get(content.get("comm_id"), {})
        added = sum(output_bytes(v) - (output_bytes(old[k]) if k in old else -output_bytes(k)) for k, v in state.items())
        added += sum(memoryview(b).nbytes * 4 // 3 for b in msg.get("buffers") or [])
        added -= sum(output_bytes(old_buffers.get(tuple(p), {})) for p in data.get("buffer_paths") or []
                     if isinstance(p, list))
        if added <= self.nb_max - self.nb_kept:
            self.nb_kept += added
            return msg
        self.dropped += added
        return None

    def _shorten(self, msg: dict, kind: str, content: dict, size: int, room: int) -> dict | None:
        keep = None
        if kind == "stream":
            n = room
            if content.get("name") == "stderr" and n < STUB_CHARS and self.stubs < STUBS:
                n, self.stubs = STUB_CHARS, self.stubs + 1
            if n > 0:
                keep = {**content, "text": _head(str(content.get("text", "")), n)}
        elif kind in ("execute_result", "error") and self.stubs < STUBS:
            self.stubs += 1
            if kind == "execute_result":
                plain = str(content.get("data", {}).get("text/plain", ""))
                keep = {"data": {"text/plain": _head(plain, STUB_CHARS)}, "metadata": {},
                        "execution_count": content.get("execution_count")}
            else:
                keep = short_error(content)
        kept = output_bytes(keep.get("text", "")) if kind == "stream" and keep else output_bytes(keep) if keep else 0
        counted = min(kept, room) if kind == "stream" else 0   # a stub is bounded by STUBS, not by the budget
        self.cell_kept += counted
        self.nb_kept += counted
        self.dropped += max(0, size - kept)
        return None if keep is None else {**msg, "content": keep}

    def show(self, cell) -> None:
        """The note in `cell` that says how many bytes of its output were not kept (a display:
        nbgrader's LimitOutput drops stream lines, never this; it scores nothing)."""
        if cell is not self.cell or not self.dropped:
            return
        text = TRUNCATED.format(dropped=self.dropped, cell=_size_text(self.cell_max), notebook=_size_text(self.nb_max))
        if self.note is None or not any(o is self.note for o in cell.outputs):
            self.note = new_output("display_data", data={"text/plain": text}, metadata={})
            cell.outputs.append(self.note)
        else:
            self.note["data"]["text/plain"] = text


class _LogTap:
    """A pipe for the kernel's own stdout and stderr (what it writes to its file descriptors,
    not the notebook's output): the first `limit` bytes go on to `fd` (the grader's log), the rest
    is counted and dropped, and a last line says how much. Copied by a thread until every
    writer (the kernel and its children) has closed its end."""

    def __init__(self, fd: int, limit: int):
        self.read_fd, self.write_fd = os.pipe()
        self.out, self.limit = os.dup(fd), limit
        threading.Thread(target=self._copy, daemon=True, name="kernel-log").start()

    def _write(self, data: bytes) -> None:
        while data:
            data = data[os.write(self.out, data):]

    def _copy(self) -> None:
        kept = dropped = 0
        try:
            while chunk := os.read(self.read_fd, 2**16):
                room = max(0, self.limit - kept)
                self._write(chunk[:room])
                kept += min(room, len(chunk))
                dropped += len(chunk) - min(room, len(chunk))
            if dropped:
                self._write(f"\n[grader] the kernel wrote {dropped:,} more bytes to its stdout/stderr: not kept\n".encode())
        except OSError:
            pass
        finally:
            os.close(self.read_fd)
            os.close(self.out)


class SandboxedExecute(_execute_base()):
    """nbgrader's Execute with the sandboxed kernel, plus an integrity check around the notebook
    (see integrity.py): a hidden first cell snapshots the interpreter's hooks; right before every
    graded test cell a guard puts them back; after the last cell a final check reports what still
    differs. Guard and check run as user expressions of empty requests, which no transformer,
    event or cell of the student sees, and answer in their shell replies. A test whose guard does
    not answer with this run's nonce is not run and scores 0. The first cell and the placeholder
    for the final check are removed again before grades are saved; the report (what changed, what
    the guards restored) goes to `report_path` as JSON."""

    nonce = Unicode(help="random per run: names the in-kernel module and signs its answers").tag(config=True)
    report_path = Unicode(help="where the integrity report is written (JSON list of flags)").tag(config=True)
    stages_path = Unicode(help="where the stage times are written (JSON: kernel_start, imports, execution)"
                          ).tag(config=True)
    preload = List(Unicode(), help="modules the baseline imports before it snapshots the libraries (what the "
                   "assignment's notebooks import: kernel_template.notebook_imports)").tag(config=True)
    max_cell_output_bytes = Int(2**20, help="bytes of output one cell keeps, counted as it arrives; past them "
                                "stdout and displays are dropped, what nbgrader scores by is kept short, and a "
                                "note says how much was not kept (OutputCap; -1: no limit)").tag(config=True)
    max_notebook_output_bytes = Int(5 * 2**20, help="bytes of output the whole notebook keeps (as "
                                    "max_cell_output_bytes; -1: no limit)").tag(config=True)
    kernel_log_bytes = Int(2**16, help="bytes of the kernel's own stdout and stderr (its file descriptors, not the "
                           "notebook's output) copied to the grader's log; the rest is counted (-1: no limit)"
                           ).tag(config=True)

    cell_times_path = Unicode("", help="where the seconds each cell took are written (JSON {cell name: seconds}; "
                              "the batch times the model solution with it: timelimits.py)").tag(config=True)

    def __init__(self, *args, **kwargs):
        kwargs["kernel_manager_class"] = SandboxedKernelManager
        super().__init__(*args, **kwargs)
        self.kernel_name = "python3"  # never the submission's kernelspec
        self._restored = set()
        self._final = None
        self._time_limits = CellTimeLimits(parent=self)
        self._notebook, self._limit, self._imports_cell, self._stock_timeout_error = "", None, None, None

    @default("timeout_func")
    def _timeout_func_default(self):
        return self._cell_timeout

    def _cell_timeout(self, cell) -> int | None:
        """nbclient's timeout_func: the cell's own limit (timelimits.py), else the course's (Execute.timeout):
        in the grader's first cell and the notebook's first code cell (its imports: none in a kernel
        forked from the template, seconds in a fresh one on a busy machine)."""
        first = cell.get("id") == f"dlg-first-{self.nonce[:8]}" or cell is self._imports_cell
        self._limit = None if first else self._time_limits.limit(cell, self._notebook, self.timeout)
        return self._limit.seconds if self._limit else self.timeout

    async def _async_handle_timeout(self, timeout, cell=None):
        """nbclient's; the error a cell stopped at its own limit shows says which limit and why."""
        if self._stock_timeout_error is None:   # nbgrader's (or the configured) error, for the course's limit
            self._stock_timeout_error = dict(self.error_on_timeout)
        if self._limit is not None:
            why = f"stopped after {self._limit.seconds} s: {self._limit.why}"
            self.error_on_timeout = {"ename": "CellTimeoutError", "evalue": why,
                                     "traceback": [f"\x1b[0;31mCellTimeoutError\x1b[0m: {why}"]}
        else:
            self.error_on_timeout = dict(self._stock_timeout_error)
        return await super()._async_handle_timeout(timeout, cell)

    def process_message(self, msg, cell, cell_index):
        """nbclient's, on what the output caps (OutputCap) let through."""
        cap = getattr(self, "_output_cap", None)
        if cap is None or cap.nb is not self.nb:
            cap = self._output_cap = OutputCap(self.max_cell_output_bytes, self.max_notebook_output_bytes, self)
        admitted = cap.admit(msg, cell)
        try:
            return None if admitted is None else super().process_message(admitted, cell, cell_index)
        finally:
            cap.show(cell)

    def on_cell_executed(self, **kwargs):
        """nbgrader's (it adds an error that only the shell reply reports), on a reply shortened as
        the cell's error output was, once the cell's output went past the caps."""
        cap, reply = getattr(self, "_output_cap", None), kwargs.get("execute_reply") or {}
        if cap is not None and cap.cell is kwargs.get("cell") and cap.dropped and \
                reply.get("content", {}).get("status") == "error":
            kwargs["execute_reply"] = {**reply, "content": {**reply["content"], **short_error(reply["content"])}}
        return super().on_cell_executed(**kwargs)

    async def async_start_new_kernel(self, **kwargs):
        """nbclient's, with the kernel's stdout and stderr going to the log through a _LogTap."""
        tap = _LogTap(sys.stdout.fileno(), self.kernel_log_bytes) if self.kernel_log_bytes >= 0 else None
        if tap is not None:
            kwargs.setdefault("stdout", tap.write_fd)
            kwargs.setdefault("stderr", tap.write_fd)
        try:
            await super().async_start_new_kernel(**kwargs)
        finally:
            if tap is not None:
                os.close(tap.write_fd)   # the kernel has its own copy: the tap ends when the kernel does

    start_new_kernel = run_sync(async_start_new_kernel)

    def preprocess(self, nb, resources=None, km=None):
        first = new_code_cell(baseline_source(self.nonce, self.preload))
        last = new_markdown_cell("")  # where the final check runs; never executed as a cell
        first.id, last.id = f"dlg-first-{self.nonce[:8]}", f"dlg-last-{self.nonce[:8]}"
        nb.cells = [first, *nb.cells, last]
        self._restored, self._final, self._kernel_mb = set(), None, None
        self._clock = {"begin": time.monotonic(), "cells": []}  # (kind, start, end) of every cell run
        self._notebook, self.cell_seconds = (resources or {}).get("unique_key", ""), {}
        self._imports_cell = next((c for c in nb.cells[1:] if c.cell_type == "code"), None)
        try:
            nb, resources = super().preprocess(nb, resources, km)
        finally:
            self._write_stages()
            if self.cell_times_path:
                Path(self.cell_times_path).write_text(json.dumps(self.cell_seconds))
            report = self._final if self._final is not None else [CHECK_MISSING]
            report = sorted(set(report) | self._restored)
            nb.cells = [c for c in nb.cells if c.get("id") not in (first.id, last.id)]
            if self.report_path:
                Path(self.report_path).write_text(json.dumps(report))
        return nb, resources

    def preprocess_cell(self, cell, resources, index):
        if cell.get("id") == f"dlg-last-{self.nonce[:8]}":
            self._final = self._ask(check_expression(self.nonce))
            self._kernel_mb = _peak_mb(getattr(self.km, "forked_pid", 0))
            return cell, self.resources
        if is_autograded_test(cell) and cell.source.strip():
            restored = self._ask(guard_expression(self.nonce))
            if restored is None:
                self._restored.add("a guard before a test cell did not answer (kernel hooks changed)")
                cell.outputs = [new_output("error", ename="GradingIntegrityError", evalue=GUARD_FAILED,
                                           traceback=[f"GradingIntegrityError: {GUARD_FAILED}"])]
                return cell, self.resources
            self._restored.update(restored)
        start = time.monotonic()
        try:
            if cell.get("id") == f"dlg-first-{self.nonce[:8]}":   # no prompt number of its own: the
                self._check_assign_resources(resources)          # student's cells count from 1, as in stock nbgrader
                return self.execute_cell(cell, index, store_history=False), self.resources
            return super().preprocess_cell(cell, resources, index)
        finally:
            if cell.cell_type == "code":
                first = cell.get("id") == f"dlg-first-{self.nonce[:8]}"
                self._clock["cells"].append((first, start, time.monotonic()))
                if not first:   # the notebook's own cells, what time limits are derived from (timelimits.py)
                    self.cell_seconds[cell_key(cell)] = time.monotonic() - start

    def _write_stages(self) -> None:
        """Seconds spent starting the kernel (up to its first cell, the baseline included), in the
        notebook's first code cell (its imports) and in every other cell (guards included)."""
        if not self.stages_path:
            return
        cells = self._clock["cells"]
        own = [c for c in cells if not c[0]]
        stages = {"kernel_start": (own[0][1] if own else time.monotonic()) - self._clock["begin"],
                  "imports": own[0][2] - own[0][1] if own else 0.0,
                  "execution": (own[-1][2] - own[0][2]) if own else 0.0}
        if self._kernel_mb is not None:   # a forked kernel is not the worker's child: its own peak
            stages["kernel_mb"] = self._kernel_mb
        stages["student_cells"] = len(own)   # cells of the notebook that started: after one, what happens is the student's
        Path(self.stages_path).write_text(json.dumps(stages))

    def _ask(self, expression: str) -> list[str] | None:
        """Evaluate a guard or check in the kernel; its flags, or None when it did not answer."""
        msg_id = self.kc.execute("", silent=True, store_history=False, user_expressions={"answer": expression})
        return parse_answer(self.wait_for_reply(msg_id), self.nonce, "answer")
