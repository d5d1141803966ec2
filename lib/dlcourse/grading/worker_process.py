"""Run: a grading worker started as a new Python (subprocess), for where multiprocessing cannot start one.

A stock `dask worker` (with its nanny, as dask-jobqueue and dask-kubernetes start it) runs its
tasks in a daemonic process, and a daemonic process may not have children made by
multiprocessing ("daemonic processes are not allowed to have children"). `subprocess` has no
such rule. `WorkerContext().Process(target=..., args=...)` looks to `runner.Runner` like
multiprocessing's: `start`, `is_alive`, `join`, `pid`, `exitcode` and a `sentinel` for
multiprocessing.connection.wait (a pidfd); the child runs

    python -m dlcourse.grading.worker_process <args.pickle>

which unpickles (target, args) from the file the parent wrote (mode 0600, removed by the child)
and calls target(*args): the same `worker.worker`, which writes
its outcome file as always. Like multiprocessing's spawn, target must be importable by name.
"""
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path


class WorkerProcess:
    """multiprocessing.Process's interface over a subprocess running target(*args)."""

    def __init__(self, target, args=()):
        self.target, self.args = target, tuple(args)
        self._popen = None
        self._pidfd = -1

    def start(self) -> None:
        fd, path = tempfile.mkstemp(prefix="dlg-worker-", suffix=".pickle")   # 0600: the grader's user only
        with os.fdopen(fd, "wb") as f:
            pickle.dump((self.target, self.args), f)
        # no new session here: the worker makes its own (os.setsid), as it does under multiprocessing
        self._popen = subprocess.Popen([sys.executable, "-m", __name__, str(path)], stdin=subprocess.DEVNULL,
                                       close_fds=True)
        self._pidfd = os.pidfd_open(self._popen.pid)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def sentinel(self) -> int:
        """Readable once the child has ended (a pidfd), for multiprocessing.connection.wait."""
        return self._pidfd

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


class WorkerContext:
    """What Runner asks of a multiprocessing context: Process(target=, args=)."""

    def Process(self, target, args=()):   # noqa: N802 -- multiprocessing's name
        return WorkerProcess(target, args)


def main(argv: list[str]) -> None:
    path = Path(argv[0])
    with open(path, "rb") as f:
        target, args = pickle.load(f)
    path.unlink()
    target(*args)


if __name__ == "__main__":
    main(sys.argv[1:])
