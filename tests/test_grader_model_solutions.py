"""Every problem set's model solution, handed in as a student would, through the batch grader.

The course's own notebooks must never trip the integrity checks: each model solution (the
release with every solution cell filled in from solutions/, hidden tests not included) is graded
by grade_batch as `make grade` grades a class (forked kernels as root, sandbox on) and must get
every automatic point with no flag and no note; the written answers wait for a person. (ps_lstm's
plots once registered matplotlib's own IPython callback, and every honest ps_lstm submission
was flagged.)
"""
import io
import json
import zipfile
from pathlib import Path

import nbformat
import pytest

from nbgrader_harness import REPO, make_course, solved
from system_packages import ensure_debian_packages

from dlcourse.grading.batch import Settings, grade_batch

ASSIGNMENTS = sorted(p.name for p in (REPO / "solutions").glob("ps_*"))


def points(source: Path) -> tuple[dict, set]:
    """({grade id: points} of every graded cell, ids of the written answers) of a source notebook."""
    nb = json.loads(source.read_text())
    graded = {c["metadata"]["nbgrader"]["grade_id"]: c["metadata"]["nbgrader"].get("points", 0)
              for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade")}
    written = {c["metadata"]["nbgrader"]["grade_id"] for c in nb["cells"]
               if c.get("metadata", {}).get("nbgrader", {}).get("grade") and c["metadata"]["nbgrader"].get("solution")
               and c["cell_type"] == "markdown"}
    return graded, written


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_the_model_solution_gets_every_automatic_point_and_no_flag(tmp_path, assignment):
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    (tmp_path / "course").mkdir()
    course = make_course(tmp_path / "course", [assignment])
    sources = sorted(course.path("solutions", assignment).glob("*.ipynb"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for source in sources:
            zf.writestr(f"model/{source.name}", nbformat.writes(solved(course, assignment, source.stem)))
    archive = tmp_path / "export.zip"
    archive.write_bytes(buf.getvalue())
    [row] = grade_batch(course.root, assignment, archive, Settings(workers=1), progress=False)
    assert row["status"] == "graded", row
    assert row["flags"] == [], f"{assignment}'s model solution was flagged: {row['flags']}"
    assert row["notes"] == [], f"{assignment}'s model solution got notes: {row['notes']}"
    for source in sources:
        graded, written = points(source)
        automatic = {k: v for k, v in graded.items() if k not in written}
        assert {k: row["parts"].get(k) for k in automatic} == automatic, row["parts"]
        assert set(row["pending"]) == written, row["pending"]
