"""Run: the kernel template: one process per batch that imports torch, ipykernel and what the
assignment's notebooks import once; every grading kernel of the batch is a fork of it, moved
into its own sandbox.

A fresh kernel spends most of a small submission's time before the student's first line runs:
starting Python and ipykernel, importing torch and the course's modules. A fork of a process
that has done all that once starts in a few milliseconds. How a kernel is made (as root, with
bubblewrap):

1. the kernel manager (kernel_manager.SandboxedKernelManager) starts the submission's sandbox as
   always, but its first process is `_sandbox_anchor.py`, which waits on a FIFO;
2. it asks the template, over a Unix socket in the batch's private work folder, for a kernel:
   the sandbox's host pid, the FIFO, the connection file, limits, uid, scratch folder, memory
   cgroup and environment, with the worker's log as the kernel's stdout (an fd, SCM_RIGHTS);
3. the template forks. The fork joins the submission's memory cgroup, enters the sandbox's
   namespaces (setns: ipc, uts, net, cgroup, pid, mount; its root directory must then be the
   sandbox's root, or it stops), forks once more so that the kernel lives inside the sandbox's
   PID namespace, and exits;
4. the kernel: stdin from /dev/null, stdout and stderr to the log, a session of its own, no new
   privileges, an empty capability bounding set, the rlimits, the kernel's uid, the whitelisted
   environment (all as _kernel_stage.py does for a fresh kernel), fresh random seeds; it writes
   its pid into the FIFO and runs ipykernel's own app in-process.

The anchor then lives exactly as long as the kernel, and the sandbox with it. A fork serves one
submission and dies with its sandbox; the template itself never runs student code and keeps
nothing of any student (a request carries paths and numbers; the fork reads the connection file).
Where any step fails, the kernel manager starts that kernel afresh, as without a template.
"""
import ctypes
import gc
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from dlcourse.grading._kernel_stage import (apply_limits, clean_environment, kernel_environment, switch_user,
                                             write_own_connection)
from dlcourse.grading.cage import instructor_modules

ANCHOR = Path(__file__).with_name("_sandbox_anchor.py")
NAMESPACES = ("ipc", "uts", "net", "cgroup", "pid", "mnt")   # mnt last: entering it changes the root
# what a grading kernel imports before the student's first line: ipykernel and what it starts
# (its debugger: debugpy), then numpy and torch; plus every plain module of dlcourse (`preload`)
# but the instructor's tools, which no kernel can import (cage.INSTRUCTOR_TOOLS)
PRELOAD = ("numpy", "numpy.random", "torch", "IPython", "ipykernel.kernelapp", "ipykernel.ipkernel",
           "ipykernel.zmqshell", "ipykernel.debugger", "debugpy.server.api", "IPython.core.completerlib",
           "IPython.core.debugger", "IPython.core.oinspect", "IPython.core.logger", "IPython.extensions.storemagic",
           "IPython.utils.wildcard", "sqlite3", "tornado.locks", "tornado.queues", "tornado.platform.asyncio",
           "faulthandler", "dlcourse.grading._kernel_stage")
NOT_PRELOADED = instructor_modules()
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 1, 38, 24
PRIORITY = -10   # the template's nice value (root): its imports come before the workers' own work
LISTENING, READY = "kernel template listening", "kernel template ready"
FORKED = "[grader] this kernel is a fork of the batch's kernel template"
preloaded_bytes = 0   # address space that preload() added: a fork's RLIMIT_AS is raised by as much
preloaded_env = {}    # variables that the imports set (debugpy's PYDEVD_...): a fork keeps them, as a fresh kernel would


class TemplateError(RuntimeError):
    """The template could not make this kernel (the kernel manager then starts it afresh)."""


# ------------------------------------------------------------------ the grader's side
class KernelTemplate:
    """The template process of one batch: `launch()` (it imports in the background while the batch
    is planned), `wait_ready()`, then kernel managers fork from `socket_path`; `stop()` at the end.
    Its socket lies in a folder of its own that only root may enter."""

    def __init__(self, modules: list[str] | None = None):
        """modules: what to import besides PRELOAD (`notebook_imports` of the assignment's
        notebooks); None: every plain module of dlcourse."""
        self.folder = Path(tempfile.mkdtemp(prefix="dlg-template-"))   # 0700
        self.socket_path = self.folder / "template.sock"
        self.modules = modules
        self.process = None

    def launch(self) -> None:
        home = self.folder / "home"
        home.mkdir(mode=0o700)
        env = clean_environment()   # the template, and so every fork, holds no instructor secret
        env.update(HOME=str(home), MPLCONFIGDIR=str(home / ".matplotlib"), MPLBACKEND="agg",
                   IPYTHONDIR=str(home / ".ipython"))
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-m", "dlcourse.grading.kernel_template", str(self.socket_path), str(os.getpid()),
             json.dumps(self.modules)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(home))
        try:   # the batch's first kernels wait for its imports: let it go first (its forks go back to 0)
            os.setpriority(os.PRIO_PROCESS, self.process.pid, PRIORITY)
        except OSError:
            pass

    def wait_ready(self, timeout: float = 180, until: str = READY) -> str:
        """'' once the template has imported everything (until=LISTENING: once its socket takes
        requests, which then wait for the imports); else why not (it is then stopped, and the
        batch starts every kernel afresh)."""
        out = self.process.stdout if self.process else None
        lines = []
        while out is not None:
            ready, _, _ = select.select([out], [], [], timeout)
            line = out.readline().decode(errors="replace") if ready else ""
            if not line:   # timed out, or the template ended
                break
            if line.strip() in (until, READY):
                return ""
            lines.append(line.strip())
        self.stop()
        return "the kernel template did not start" + (": " + " | ".join(lines[-5:]) if lines else "")

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process.stdout.close()
            self.process = None
        shutil.rmtree(self.folder, ignore_errors=True)


def fork_kernel(socket_path: str, request: dict, log_fd: int, timeout: float = 180) -> int:
    """Ask the template for a kernel in the sandbox of request['sandbox_pid']; the kernel's
    stdout and stderr go to log_fd. Returns the (host) pid of the fork that entered the sandbox."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(socket_path))
            socket.send_fds(s, [json.dumps(request).encode() + b"\n"], [log_fd])
            reply = s.makefile("rb").readline().decode(errors="replace").strip()
        except OSError as error:
            raise TemplateError(f"the kernel template did not answer: {error}") from error
    if not reply.startswith("ok "):
        raise TemplateError(reply or "the kernel template closed the connection")
    return int(reply.split()[1])


def find_anchor(launched: int, timeout: float = 30) -> int:
    """The host pid of the anchor that the kernel manager's bwrap (pid `launched`) runs in the
    sandbox: a descendant that runs _sandbox_anchor.py itself, in another mount namespace than
    ours. Not one of bwrap's own processes, whose command line names the anchor too: while bwrap
    still builds the sandbox, its namespaces are not the finished ones (no /dev, another root)."""
    import time
    ours = os.readlink("/proc/self/ns/mnt")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _descendants(launched):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if is_anchor(cmdline) and os.readlink(f"/proc/{pid}/ns/mnt") != ours:
                    return pid
            except OSError:   # gone, or still being set up
                continue
        if not Path(f"/proc/{launched}").exists():
            break
        time.sleep(0.005)
    raise TemplateError(f"no sandbox anchor under pid {launched} after {timeout} s")


def is_anchor(cmdline: list[bytes]) -> bool:
    """Is this the command line of the anchor itself (`python -I -S _sandbox_anchor.py ...`)?"""
    return cmdline[1:4] == [b"-I", b"-S", str(ANCHOR).encode()]


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        kids = [c for c, p in parents.items() if p == pid]
        found += kids
        todo += kids
    return found


# ------------------------------------------------------------------ the template process
def preload(modules: list[str] | None = None) -> None:
    """Import what every grading kernel imports: numpy, torch, IPython and ipykernel; then
    `modules` (what the assignment's notebooks import), or every plain module of dlcourse but
    NOT_PRELOADED where that is not known. A module that cannot be imported is left out (the
    kernel then fails on it as a fresh one would)."""
    import importlib
    import pkgutil
    for name in PRELOAD:
        importlib.import_module(name)
    if modules is None:
        import dlcourse
        modules = [info.name for info in pkgutil.iter_modules(dlcourse.__path__, "dlcourse.")
                   if not info.ispkg and info.name not in NOT_PRELOADED]
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 -- a module that cannot load here cannot in the kernel either
            continue


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def serve(socket_path: str, batch: int, modules: list[str] | None = None) -> None:
    """The template's loop: one request at a time, each answered by a fork (`_answer`). It dies
    with the batch's process (pid `batch`), even when that one is killed."""
    global preloaded_bytes, preloaded_env
    _libc_call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != batch:   # the batch ended before the line above
        os._exit(1)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        server.bind(socket_path)   # 0600: root's alone (and no sandbox has the folder)
    finally:
        os.umask(old)
    server.listen(64)
    print(LISTENING, flush=True)   # the batch starts its workers: their requests wait for preload()
    before, environ = _address_space(), dict(os.environ)
    preload(modules)
    gc.freeze()   # every object so far: a fork's collections never walk (and copy) them
    preloaded_env = {k: v for k, v in os.environ.items() if environ.get(k) != v}
    # A fresh kernel maps torch & co. only when the notebook imports them; a fork has them mapped
    # from the start. RLIMIT_AS counts mappings, not memory used (the memory cgroup caps that),
    # so the fork gets the same room for the student's own allocations as a fresh kernel.
    preloaded_bytes = max(0, _address_space() - before)
    print(READY, flush=True)
    null = os.open(os.devnull, os.O_WRONLY)   # nobody reads the pipe any more: it must never fill up
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    while True:
        conn, _ = server.accept()
        try:
            message, fds, _, _ = socket.recv_fds(conn, 65536, 1)
            if not message.endswith(b"\n") or len(fds) != 1:
                conn.sendall(b"error: a request is one JSON line and one fd\n")
                continue
            pid = os.fork()
            if pid == 0:
                server.close()
                _answer(conn, json.loads(message), fds[0])   # never returns
            os.close(fds[0])
            os.waitpid(pid, 0)   # the fork exits as soon as the kernel exists
        except Exception as error:  # noqa: BLE001 -- one bad request must not stop the template
            try:
                conn.sendall(f"error: {type(error).__name__}: {error}\n".encode())
            except OSError:
                pass
        finally:
            conn.close()


def _answer(conn, request: dict, log_fd: int) -> None:
    """In the template's fork: enter the sandbox, fork the kernel into its PID namespace, reply."""
    status = 1
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)   # the template's own priority is not the kernel's
        kernel = _enter_sandbox(request)
        if kernel == 0:
            conn.close()
            _become_kernel(request, log_fd)   # never returns
        conn.sendall(b"ok %d\n" % kernel)
        status = 0
    except BaseException as error:  # noqa: BLE001 -- reported to the kernel manager, which starts afresh
        try:
            conn.sendall(f"error: {type(error).__name__}: {error}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(status)


def _libc_call(name: str, *args) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


def _enter_sandbox(request: dict) -> int:
    """Join the memory cgroup and the sandbox's namespaces, then fork: 0 in the kernel (inside the
    sandbox's PID namespace), the kernel's host pid in the caller."""
    host = int(request["sandbox_pid"])
    if request.get("cgroup_procs"):
        Path(request["cgroup_procs"]).write_text(str(os.getpid()))
    root = os.stat(f"/proc/{host}/root/")   # the sandbox's root, as the host sees it
    handles = [os.open(f"/proc/{host}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC) for name in NAMESPACES]
    try:
        for fd in handles:
            _libc_call("setns", fd, 0)
    finally:
        for fd in handles:
            os.close(fd)
    now = os.stat("/")
    if (now.st_dev, now.st_ino) != (root.st_dev, root.st_ino):
        raise TemplateError("after entering its namespaces the root is not the sandbox's")
    return os.fork()


def _become_kernel(request: dict, log_fd: int) -> None:
    """In the sandbox: the fresh kernel's cage (as _kernel_stage.py builds it), then ipykernel."""
    status = 1
    try:
        settings = request["settings"]
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.closerange(3, 1 << 16)   # nothing of the template's (its socket) stays open
        os.setsid()
        _libc_call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        for cap in range(64):   # an empty bounding set: no capability can come back
            if ctypes.CDLL(None).prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                break           # past the last capability this kernel knows
        connection = Path(request["connection_file"]).read_bytes()
        fifo = os.open(request["fifo"], os.O_WRONLY | os.O_CLOEXEC)   # root's FIFO: opened before the uid change
        limits = dict(settings["limits"])
        if "RLIMIT_AS" in limits:
            limits["RLIMIT_AS"] = int(limits["RLIMIT_AS"]) + preloaded_bytes
        apply_limits(limits)
        switch_user(settings.get("uid"))
        home = settings["home"]
        own = write_own_connection(connection, settings["connection_dir"])
        os.chdir(home)
        os.environ.clear()
        os.environ.update(kernel_environment(request["env"], home, settings.get("threads", 1)))
        os.environ.update(preloaded_env)
        _fresh_seeds()
        if "torch" in sys.modules:   # read OMP_NUM_THREADS when the template imported it: set as a fresh kernel has it
            sys.modules["torch"].set_num_threads(settings.get("threads", 1))
        os.write(fifo, b"%d\n" % os.getpid())
        os.close(fifo)
        print(FORKED, flush=True)   # in the student's log: this kernel is a fork of the template
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _forget_instructor_tools()
        argv = ["-f", own, *request.get("kernel_args", [])]
        sys.argv = ["ipykernel_launcher", *argv]
        from ipykernel import kernelapp
        kernelapp.launch_new_instance(argv=argv)
        status = 0
    except BaseException:  # noqa: BLE001 -- the log tells why; the anchor ends and the kernel counts as dead
        import traceback
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def _forget_instructor_tools() -> None:
    """The grader's modules the template imported (this one among them) leave sys.modules and the
    package: a student's `import dlcourse.grading...` finds them absent, as in a fresh kernel."""
    for name in [n for n in sys.modules if any(n == t or n.startswith(t + ".") for t in NOT_PRELOADED)]:
        del sys.modules[name]
        parent, _, child = name.rpartition(".")
        if parent in sys.modules and child in vars(sys.modules[parent]):
            delattr(sys.modules[parent], child)


def _fresh_seeds() -> None:
    """Every fork starts from the template's random states: draw new ones, as a fresh process would."""
    import random
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]) if len(sys.argv) > 3 else None)
