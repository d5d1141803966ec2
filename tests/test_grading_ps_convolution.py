"""End to end: release ps_convolution, grade real submissions with nbgrader, check scores.

One course, seven students, one `nbgrader autograde` call (about a minute):

    alice  the full solution                      -> full marks on every autograded part
    bob    the untouched release                  -> 0
    carol  corr1d flips the kernel (convolution)   -> 0 on corr1d only (visible test passes!)
    dave   broke conv2d and edited its test cell   -> the test is restored: 0 on conv2d only
    erin   deleted the max_pool2d test cell        -> the test is restored and passes
    frank  an endless loop in max_pool2d           -> cut off by the cell timeout: 0 on that part only
    grace  a file that is not valid JSON          -> reported as failed; everyone else is graded
    hank   output_size forgets the "+ 1"           -> 0 on output_size only (conv2d and max_pool2d,
                                                     which call it, are tested with the reference)
    ivy    pads one side only; pooling stride 1   -> 0 on conv2d and on max_pool2d
"""
import re

import pytest

from nbgrader_harness import grade_id, graded_test_ids, make_course, solved

ASSIGNMENT, NOTEBOOK = "ps_convolution", "convolution"
POINTS = {"test_corr1d": 2, "test_corr2d": 2, "test_output_size": 2, "test_conv2d": 3, "test_max_pool2d": 2}
CELL_TIMEOUT = 20  # generous for a loaded CI machine; only frank's endless loop waits it out

FLIPPED_CORR1D = """
def corr1d(x, k):
    k = torch.flip(k, dims=(0,))  # true convolution: wrong for this course's convention
    n, kw = len(x), len(k)
    return torch.stack([(x[i:i + kw] * k).sum() for i in range(n - kw + 1)])
"""
BROKEN_CONV2D = """
def conv2d(x, weight, bias=None, stride=1, padding=0):
    return torch.zeros(1)
"""
OFF_BY_ONE_SIZE = """
def output_size(n, k, stride=1, padding=0):
    return (n + 2 * padding - k) // stride
"""
ONE_SIDED_PADDING = """
def conv2d(x, weight, bias=None, stride=1, padding=0):
    c, h, w = x.shape
    o, _, kh, kw = weight.shape
    xpad = torch.zeros(c, h + 2 * padding, w + 2 * padding, dtype=x.dtype)
    xpad[:, :h, :w] = x  # all the zeros end up below and to the right
    h_out, w_out = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    out = torch.zeros(o, h_out, w_out, dtype=x.dtype)
    for i in range(h_out):
        for j in range(w_out):
            window = xpad[:, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, i, j] = (window[None] * weight).sum(dim=(1, 2, 3))
    if bias is not None:
        out += bias[:, None, None]
    return out
"""
STRIDE_ONE_POOL = """
def max_pool2d(x, kernel_size, stride=None):
    stride = stride or 1  # wrong default: PyTorch's is kernel_size
    c, h, w = x.shape
    h_out, w_out = output_size(h, kernel_size, stride), output_size(w, kernel_size, stride)
    out = torch.zeros(c, h_out, w_out, dtype=x.dtype)
    for i in range(h_out):
        for j in range(w_out):
            out[:, i, j] = x[:, i * stride:i * stride + kernel_size, j * stride:j * stride + kernel_size].amax(dim=(1, 2))
    return out
"""
ENDLESS_MAX_POOL = """
def max_pool2d(x, kernel_size, stride=None):
    while True:
        pass
"""


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("course"), [ASSIGNMENT])
    release = course.read("exercises", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    course.submit("alice", ASSIGNMENT, NOTEBOOK, solved(course, ASSIGNMENT, NOTEBOOK))
    course.submit("bob", ASSIGNMENT, NOTEBOOK, release)
    course.submit("carol", ASSIGNMENT, NOTEBOOK, solved(course, ASSIGNMENT, NOTEBOOK, {"corr1d": FLIPPED_CORR1D}))

    dave = solved(course, ASSIGNMENT, NOTEBOOK, {"conv2d": BROKEN_CONV2D, "test_conv2d": 'print("conv2d: visible checks passed")'})
    course.submit("dave", ASSIGNMENT, NOTEBOOK, dave)

    erin = solved(course, ASSIGNMENT, NOTEBOOK)
    erin.cells = [c for c in erin.cells if grade_id(c) != "test_max_pool2d"]
    course.submit("erin", ASSIGNMENT, NOTEBOOK, erin)

    course.submit("frank", ASSIGNMENT, NOTEBOOK, solved(course, ASSIGNMENT, NOTEBOOK, {"max_pool2d": ENDLESS_MAX_POOL}))
    course.submit("grace", ASSIGNMENT, NOTEBOOK, '{"cells": [{"cell_type": "code", "source": "def corr1d(')
    course.submit("hank", ASSIGNMENT, NOTEBOOK, solved(course, ASSIGNMENT, NOTEBOOK, {"output_size": OFF_BY_ONE_SIZE}))
    course.submit("ivy", ASSIGNMENT, NOTEBOOK, solved(course, ASSIGNMENT, NOTEBOOK,
                                                      {"conv2d": ONE_SIDED_PADDING, "max_pool2d": STRIDE_ONE_POOL}))

    autograde = course.autograde(ASSIGNMENT, cell_timeout=CELL_TIMEOUT)
    feedback = course.feedback(ASSIGNMENT)
    return course, autograde, feedback, course.scores(ASSIGNMENT, NOTEBOOK)


def parts(scores, student):
    return {k: v for k, v in scores[student]["parts"].items() if k in POINTS}


def test_point_table_matches_the_notebook(graded):
    course, *_ = graded
    assert graded_test_ids(course, ASSIGNMENT, NOTEBOOK) == list(POINTS)


def test_full_solution_gets_full_marks(graded):
    *_, scores = graded
    assert parts(scores, "alice") == POINTS
    assert scores["alice"]["max"]["written_flip"] == 2  # the written answer waits for a human


def test_untouched_release_gets_zero(graded):
    *_, scores = graded
    assert parts(scores, "bob") == dict.fromkeys(POINTS, 0)
    assert scores["bob"]["parts"]["written_flip"] == 0  # unchanged answer cell: no manual grading needed


def test_wrong_answer_loses_only_its_part(graded):
    *_, scores = graded
    assert parts(scores, "carol") == dict(POINTS, test_corr1d=0)


def test_a_wrong_helper_is_not_counted_twice(graded):
    *_, scores = graded
    assert parts(scores, "hank") == dict(POINTS, test_output_size=0)


def test_classic_padding_and_pooling_mistakes_fail(graded):
    *_, scores = graded
    assert parts(scores, "ivy") == dict(POINTS, test_conv2d=0, test_max_pool2d=0)


def test_edited_test_cell_is_restored(graded):
    *_, scores = graded
    assert parts(scores, "dave") == dict(POINTS, test_conv2d=0)


def test_deleted_test_cell_is_restored_and_graded(graded):
    course, *_ = graded
    autograded = course.read("autograded", "erin", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    assert "test_max_pool2d" in [grade_id(c) for c in autograded.cells]
    assert parts(graded[3], "erin") == POINTS


def test_endless_loop_times_out_on_its_own_part(graded):
    course, *_ = graded
    assert parts(graded[3], "frank") == dict(POINTS, test_max_pool2d=0)
    autograded = course.read("autograded", "frank", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    cell = next(c for c in autograded.cells if grade_id(c) == "test_max_pool2d")
    assert any(o.output_type == "error" for o in cell.outputs)


def test_invalid_json_fails_clearly_and_others_are_graded(graded):
    course, autograde, _, scores = graded
    assert autograde.returncode != 0
    log = autograde.stdout + autograde.stderr
    assert re.search(r"ERROR.*grace", log), log[-3000:]
    assert "grace" not in scores or not scores["grace"]["graded"], "grace's broken file must not count as graded"
    assert {s for s, v in scores.items() if v["graded"]} == {"alice", "bob", "carol", "dave", "erin", "frank", "hank", "ivy"}
    assert (course.path("submitted", "grace", ASSIGNMENT, f"{NOTEBOOK}.ipynb")).read_text().startswith('{"cells"')


def test_feedback_hides_hidden_tests_but_names_the_failure(graded):
    course, _, feedback, _ = graded
    html = {s: course.path("feedback", s, ASSIGNMENT, f"{NOTEBOOK}.html") for s in ("alice", "carol", "frank")}
    for student, path in html.items():
        assert path.exists(), f"no feedback for {student}: {feedback.stdout[-2000:]}{feedback.stderr[-2000:]}"
    # hidden test code uses private names (_g, _what, _neg, ...) that appear nowhere else
    solution_source = course.read("solutions", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    hidden = "".join(c.source.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0]
                     for c in solution_source.cells if "### BEGIN HIDDEN TESTS" in c.source)
    private_names = set(re.findall(r"\b_[a-z]\w{2,}\b", hidden))
    assert len(private_names) >= 5
    for student, path in html.items():
        text = path.read_text()
        assert "HIDDEN TESTS" not in text
        leaked = sorted(name for name in private_names if re.search(rf"\b{name}\b", text))
        assert not leaked, f"hidden test code leaks into {student}'s feedback: {leaked}"
    carol = html["carol"].read_text()
    assert "asymmetric kernel" in carol  # the failing hidden check's message reaches the student
