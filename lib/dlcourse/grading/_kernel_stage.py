"""Cage: last step before a grading kernel starts: limits, an unprivileged user, a clean environment.

Run by the grader (inside the sandbox when there is one) as a plain script, stdlib only:

    python -I _kernel_stage.py '<json settings>' <connection file> -- python -m ipykernel_launcher -f {conn}

It sets the kernel's resource limits (address space, processes, CPU seconds, file size, open
files, no core dumps) BEFORE any student code exists, starts a new session (so an interrupt
reaches the kernel and its children only), switches to an unprivileged uid when started as root
(RLIMIT_NPROC does not apply to root), copies the connection file where that uid can read it, and
execs the kernel with a whitelisted environment (no instructor secrets such as database URLs).
"""
import ctypes
import json
import os
import resource
import signal
import sys

KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONHASHSEED", "NBGRADER_EXECUTION", "TZ")
PR_SET_PDEATHSIG = 1


def clean_environment() -> dict[str, str]:
    """The environment every kernel process starts with: KEEP_ENV only (no database URLs,
    tokens or other instructor secrets reach bwrap's processes either)."""
    return {k: v for k, v in os.environ.items() if k in KEEP_ENV}


def _limit(name: str, value: int) -> None:
    kind = getattr(resource, name)
    soft, hard = value, value
    if name == "RLIMIT_CPU":
        hard = value + 5  # SIGXCPU first, SIGKILL 5 s later
    resource.setrlimit(kind, (soft, hard))


def apply_limits(limits: dict) -> None:
    """Every rlimit of the kernel (Limits.rlimits()), before any student code exists."""
    for name, value in limits.items():
        _limit(name, int(value))


def switch_user(uid) -> None:
    """The kernel's own unprivileged uid and gid, no supplementary groups (None: keep the current)."""
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)


def write_own_connection(connection: bytes, connection_dir: str) -> str:
    """A copy of the connection file that the kernel's uid can read (0600, its own); its path."""
    own_connection = os.path.join(connection_dir, "kernel-own.json")
    fd = os.open(own_connection, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(connection)
    return own_connection


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def kernel_environment(environ, home: str, threads: int = 1) -> dict:
    """KEEP_ENV of `environ`, the kernel's own folders (all in its scratch folder), and the
    number of threads that torch (OpenMP) and the BLAS libraries start."""
    env = {k: v for k, v in environ.items() if k in KEEP_ENV}
    env.update(HOME=home, TMPDIR=home, IPYTHONDIR=os.path.join(home, ".ipython"),
               MPLCONFIGDIR=os.path.join(home, ".matplotlib"), MPLBACKEND="agg", PYTHONNOUSERSITE="1")
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    return env


def main(argv: list[str]) -> None:
    settings = json.loads(argv[1])
    connection_file = argv[2]
    if argv[3] != "--":
        raise SystemExit("usage: _kernel_stage.py SETTINGS CONNECTION_FILE -- KERNEL COMMAND")
    command = argv[4:]
    with open(connection_file, "rb") as f:
        connection = f.read()

    apply_limits(settings["limits"])
    if os.getsid(0) != os.getpid():  # already a session leader when started without bwrap
        os.setsid()
    switch_user(settings.get("uid"))
    # die with the grading worker even without the sandbox (cleared by the uid change: set it after)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    home = settings["home"]
    own_connection = write_own_connection(connection, settings["connection_dir"])
    env = kernel_environment(os.environ, home, settings.get("threads", 1))
    os.chdir(home)
    command = [own_connection if part == connection_file else part for part in command]
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main(sys.argv)
