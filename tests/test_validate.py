"""The Validate button's report (lib/dlcourse/validate.py): nbgrader's Validator runs ps_convolution's
release as a student's server runs it, and `summarize` turns its result into one line per part."""
import nbformat
import pytest
from nbgrader.validator import Validator
from nbgrader_harness import REPO
from test_jupyterhub import filled_in

from dlcourse.validate import NEXT_STEP, parts, short_error, summarize

ASSIGNMENT, NOTEBOOK = "ps_convolution", "convolution"
RELEASE = REPO / "exercises" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"


def validate(tmp_path, nb) -> dict:
    """nbgrader's Validator on `nb` saved in a folder of its own, then the summary."""
    path = tmp_path / f"{NOTEBOOK}.ipynb"
    nbformat.write(nb, path)
    return summarize(Validator().validate(str(path)), nbformat.read(path, as_version=4))


def test_the_parts_of_ps_convolution_come_from_its_headings():
    found = parts(nbformat.read(RELEASE, as_version=4))
    assert [(p.label, p.title) for p in found] == [
        ("Part 1", "1-D cross-correlation"), ("Part 2", "2-D cross-correlation"), ("Part 3", "output size"),
        ("Part 4", "a convolutional layer: channels, filters, stride and padding"), ("Part 5", "max pooling"),
        ("Part 6", "written question")]


@pytest.fixture(scope="module")
def untouched(tmp_path_factory):
    return validate(tmp_path_factory.mktemp("untouched"), nbformat.read(RELEASE, as_version=4))


def test_an_untouched_release_reads_one_line_per_part(untouched):
    (item,) = untouched["failed"]   # one item: the dialog heads each with "The following cell failed:"
    assert item["source"].splitlines() == [f"Part {n} not answered yet ({t})" for n, t in
                                           [(1, "1-D cross-correlation"), (2, "2-D cross-correlation"),
                                            (3, "output size"),
                                            (4, "a convolutional layer: channels, filters, stride and padding"),
                                            (5, "max pooling"), (6, "written question")]]
    assert item["raw_error"] == NEXT_STEP
    assert len(str(untouched)) < 1000, "no test source, no traceback"


def test_a_wrong_answer_gives_the_checks_message_alone(tmp_path):
    nb = filled_in(nbformat.read(RELEASE, as_version=4))
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "output_size":
            cell.source = cell.source.replace("+ 1", "+ 2")   # off by one
    (item,) = validate(tmp_path, nb)["failed"]
    (line,) = item["source"].splitlines()
    assert line.startswith("Part 3 (output size): AssertionError") and "output_size(5, 3)" in line, line
    assert "\x1b" not in line and "Traceback" not in line and len(line) <= 330, line


def test_the_model_answers_pass(tmp_path):
    assert validate(tmp_path, filled_in(nbformat.read(RELEASE, as_version=4))) == {}


def test_a_long_message_is_cut_and_colours_removed():
    raw = "\x1b[0;31mTraceback\x1b[0m\n  File x\n\x1b[0;31mValueError\x1b[0m: " + "x" * 500
    assert short_error(raw).startswith("ValueError: xxx") and len(short_error(raw)) == 300
