"""The course's contracts: install files agree, the release is exactly what nbgrader makes
from the sources and leaks nothing, notebooks are committed in a reviewable state."""
import json
import re
import tomllib
from pathlib import Path

import nbformat
import pytest

from nbgrader_harness import REPO, make_course

SOLUTIONS = sorted(REPO.glob("solutions/*/*.ipynb"))
ASSIGNMENTS = sorted({p.parent.name for p in SOLUTIONS})


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    env = (REPO / "environment.yml").read_text()
    pip_lines = re.findall(r"^\s+- ([A-Za-z0-9_.\-\[\]]+==[^\s#]+)\s*$", env, flags=re.M)
    assert sorted(pip_lines) == sorted(wanted), "environment.yml's pip list must equal pyproject's dependencies + dev extra"
    assert re.search(r"^\s+- python=3\.11\s*$", env, flags=re.M)
    assert re.search(r"^\s+- -e \.\s*$", env, flags=re.M), "environment.yml must install the course library itself"


def test_torch_is_pinned_to_the_cpu_build_version():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps


def test_readme_shows_the_two_commands_first_and_ci_runs_make_test():
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make lab" in first_block and "make test" in first_block
    assert re.search(r"^make test\s*$", (REPO / ".ci" / "run").read_text(), flags=re.M)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_is_regenerated_exactly_from_solutions(tmp_path, assignment):
    course = make_course(tmp_path, [assignment])
    for made in sorted(course.path("exercises", assignment).glob("*.ipynb")):
        committed = REPO / "exercises" / assignment / made.name
        assert committed.exists(), f"{committed} is missing: run `make release`"
        assert made.read_text() == committed.read_text(), f"{committed} is stale: run `make release` and commit"
    made_names = {p.name for p in course.path("exercises", assignment).iterdir()}
    committed_names = {p.name for p in (REPO / "exercises" / assignment).iterdir()}
    assert made_names == committed_names


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_release_contains_no_solution_or_hidden_test(solution):
    release = REPO / "exercises" / solution.parent.name / solution.name
    text = release.read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text, f"{release} contains {marker!r}"
    source = nbformat.read(solution, as_version=4)
    released = nbformat.read(release, as_version=4)
    block_re = r"### BEGIN (?:SOLUTION|HIDDEN TESTS)\n(.*?)### END[^\n]*"
    # what the task text itself shows (e.g. a line the instructions quote) is not a secret
    public = "\n".join(re.sub(block_re, "", c.source, flags=re.S) for c in source.cells)
    for cell in source.cells:
        for block in re.findall(block_re, cell.source, flags=re.S):
            for line in block.splitlines():
                line = line.strip()
                if len(line) > 25 and not line.startswith("#") and line not in public:
                    assert all(line not in c.source for c in released.cells), f"{release} leaks: {line}"
    assert all(not c.get("outputs") for c in released.cells if c.cell_type == "code"), "release must have no outputs"


@pytest.mark.parametrize("path", sorted(REPO.glob("lectures/*.ipynb")) + SOLUTIONS, ids=lambda p: p.name)
def test_notebooks_are_stored_executed_small_and_on_the_standard_kernel(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert path.stat().st_size < 1_500_000, f"{path} is too large: shrink its figures"
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and c["source"]]
    assert all(c.get("execution_count") for c in code), f"{path} has unexecuted cells: run `make outputs`"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path} was not run top to bottom in one go: run `make outputs`"


def _fake_python(folder: Path, name: str, suitable: bool) -> None:
    script = folder / name
    script.write_text(f"#!/bin/sh\nexit {0 if suitable else 1}\n")
    script.chmod(0o755)


@pytest.mark.parametrize("suitable, chosen", [
    (["python3.12", "python3.11"], "python3.12"),        # the newest suitable one wins
    (["python3.11"], "python3.11"),                      # a python3.13 that fails to run is skipped
    ([], None),                                          # none: a clear error, not a traceback
])
def test_make_picks_the_newest_suitable_python(tmp_path, suitable, chosen):
    import shutil
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python3.13", "python3.12", "python3.11", "python3", "python"):   # shadow the system's
        _fake_python(bin_dir, name, name in suitable)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(["make", "-f", str(REPO / "Makefile"), "install"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    if chosen is None:
        assert proc.returncode != 0
        assert "needs Python 3.11, 3.12 or 3.13" in out and "make PYTHON=" in out
    else:
        # the fake interpreter cannot create a venv, so make stops right after choosing it
        assert f"creating .venv with {bin_dir / chosen}" in out, out


def test_requires_python_admits_311_to_313():
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    assert all(v in spec for v in ("3.11.7", "3.12.1", "3.13.0")) and "3.14.0" not in spec


def _sanitized(text: str) -> str:
    """`text` as nbval's --nbval-sanitize-with tests/nbval_sanitize.cfg leaves it (both the stored
    output and the new one pass through it before they are compared)."""
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "tests" / "nbval_sanitize.cfg")
    for section in cfg.sections():
        text = re.sub(cfg[section]["regex"], cfg[section]["replace"], text)
    return text


@pytest.mark.parametrize("one, other", [
    ("max |diff| = 0.0\n", "max |diff| = 1.1102230246251565e-16\n"),
    ("max |a - b| = 0.0e+00; weights 5.6e-17", "max |a - b| = 1.1e-16; weights 0.0e+00"),
    ("float32: 2.3e-06", "float32: 1.6e-06"),
])
def test_the_digits_of_floating_point_roundoff_are_not_compared(one, other):
    # CPUs with other vector units sum in another order: a difference that is roundoff on one
    # machine can be exactly 0 on another
    assert _sanitized(one) == _sanitized(other)


@pytest.mark.parametrize("one, other", [
    ("accuracy 0.91", "accuracy 0.90"), ("lr 0.05", "lr 0.01"), ("x = 10.0", "x = 20.0"),
    ("gradient 1.90e+00", "gradient 1.91e+00"), ("error 0.0003", "error 0.0004"), ("0.73", "0.0"),
])
def test_every_other_number_is_compared(one, other):
    assert _sanitized(one) != _sanitized(other)
