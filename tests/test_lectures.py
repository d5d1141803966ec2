"""Every lecture follows the course's pattern: it opens with a title, imports its code from the
library, and ends with something to try (an interactive widget from dlcourse.widgets)."""
import nbformat
import pytest

from nbgrader_harness import REPO

LECTURES = sorted((REPO / "lectures").glob("*.ipynb"))


@pytest.mark.parametrize("path", LECTURES, ids=[p.stem for p in LECTURES])
def test_lecture_has_a_widget(path):
    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# Lecture {path.stem[:2]}")
    assert any("dlcourse.widgets" in src for src in code), f"{path.name} shows no widget from dlcourse.widgets"
    builders = _widget_builders(code)
    widget_cells = [src for src in code if src.startswith("# NBVAL_IGNORE_OUTPUT")
                    and any(f"{name}(" in line for name in builders for line in src.splitlines()
                            if not line.startswith(("from ", "import ")))]
    assert widget_cells, f"{path.name}: no cell builds a widget"


def _widget_builders(code):
    names = set()
    for src in code:
        for line in src.splitlines():
            if line.startswith("from dlcourse.widgets"):
                names.update(n.strip() for n in line.split(" import ")[1].strip("()").split(",") if n.strip())
    return names
