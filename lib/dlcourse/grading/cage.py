"""Cage: bubblewrap, resource limits, a scratch tmpfs and an unprivileged uid for the grading kernel.

Stock nbgrader starts the grading kernel with the instructor's rights in autograded/<student>/,
so student code could read solutions/ and the gradebook. Here every kernel starts as

    sh -c JOIN <cgroup.procs>                                 (joins its memory cgroup, see cgroups.py)
    bwrap --tmpfs /                                           (an empty root: an allow-list, not a deny-list)
          --ro-bind /usr, /bin -> usr/bin, ...                (system programs and libraries)
          --ro-bind /etc/ld.so.cache, /etc/localtime, ...     (the few /etc files Python reads)
          --ro-bind <python> <venv>                           (the interpreter and the libraries)
          --tmpfs <dlcourse> --ro-bind <its student modules>  (the course's package without the instructor's tools)
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
Of the dlcourse package it sees what notebooks import: INSTRUCTOR_TOOLS (the grader, the hub,
the notebook tools) are absent, but for the two scripts that start a kernel (KERNEL_SIDE).

Kernel and grader talk over IPC sockets in the connection dir (TCP cannot cross --unshare-net).
Interrupts are sent as messages (a SIGINT to bwrap would kill the whole sandbox). When the worker
dies, bwrap dies with it and the PID namespace takes every process the student started along.

Needs: Linux with Debian's `bubblewrap` (run as root, or unprivileged user namespaces enabled).
Without it grading refuses to run unless asked to run unsandboxed: the limits still apply, and the
unprivileged uid too where that user can reach the Python installation (not under /root).

Kernel uids: each batch claims one uid per worker slot (`claim_uids`, FIRST_UID and up, locked
so that two batches on one machine never share one) and kills what a uid left behind (`kill_uid`).
The memory cgroup is cgroups.py's.

The hub (dlcourse.hub) builds its servers' view with the same pieces: `reachable_view`.
"""
import ctypes
import fcntl
import functools
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dlcourse.grading._kernel_stage import clean_environment

__all__ = ["FIRST_UID", "INSTRUCTOR_TOOLS", "KERNEL_SIDE", "STAGE", "Limits", "SandboxUnavailable", "blocked_parent",
           "bwrap_prefix", "check_bwrap", "claim_uids", "clean_environment", "instructor_modules", "kernel_reachable",
           "kill_uid", "others_can_enter", "private_tmpfs", "reachable_view", "readable_paths"]

STAGE = Path(__file__).with_name("_kernel_stage.py")
PACKAGE_ROOT = STAGE.parents[1]  # lib/dlcourse: the package students may import
FIRST_UID = 60000
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "hosts", "mime.types", "fonts")
# the instructor's tools in PACKAGE_ROOT, which no kernel sees: the grader, the hub, the notebook
# tools; of them only KERNEL_SIDE is there, the scripts that start a kernel inside the sandbox
# (stdlib only, run by path; kernel_checks.py and kernel_library.py reach the kernel as the text of the hidden first cell)
INSTRUCTOR_TOOLS = ("grading", "hub.py", "hub_access.py", "notebooks.py")
KERNEL_SIDE = ("grading/_kernel_stage.py", "grading/_sandbox_anchor.py")


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


def instructor_modules() -> tuple[str, ...]:
    """INSTRUCTOR_TOOLS as module names: dlcourse.grading, dlcourse.hub, ..."""
    return tuple(f"{PACKAGE_ROOT.name}.{name.removesuffix('.py')}" for name in INSTRUCTOR_TOOLS)


def _student_entry(name: str) -> bool:
    """Whether the kernel sees this entry of PACKAGE_ROOT or of its __pycache__ (hub.cpython-311.pyc
    is the hub's)."""
    return name.split(".")[0] not in {tool.removesuffix(".py") for tool in INSTRUCTOR_TOOLS}


def _outermost(paths) -> list[Path]:
    """The paths, outermost first, less those inside another (an outer bind already shows them)."""
    kept = []
    for p in sorted(set(paths), key=lambda q: len(q.parts)):
        if not any(p == k or k in p.parents for k in kept):
            kept.append(p)
    return kept


def readable_paths() -> list[Path]:
    """Host folders the kernel reads besides the system's: the interpreter, the virtual
    environment and the dlcourse package (nothing else of the course; of the package, what
    `_package_view` shows)."""
    wanted = [Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
              Path(sys.executable).resolve().parent, PACKAGE_ROOT.resolve()]
    system = [Path(s).resolve() for s in SYSTEM]
    return [p for p in _outermost(wanted) if not any(p == s or s in p.parents for s in system)]


class _Tree:
    """bwrap arguments that build a file tree on `args` (an empty root by default), each missing
    parent folder made 0755 (bwrap would make them 0700: unreachable for the kernel's uid);
    `made` holds the folders that exist already."""

    def __init__(self, args=("--tmpfs", "/"), made=(Path("/"),)):
        self.args: list[str] = list(args)
        self.made = set(made)

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


def _package_view(tree: _Tree) -> None:
    """The dlcourse package as kernels see it, read-only: an empty folder in its place holding its
    entries but INSTRUCTOR_TOOLS, and KERNEL_SIDE. Its __pycache__ comes whole, each instructor
    tool's bytecode in it masked by an empty file (a bind per file would slow every kernel's start)."""
    root = PACKAGE_ROOT.resolve()
    tree.add("--tmpfs", root, before=["--perms", "0755"])
    for entry in sorted(root.iterdir()):
        if _student_entry(entry.name):
            tree.add("--ro-bind", entry, source=entry)
    for cached in sorted(root.glob("__pycache__/*.pyc")):
        if not _student_entry(cached.name):
            tree.add("--ro-bind", cached, source="/dev/null")
    for name in KERNEL_SIDE:
        tree.add("--ro-bind", root / name, source=root / name)
    tree.args += ["--remount-ro", str(root)]


def bwrap_prefix(scratch: str, connection_dir: str, as_root: bool, scratch_tmpfs_mb: int = 0) -> list[str]:
    """bwrap arguments for an allow-list sandbox: an empty root with only the system folders, a
    few /etc files, the Python environment and the dlcourse package but its instructor's tools
    (read-only), and scratch and the connection folder (writable). scratch_tmpfs_mb > 0 mounts
    scratch as a tmpfs of that size inside the sandbox (for callers that could not put it on a
    size-limited tmpfs themselves)."""
    cached = PACKAGE_ROOT / "__pycache__"
    args, made = _fixed_tree(tuple(sorted(os.listdir(cached))) if cached.is_dir() else ())
    tree = _Tree(args, made)
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


@functools.lru_cache(maxsize=4)
def _fixed_tree(pycache: tuple) -> tuple[tuple, frozenset]:
    """What every kernel's tree shares (the system, the environment, the package's view), made
    once per process for the package's bytecode files `pycache` (a new one gives a new view)."""
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
        if p != PACKAGE_ROOT.resolve():
            tree.add("--ro-bind", p, source=p)
    _package_view(tree)
    return tuple(tree.args), frozenset(tree.made)


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


UID_SPAN = 1000  # kernel uids FIRST_UID .. FIRST_UID + UID_SPAN - 1, shared by every batch on this machine


def claim_uids(n: int) -> tuple[list[int], list[int]]:
    """One kernel uid per worker slot, locked for this batch (flock on /run/lock/dlcourse-grader-uids/<uid>)
    so that two batches on one machine never share a uid, nor kill each other's kernels. Returns
    (uids, open lock fds to close at the end); uids are -1 when not root (no uid switch)."""
    if os.geteuid() != 0:
        return [-1] * n, []
    base = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    lockdir = base / "dlcourse-grader-uids"
    lockdir.mkdir(mode=0o700, exist_ok=True)
    uids, fds = [], []
    for uid in range(FIRST_UID, FIRST_UID + UID_SPAN):
        fd = os.open(lockdir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        kill_uid(uid)  # leftovers of a batch that crashed
        uids.append(uid)
        fds.append(fd)
        if len(uids) == n:
            return uids, fds
    for fd in fds:
        os.close(fd)
    raise RuntimeError(f"all {UID_SPAN} grading uids from {FIRST_UID} are in use by other batches")


def kill_uid(uid: int) -> None:
    """SIGKILL every process of the kernel uid (forked children that outlived their kernel)."""
    if uid < 0:
        return
    pid = os.fork()
    if pid == 0:
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def kernel_reachable() -> bool:
    """Can an unprivileged uid run this Python without the sandbox? (Not when it lives under a
    private folder such as /root: then an unsandboxed kernel keeps the grader's user.)"""
    targets = (Path(sys.executable).resolve(), Path(sys.prefix), Path(sys.base_prefix), STAGE)
    return all(blocked_parent(t) is None and (not t.is_dir() or others_can_enter(t)) for t in targets)


def others_can_enter(folder: Path) -> bool:
    """Whether users other than its owner and group may enter `folder` (False if it cannot be read)."""
    try:
        return bool(folder.stat().st_mode & stat.S_IXOTH)
    except OSError:
        return False


def blocked_parent(path: Path) -> Path | None:
    """The outermost folder above `path` that other users cannot enter; None if every folder on the
    way can be entered (`path` itself may be private: its own permissions apply as they are)."""
    path = Path(os.path.abspath(path))
    for folder in reversed(path.parents):
        if not others_can_enter(folder):
            return folder
    return None


def reachable_view(paths: list[Path], bwrap: str = "bwrap") -> list[str]:
    """[] when every path can be reached by any user; otherwise a bubblewrap command (run as root)
    that shows the same file system except that each blocking folder is replaced by an empty one
    (mode 0755) holding only the needed paths, bound in place. Permissions of the files still apply."""
    binds: dict[Path, list[Path]] = {}
    for p in paths:
        p = Path(os.path.abspath(p))
        top = blocked_parent(p)
        if top is not None:
            binds.setdefault(top, []).append(p)
    if not binds:
        return []
    tree = _Tree([bwrap, "--dev-bind", "/", "/"], made=())
    for top, inside in sorted(binds.items()):
        tree.made |= {top, *top.parents}
        tree.args += ["--perms", "0755", "--tmpfs", str(top)]
        for p in _outermost(inside):
            tree.add("--bind", p, source=p)
    return tree.args
