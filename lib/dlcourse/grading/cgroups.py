"""Cage: a memory cap for all the processes of one grading kernel: a memory cgroup, v2 or v1.

RLIMIT_AS bounds each process, but a kernel may start many processes; only a cgroup bounds
them together. The grader creates one cgroup per student next to its own, the kernel's
launcher writes its pid into `procs` before anything else runs (children follow), and the
grader polls `oom_kills()`: once the kernel's processes have hit the cap, `kill()` stops all
of them at once, the notebook fails, and the student is reported with MEMORY_CAP's reason.

    cap = MemoryCap.create("dlcourse-1234-0", limit_mb=2048)   # None: no memory cgroup here
    ... start the kernel with ["/bin/sh", "-c", JOIN, "sh", str(cap.procs), *argv] ...
    if cap.oom_kills(): ...
    cap.remove()

Both layouts exist in the wild: cgroup v2 (one hierarchy, `memory.max`, `memory.events`)
where the memory controller is enabled for the grader's cgroup or the hierarchy's root, else
v1 (`memory/`, `memory.limit_in_bytes`, `memory.oom_control`). Needs root (or a delegated
cgroup); without one the caller warns that only the per-process limits apply.
"""
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
# sh -c JOIN sh <cgroup.procs> <command...>: join the cgroup, then become the command
JOIN = 'echo $$ > "$1" || exit 70; shift; exec "$@"'


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _own_cgroups(proc_cgroup: Path) -> dict[str, str]:
    """{controller or '' for v2: path} from /proc/self/cgroup."""
    out = {}
    for line in _read(proc_cgroup).splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def find_parent(fs: Path = CGROUP_FS, proc_cgroup: Path = Path("/proc/self/cgroup")) -> tuple[Path, int] | None:
    """(folder to create kernel cgroups in, cgroup version), or None where no memory cgroup can be made."""
    own = _own_cgroups(proc_cgroup)
    for unified in (fs, fs / "unified"):  # pure v2, or the v2 half of a hybrid layout
        if "memory" in _read(unified / "cgroup.controllers").split():
            here = unified / own.get("", "/").lstrip("/")
            # v2 lets only the root hold processes and children with controllers at once
            for parent in (here, unified):
                if "memory" in _read(parent / "cgroup.subtree_control").split() and os.access(parent, os.W_OK):
                    return parent, 2
            break
    v1 = fs / "memory"
    if (v1 / "memory.limit_in_bytes").exists():
        parent = v1 / own.get("memory", "/").lstrip("/")
        if parent.is_dir() and os.access(parent, os.W_OK):
            return parent, 1
    return None


@dataclass
class MemoryCap:
    path: Path
    version: int
    limit_mb: int

    @classmethod
    def create(cls, name: str, limit_mb: int, fs: Path = CGROUP_FS,
               proc_cgroup: Path = Path("/proc/self/cgroup")) -> "MemoryCap | None":
        """A fresh cgroup `name` capped at limit_mb (no swap), or None where none can be made."""
        found = find_parent(fs, proc_cgroup)
        if found is None:
            return None
        parent, version = found
        cap = cls(parent / name, version, limit_mb)
        try:
            if cap.path.exists():
                cap.remove()
            cap.path.mkdir()
            limit = str(limit_mb * 2**20)
            if version == 2:
                cap._write("memory.max", limit)
                cap._write("memory.swap.max", "0", optional=True)
                cap._write("memory.oom.group", "1", optional=True)  # one OOM kill takes them all
            else:
                cap._write("memory.limit_in_bytes", limit)
                cap._write("memory.memsw.limit_in_bytes", limit, optional=True)  # only with swap accounting
        except OSError:
            cap.remove()
            return None
        return cap

    def _write(self, name: str, value: str, optional: bool = False) -> None:
        try:
            (self.path / name).write_text(value)
        except OSError:
            if not optional:
                raise

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def pids(self) -> list[int]:
        return [int(p) for p in _read(self.procs).split()]

    def oom_kills(self) -> int:
        """How many of the kernel's processes the cap has killed so far."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        for line in _read(self.path / name).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (forks included) and wait until it is empty."""
        if self.version == 2 and (self.path / "cgroup.kill").exists():
            self._write("cgroup.kill", "1", optional=True)
        for _ in range(100):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def remove(self) -> None:
        if not self.path.exists():
            return
        self.kill()
        for _ in range(50):  # a killed process leaves its cgroup a moment after it died
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
