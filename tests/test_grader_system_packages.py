"""tests/system_packages.py: install missing Debian packages for a test, or skip with a reason.

apt-get is replaced by a fake that records its calls and "installs" a program by writing an
executable into a folder on PATH, so these tests never touch the machine's packages.
"""
import os
import subprocess

import pytest

from system_packages import ensure_debian_packages, find_binary, install_plan

PROGRAM = "dlcourse-fake-tool"


class FakeApt:
    """Answers apt-get commands; `fail` lists the commands ('install', 'update') that fail the first time."""

    def __init__(self, bindir, fail=(), installs=True):
        self.bindir, self.fail, self.installs, self.calls = bindir, list(fail), installs, []

    def __call__(self, cmd):
        verb = next(a for a in cmd[1:] if a in ("install", "update"))  # options such as -o may come first
        self.calls.append(verb)
        if verb in self.fail:
            self.fail.remove(verb)
            return subprocess.CompletedProcess(cmd, 100, "", f"E: Unable to locate package fake-{verb}")
        if verb == "install" and self.installs:
            path = self.bindir / PROGRAM
            path.write_text("#!/bin/sh\n")
            path.chmod(0o755)
        return subprocess.CompletedProcess(cmd, 0, "", "")


@pytest.fixture
def bindir(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def test_present_program_needs_no_apt(bindir):
    apt = FakeApt(bindir)
    (bindir / PROGRAM).write_text("#!/bin/sh\n")
    (bindir / PROGRAM).chmod(0o755)
    got = ensure_debian_packages(["fake"], [PROGRAM], run=apt, is_root=True, apt_get="/usr/bin/apt-get")
    assert got == {PROGRAM: str(bindir / PROGRAM)}
    assert apt.calls == [], "nothing may be installed when the program is already there"


def test_missing_program_is_installed_without_update(bindir):
    apt = FakeApt(bindir)
    got = ensure_debian_packages(["fake"], [PROGRAM], run=apt, is_root=True, apt_get="/usr/bin/apt-get")
    assert got[PROGRAM] == str(bindir / PROGRAM)
    assert apt.calls == ["install"], f"apt-get update must run only when the install fails, got {apt.calls}"


def test_failed_install_updates_the_package_list_and_retries(bindir):
    apt = FakeApt(bindir, fail=["install"])
    got = ensure_debian_packages(["fake"], [PROGRAM], run=apt, is_root=True, apt_get="/usr/bin/apt-get")
    assert got[PROGRAM] == str(bindir / PROGRAM)
    assert apt.calls == ["install", "update", "install"], apt.calls


@pytest.mark.parametrize("is_root, apt_get, words", [
    (False, "/usr/bin/apt-get", "not root"), (True, "", "no apt-get here")])
def test_skips_with_a_reason_when_it_cannot_install(bindir, is_root, apt_get, words):
    apt = FakeApt(bindir)
    with pytest.raises(pytest.skip.Exception) as info:
        ensure_debian_packages(["fake"], [PROGRAM], run=apt, is_root=is_root, apt_get=apt_get)
    assert "apt-get install fake" in str(info.value) and words in str(info.value), str(info.value)
    assert apt.calls == []


def test_skips_with_apts_message_when_the_install_keeps_failing(bindir):
    apt = FakeApt(bindir, fail=["install", "install"])
    with pytest.raises(pytest.skip.Exception) as info:
        ensure_debian_packages(["fake"], [PROGRAM], run=apt, is_root=True, apt_get="/usr/bin/apt-get")
    assert "Unable to locate package" in str(info.value), str(info.value)
    assert apt.calls == ["install", "update", "install"]


def test_skips_when_the_package_does_not_provide_the_program(bindir):
    apt = FakeApt(bindir, installs=False)
    with pytest.raises(pytest.skip.Exception, match=PROGRAM):
        ensure_debian_packages(["fake"], [PROGRAM], run=apt, is_root=True, apt_get="/usr/bin/apt-get")


def test_install_plan_is_non_interactive():
    install, update, again = install_plan(["bubblewrap"])
    wait = ["-o", "DPkg::Lock::Timeout=300"]  # parallel test workers wait for each other's install
    assert install[:6] == ["apt-get", *wait, "install", "-y", "-q"] and install[-1] == "bubblewrap"
    assert update == ["apt-get", *wait, "update", "-q"] and again == install


def test_postgres_programs_are_found_outside_path(tmp_path, monkeypatch):
    import system_packages
    for version in ("9", "15"):
        folder = tmp_path / "postgresql" / version / "bin"
        folder.mkdir(parents=True)
        (folder / "pg_ctl").write_text("#!/bin/sh\n")
        (folder / "pg_ctl").chmod(0o755)
    monkeypatch.setattr(system_packages, "SEARCH_DIRS", (str(tmp_path / "postgresql" / "*" / "bin"),))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_binary("pg_ctl") == str(tmp_path / "postgresql" / "15" / "bin" / "pg_ctl"), "the newest version wins"


def test_rejects_an_empty_request():
    with pytest.raises(ValueError, match="name the packages"):
        ensure_debian_packages([], ["bwrap"])
