"""Debian packages that some tests need (bubblewrap, PostgreSQL), installed on demand.

A clean CI machine has neither `bwrap` nor PostgreSQL; a test that skipped there would never
prove the sandbox or the PostgreSQL gradebook. So a test asks for the programs it needs:

    paths = ensure_debian_packages(["bubblewrap"], binaries=["bwrap"])
    paths["bwrap"]  -> "/usr/bin/bwrap"

When a program is missing and we are root with apt-get, the packages are installed
(`apt-get install -y -q`, and only if that fails `apt-get update -q` and the install again).
Otherwise the test is skipped with a reason that says what to install.
"""
import fcntl
import glob
import os
import shutil
import subprocess
import tempfile

import pytest

# Debian installs PostgreSQL's server programs outside PATH
SEARCH_DIRS = ("/usr/lib/postgresql/*/bin",)
APT_TIMEOUT = 600


LOCK_FILE = os.path.join(tempfile.gettempdir(), "dlcourse-apt-install.lock")


def find_binary(name: str) -> str | None:
    """`name` on PATH, else in the newest matching SEARCH_DIRS folder; None if absent."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in SEARCH_DIRS:
        for folder in sorted(glob.glob(pattern), key=_version_key, reverse=True):
            candidate = os.path.join(folder, name)
            if os.access(candidate, os.X_OK):
                return candidate
    return None


def _version_key(folder: str):
    parts = folder.split(os.sep)
    return [int(p) if p.isdigit() else -1 for p in parts]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT)


def install_plan(packages: list[str]) -> list[list[str]]:
    """The apt-get commands tried in order: install; then update and install again."""
    wait = ["-o", "DPkg::Lock::Timeout=300"]  # another installer (e.g. a parallel test worker) may hold dpkg's lock
    install = ["apt-get", *wait, "install", "-y", "-q", "--no-install-recommends", *packages]
    return [install, ["apt-get", *wait, "update", "-q"], install]


def ensure_debian_packages(packages: list[str], binaries: list[str], *, run=_run,
                           is_root=None, apt_get=None) -> dict[str, str]:
    """{binary: path} for every name in `binaries`, installing `packages` with apt-get if one is
    missing; pytest.skip (with the reason) when they cannot be had. `run`, `is_root` and
    `apt_get` exist so that the logic can be tested without touching the machine."""
    if not packages or not binaries:
        raise ValueError(f"name the packages and the programs they provide, got {packages!r} and {binaries!r}")
    found = {b: find_binary(b) for b in binaries}
    missing = [b for b, p in found.items() if p is None]
    if not missing:
        return found
    what = f"{', '.join(missing)} (Debian package {' '.join(packages)})"
    root = os.geteuid() == 0 if is_root is None else is_root
    apt = shutil.which("apt-get") if apt_get is None else apt_get
    if not root or not apt:
        pytest.skip(f"needs {what}: run `apt-get install {' '.join(packages)}` as root "
                    f"({'not root' if not root else 'no apt-get here'})")
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time across parallel test workers
        found = {b: find_binary(b) for b in binaries}
        if all(found.values()):  # another worker installed them while we waited
            return found
        return _install(packages, binaries, what, run)


def _install(packages, binaries, what, run) -> dict[str, str]:
    install, update, again = install_plan(packages)
    proc = run(install)
    if proc.returncode != 0:  # an old or empty package list: refresh it once
        upd = run(update)
        proc = run(again) if upd.returncode == 0 else upd
    found = {b: find_binary(b) for b in binaries}
    still = [b for b, p in found.items() if p is None]
    if proc.returncode != 0 or still:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        pytest.skip(f"needs {what}; apt-get could not provide it: {' / '.join(tail) or 'no output'}")
    return found
