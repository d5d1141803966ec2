"""Authoring tools for the course's notebooks (for maintainers, not students).

    python -m dlcourse.notebooks execute lectures/*.ipynb solutions/*/*.ipynb

re-runs notebooks in place so their stored outputs (which `pytest --nbval` compares)
are fresh. The cell builders below give nbgrader cells the metadata nbgrader expects,
so that a new assignment can be written as a short Python script:

    nb = new_notebook([markdown("# Task"), solution("def f(x):\\n    ### BEGIN SOLUTION ..."),
                       tests("check_equal(f(1), 2)", grade_id="test_f", points=2)])
"""
import argparse
import os
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def _nbgrader(**fields) -> dict:
    meta = {"grade": False, "locked": False, "schema_version": 3, "solution": False, "task": False}
    meta.update(fields)
    return {"nbgrader": meta}


def markdown(source: str, grade_id: str | None = None):
    """A markdown cell; with a grade_id it is locked (students cannot edit the task text)."""
    meta = _nbgrader(grade_id=grade_id, locked=True) if grade_id else {}
    return new_markdown_cell(source.strip("\n"), metadata=meta)


def code(source: str, grade_id: str | None = None):
    """A code cell; with a grade_id it is a locked, read-only nbgrader cell."""
    meta = _nbgrader(grade_id=grade_id, locked=True) if grade_id else {}
    return new_code_cell(source.strip("\n"), metadata=meta)


def solution(source: str, grade_id: str):
    """Student's code cell: the part between BEGIN/END SOLUTION is replaced by a stub."""
    return new_code_cell(source.strip("\n"), metadata=_nbgrader(grade_id=grade_id, solution=True))


def tests(source: str, grade_id: str, points: float):
    """Autograded, locked test cell; BEGIN/END HIDDEN TESTS regions are cut from the release."""
    return new_code_cell(source.strip("\n"), metadata=_nbgrader(grade_id=grade_id, grade=True, locked=True, points=points))


def written_answer(source: str, grade_id: str, points: float):
    """Manually graded markdown answer."""
    return new_markdown_cell(source.strip("\n"), metadata=_nbgrader(grade_id=grade_id, grade=True, solution=True, points=points))


def new_notebook(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(path: str | Path, timeout: int = 900) -> None:
    """Run a notebook top to bottom in its own folder and save it with its outputs."""
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    env_backup = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = "0"
    try:
        client.execute()
    finally:
        if env_backup is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = env_backup
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlcourse.notebooks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("execute", help="execute notebooks in place, storing their outputs")
    run.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    for p in args.paths:
        print(f"executing {p} ...", flush=True)
        execute(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
