"""End to end: release ps_convolution, grade real submissions with nbgrader, check scores.

One course, one `nbgrader autograde` call. The tests of the tests:

* MISTAKES: common wrong answers, each planted in the function of one part; that part must
  score 0 and every other part keep its points. Students plant at most three, in different
  functions, so each student also proves that the untouched parts are not affected. Among them,
  answers a student could believe right (a float32 buffer for float64 data) that lose their part,
  but only after a visible check has said why (VISIBLE_CHECKS_SAY); the grader's copy shows it.
* REFERENCE_CALLS: answers that call what the rules forbid (torch.nn.functional.conv2d,
  max_pool2d, numpy.correlate, dlcourse): 0 on that part, with the reason in the output, which the
  visible check of that part already gives (a student sees it before handing in).
* CORRECT: correct answers written differently (loops, torch.stack of lists, Tensor.unfold +
  einsum, F.pad, reusing corr2d, math.floor / len(range(...)), a float32 padding buffer with a
  result of x's dtype, which the float32 tolerance of the hidden tests accepts, a float64 result
  for float32 data): full marks.

Besides them: alice (the model answer), bob (the untouched release), dave edits a test cell,
erin deletes one, frank has an endless loop, grace's file is not JSON.
The answer key of the written part is checked without nbgrader (the hidden cell run on a
mutated copy of the source must fail).
"""
import json
import os
import re

import nbformat
import pytest

from nbgrader_harness import REPO, grade_id, solved
from ps_grading_harness import ProblemSet, ProblemSetTests, whole

ASSIGNMENT, NOTEBOOK = "ps_convolution", "convolution"
POINTS = {"test_corr1d": 2, "test_corr2d": 2, "test_output_size": 2, "test_conv2d": 3, "test_max_pool2d": 2,
          "test_written_key": 0}
CELL_TIMEOUT = 20  # generous for a loaded CI machine; only frank's endless loop waits it out

MISTAKES = {  # name -> a whole solution cell and the graded part it costs
    "corr1d_flipped": whole("corr1d", """
def corr1d(x, k):
    k = torch.flip(k, dims=(0,))  # true convolution: wrong for this course's convention
    n, kw = len(x), len(k)
    return torch.stack([(x[i:i + kw] * k).sum() for i in range(n - kw + 1)])
""", "test_corr1d"),
    "corr1d_drops_last": whole("corr1d", """
def corr1d(x, k):
    out = torch.zeros(len(x) - len(k), dtype=x.dtype)  # one position short
    for i in range(len(x) - len(k)):
        out[i] = (x[i:i + len(k)] * k).sum()
    return out
""", "test_corr1d"),
    "corr2d_flipped": whole("corr2d", """
def corr2d(x, k):
    k = torch.flip(k, dims=(0, 1))
    kh, kw = k.shape
    out = torch.zeros(x.shape[0] - kh + 1, x.shape[1] - kw + 1, dtype=x.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = (x[i:i + kh, j:j + kw] * k).sum()
    return out
""", "test_corr2d"),
    "corr2d_axes_swapped": whole("corr2d", """
def corr2d(x, k):
    kh, kw = k.shape
    out = torch.zeros(x.shape[0] - kh + 1, x.shape[1] - kw + 1, dtype=x.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = (x[i:i + kw, j:j + kh] * k).sum()  # kh and kw mixed up: fine for square kernels only
    return out
""", "test_corr2d"),
    "size_no_plus_one": whole("output_size", """
def output_size(n, k, stride=1, padding=0):
    return (n + 2 * padding - k) // stride
""", "test_output_size"),
    "size_padding_once": whole("output_size", """
def output_size(n, k, stride=1, padding=0):
    return (n + padding - k) // stride + 1
""", "test_output_size"),
    "size_true_division": whole("output_size", """
def output_size(n, k, stride=1, padding=0):
    return (n + 2 * padding - k) / stride + 1  # a float, and wrong when stride does not divide
""", "test_output_size"),
    "conv2d_returns_zeros": whole("conv2d", """
def conv2d(x, weight, bias=None, stride=1, padding=0):
    return torch.zeros(1)
""", "test_conv2d"),
    "conv2d_one_sided_padding": whole("conv2d", """
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
""", "test_conv2d"),
    "conv2d_ignores_stride": whole("conv2d", """
def conv2d(x, weight, bias=None, stride=1, padding=0):
    c, h, w = x.shape
    o, _, kh, kw = weight.shape
    xpad = torch.zeros(c, h + 2 * padding, w + 2 * padding, dtype=x.dtype)
    xpad[:, padding:padding + h, padding:padding + w] = x
    h_out, w_out = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    out = torch.zeros(o, h_out, w_out, dtype=x.dtype)
    for i in range(h_out):
        for j in range(w_out):
            out[:, i, j] = (xpad[None, :, i:i + kh, j:j + kw] * weight).sum(dim=(1, 2, 3))  # i, not i * stride
    return out if bias is None else out + bias[:, None, None]
""", "test_conv2d"),
    "pool_stride_one": whole("max_pool2d", """
def max_pool2d(x, kernel_size, stride=None):
    stride = stride or 1  # wrong default: PyTorch's is kernel_size
    c, h, w = x.shape
    h_out, w_out = output_size(h, kernel_size, stride), output_size(w, kernel_size, stride)
    out = torch.zeros(c, h_out, w_out, dtype=x.dtype)
    for i in range(h_out):
        for j in range(w_out):
            out[:, i, j] = x[:, i * stride:i * stride + kernel_size, j * stride:j * stride + kernel_size].amax(dim=(1, 2))
    return out
""", "test_max_pool2d"),
    "pool_endless_loop": whole("max_pool2d", """
def max_pool2d(x, kernel_size, stride=None):
    while True:
        pass
""", "test_max_pool2d"),
    "pool_max_with_zero": whole("max_pool2d", """
def max_pool2d(x, kernel_size, stride=None):
    stride = stride or kernel_size
    c, h, w = x.shape
    out = torch.zeros(c, output_size(h, kernel_size, stride), output_size(w, kernel_size, stride), dtype=x.dtype)
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            window = x[:, i * stride:i * stride + kernel_size, j * stride:j * stride + kernel_size]
            out[:, i, j] = torch.maximum(out[:, i, j], window.amax(dim=(1, 2)))  # starts from 0, not -inf
    return out
""", "test_max_pool2d"),
    "pool_across_channels": whole("max_pool2d", """
def max_pool2d(x, kernel_size, stride=None):
    stride = stride or kernel_size
    windows = x.unfold(1, kernel_size, stride).unfold(2, kernel_size, stride)  # (C, H_out, W_out, k, k)
    return windows.amax(dim=(0, -2, -1)).expand(x.shape[0], -1, -1)  # the max over the channels too
""", "test_max_pool2d"),
    # answers a student could think right; a visible check explains why they are not (VISIBLE_CHECKS_SAY)
    "corr1d_float32_buffer": whole("corr1d", """
def corr1d(x, k):
    out = torch.zeros(len(x) - len(k) + 1)  # float32, whatever x is
    for i in range(len(out)):
        out[i] = (x[i:i + len(k)] * k).sum()
    return out
""", "test_corr1d"),
    "conv2d_float32_buffer": whole("conv2d", """
def conv2d(x, weight, bias=None, stride=1, padding=0):
    c, h, w = x.shape
    o, _, kh, kw = weight.shape
    xpad = torch.zeros(c, h + 2 * padding, w + 2 * padding)  # float32: the natural slip
    xpad[:, padding:padding + h, padding:padding + w] = x
    h_out, w_out = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    out = torch.zeros(o, h_out, w_out)
    for i in range(h_out):
        for j in range(w_out):
            out[:, i, j] = (xpad[None, :, i * stride:i * stride + kh, j * stride:j * stride + kw] * weight).sum(dim=(1, 2, 3))
    return out if bias is None else out + bias[:, None, None]
""", "test_conv2d"),
}
REFERENCE_CALLS = {  # name -> a whole solution cell, the part it costs and how the grader names the call
    "corr1d_numpy_correlate": whole("corr1d", """
import numpy as np
def corr1d(x, k):
    return torch.from_numpy(np.correlate(x.numpy(), k.numpy(), "valid"))
""", "test_corr1d", calls="your code calls numpy.correlate"),
    "corr2d_F_conv2d": whole("corr2d", """
import torch.nn.functional as F
def corr2d(x, k):
    return F.conv2d(x[None, None], k[None, None].to(x.dtype))[0, 0]
""", "test_corr2d", calls="your code calls torch.nn.functional.conv2d"),
    "size_dlcourse": whole("output_size", """
from dlcourse.conv import conv_output_size
def output_size(n, k, stride=1, padding=0):
    return conv_output_size(n, k, stride, padding)
""", "test_output_size", calls="your code calls dlcourse.conv.conv_output_size"),
    "conv2d_nn_Conv2d": whole("conv2d", """
def conv2d(x, weight, bias=None, stride=1, padding=0):
    layer = torch.nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2:], stride=stride, padding=padding,
                            bias=bias is not None, dtype=x.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
        return layer(x[None])[0]
""", "test_conv2d", calls="your code calls torch.nn.Conv2d"),
    "pool_F_max_pool2d": whole("max_pool2d", """
import torch.nn.functional as F
def max_pool2d(x, kernel_size, stride=None):
    return F.max_pool2d(x, kernel_size, stride)
""", "test_max_pool2d", calls="your code calls torch.nn.functional.max_pool2d"),
}
CORRECT = {
    "corr1d_unfold_matmul": whole("corr1d", """
def corr1d(x, k):
    return x.unfold(0, len(k), 1) @ k  # all windows at once, one matrix-vector product
"""),
    "corr1d_stack": whole("corr1d", """
def corr1d(x, k):
    return torch.stack([(x[i:i + len(k)] * k).sum() for i in range(len(x) - len(k) + 1)])
"""),
    "corr1d_always_float64": whole("corr1d", """
def corr1d(x, k):
    out = torch.zeros(len(x) - len(k) + 1, dtype=torch.float64)  # more precision than float32 data needs: fine
    for i in range(len(out)):
        out[i] = (x[i:i + len(k)] * k).sum()
    return out
"""),
    "corr2d_unfold_einsum": whole("corr2d", """
def corr2d(x, k):
    kh, kw = k.shape
    return torch.einsum("ijab,ab->ij", x.unfold(0, kh, 1).unfold(1, kw, 1), k)
"""),
    "corr2d_stack_of_rows": whole("corr2d", """
def corr2d(x, k):
    kh, kw = k.shape
    rows = [torch.stack([(x[i:i + kh, j:j + kw] * k).sum() for j in range(x.shape[1] - kw + 1)])
            for i in range(x.shape[0] - kh + 1)]
    return torch.stack(rows)
"""),
    "size_math_floor": whole("output_size", """
import math
def output_size(n, k, stride=1, padding=0):
    return math.floor((n + 2 * padding - k) / stride) + 1
"""),
    "size_count_positions": whole("output_size", """
def output_size(n, k, stride=1, padding=0):
    return len(range(0, n + 2 * padding - k + 1, stride))
"""),
    "conv2d_pad_unfold_einsum": whole("conv2d", """
import torch.nn.functional as F
def conv2d(x, weight, bias=None, stride=1, padding=0):
    kh, kw = weight.shape[-2:]
    windows = F.pad(x, (padding,) * 4).unfold(1, kh, stride).unfold(2, kw, stride)  # (C, H_out, W_out, kh, kw)
    out = torch.einsum("chwab,ocab->ohw", windows, weight)
    return out if bias is None else out + bias[:, None, None]
"""),
    "conv2d_reuses_corr2d": whole("conv2d", """
def conv2d(x, weight, bias=None, stride=1, padding=0):
    c, h, w = x.shape
    xpad = x.new_zeros((c, h + 2 * padding, w + 2 * padding))
    xpad[:, padding:padding + h, padding:padding + w] = x
    maps = []
    for f in range(weight.shape[0]):
        full = sum(corr2d(xpad[ch], weight[f, ch]) for ch in range(c))  # stride 1 everywhere ...
        full = full[::stride, ::stride]                                  # ... then keep every stride-th
        maps.append(full if bias is None else full + bias[f])
    return torch.stack(maps)
"""),
    "conv2d_float32_padding_buffer": whole("conv2d", """
def conv2d(x, weight, bias=None, stride=1, padding=0):
    c, h, w = x.shape
    o, _, kh, kw = weight.shape
    xpad = torch.zeros(c, h + 2 * padding, w + 2 * padding)  # float32 inside: tolerated ...
    xpad[:, padding:padding + h, padding:padding + w] = x
    h_out, w_out = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    out = torch.zeros(o, h_out, w_out, dtype=x.dtype)         # ... as long as the result has x's dtype
    for i in range(h_out):
        for j in range(w_out):
            out[:, i, j] = (xpad[None, :, i * stride:i * stride + kh, j * stride:j * stride + kw] * weight).sum(dim=(1, 2, 3))
    return out if bias is None else out + bias[:, None, None]
"""),
    "pool_unfold_amax": whole("max_pool2d", """
def max_pool2d(x, kernel_size, stride=None):
    stride = stride or kernel_size
    return x.unfold(1, kernel_size, stride).unfold(2, kernel_size, stride).amax(dim=(-2, -1))
"""),
    "pool_loops_stack": whole("max_pool2d", """
def max_pool2d(x, kernel_size, stride=None):
    if stride is None:
        stride = kernel_size
    c, h, w = x.shape
    rows = []
    for i in range(0, h - kernel_size + 1, stride):
        row = [x[:, i:i + kernel_size, j:j + kernel_size].reshape(c, -1).max(dim=1).values
               for j in range(0, w - kernel_size + 1, stride)]
        rows.append(torch.stack(row, dim=-1))
    return torch.stack(rows, dim=-2)
"""),
}
STUDENTS = {  # student -> planted answers (one per function); dave and erin also tamper with test cells
    "carol": ["corr1d_flipped", "size_no_plus_one", "pool_stride_one", "conv2d_float32_padding_buffer"],
    "dave": ["corr2d_flipped", "conv2d_returns_zeros", "size_padding_once"],
    "frank": ["corr1d_drops_last", "conv2d_ignores_stride", "pool_endless_loop"],
    "hank": ["size_true_division", "corr2d_axes_swapped", "pool_max_with_zero", "corr1d_always_float64"],
    "ivy": ["conv2d_one_sided_padding", "pool_across_channels", "corr1d_float32_buffer"],
    "judy": ["conv2d_float32_buffer", "corr2d_F_conv2d", "size_dlcourse"],
    "kim": ["corr1d_numpy_correlate", "pool_F_max_pool2d", "conv2d_nn_Conv2d"],
    "vera": ["corr1d_unfold_matmul", "corr2d_unfold_einsum", "size_math_floor", "conv2d_pad_unfold_einsum",
             "pool_unfold_amax"],
    "erin": ["corr1d_stack", "corr2d_stack_of_rows", "size_count_positions", "conv2d_reuses_corr2d",
             "pool_loops_stack"],
}
VISIBLE_CHECKS_SAY = {
    ("ivy", "test_corr1d"): "your output is torch.float32 but the input x was torch.float64",
    ("judy", "test_conv2d"): "create buffers with dtype=x.dtype",
    ("carol", "test_corr1d"): "your code flips the kernel", ("dave", "test_corr2d"): "your code flips the kernel"}
HIDDEN_TESTS_SAY = {("hank", "test_output_size"): "expected 3, got 3.5"}


def tamper_and_break(course, ps):
    """dave edits a test cell to pass, erin deletes one (both are restored and graded); grace's file is not JSON."""
    dave = solved(course, ASSIGNMENT, NOTEBOOK, {**ps.planted("dave"), "test_conv2d": 'print("conv2d: visible checks passed")'})
    course.submit("dave", ASSIGNMENT, NOTEBOOK, dave)
    erin = solved(course, ASSIGNMENT, NOTEBOOK, ps.planted("erin"))
    erin.cells = [c for c in erin.cells if grade_id(c) != "test_max_pool2d"]
    course.submit("erin", ASSIGNMENT, NOTEBOOK, erin)
    course.submit("grace", ASSIGNMENT, NOTEBOOK, '{"cells": [{"cell_type": "code", "source": "def corr1d(')


PS = ProblemSet(ASSIGNMENT, NOTEBOOK, POINTS, {"written_flip": 2}, MISTAKES, CORRECT, REFERENCE_CALLS, STUDENTS,
                VISIBLE_CHECKS_SAY, HIDDEN_TESTS_SAY, banner="visible checks passed", keeps_at_least=2, feedback=True,
                more_submissions=tamper_and_break, cell_timeout=CELL_TIMEOUT)


class TestConvolution(ProblemSetTests):
    ps = PS

    # ------------------------------------------------------------ nbgrader's mechanics
    def test_edited_test_cell_is_restored(self, graded):
        assert "conv2d(slide input, slide kernel)" in graded.cell("dave", "test_conv2d").text

    def test_deleted_test_cell_is_restored_and_graded(self, graded):
        assert "test_max_pool2d" in [grade_id(c) for c in graded.notebook("erin").cells]

    def test_endless_loop_times_out_on_its_own_part(self, graded):
        assert graded.cell("frank", "test_max_pool2d").errors

    def test_invalid_json_fails_clearly_and_others_are_graded(self, graded):
        course, autograde, scores = graded.course, graded.autograde, graded.scores
        assert autograde.returncode != 0
        log = autograde.stdout + autograde.stderr
        assert re.search(r"ERROR.*grace", log), log[-3000:]
        assert "grace" not in scores or not scores["grace"]["graded"], "grace's broken file must not count as graded"
        assert {s for s, v in scores.items() if v["graded"]} == {"alice", "bob", *STUDENTS}
        assert (course.path("submitted", "grace", ASSIGNMENT, f"{NOTEBOOK}.ipynb")).read_text().startswith('{"cells"')

    def test_feedback_hides_hidden_tests_but_names_the_failure(self, graded):
        course, feedback = graded.course, graded.feedback
        html = {s: course.path("feedback", s, ASSIGNMENT, f"{NOTEBOOK}.html") for s in ("alice", "carol", "frank", "kim")}
        for student, path in html.items():
            assert path.exists(), f"no feedback for {student}: {feedback.stdout[-2000:]}{feedback.stderr[-2000:]}"
        # hidden test code uses private names (_g, _what, _cases, ...) that appear nowhere else
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
        assert "asymmetric kernel" in html["carol"].read_text()
        assert "your code calls torch.nn.functional.max_pool2d" in html["kim"].read_text()


# --------------------------------------------------- without nbgrader: rules and answer key
SOURCE = REPO / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"


def test_the_rules_name_exactly_what_the_hidden_tests_forbid():
    nb = nbformat.read(SOURCE, as_version=4)
    rules = " ".join(nb.cells[0].source.split("**Rules.**")[1].split("**Conventions.**")[0].split())
    forbidden_text = rules.split("Do **not** call")[1]
    named = set(re.findall(r"`([\w.]+)`", forbidden_text))
    guarded = [set(re.findall(r'"([\w.]+)"', c.source.split("_references = (")[1].split(")")[0]))
               for c in nb.cells if "_references = (" in c.source]
    assert len(guarded) == 5, "every autograded function runs under the guard"
    visible = next(c.source for c in nb.cells if "FORBIDDEN = (" in c.source)
    guarded.append(set(re.findall(r'"([\w.]+)"', visible.split("FORBIDDEN = (")[1].split(")")[0])))  # the visible guard
    for references in guarded:
        assert references == named, f"rules and hidden tests disagree: {references ^ named}"
    allowed = set(re.findall(r"`([\w.]+)`", rules.split("Do **not** call")[0]))
    assert not allowed & named


def run_key_cell(folder, source_nb):
    """Execute the hidden answer-key cell of part 6 against `source_nb` saved in `folder`."""
    import torch

    from dlcourse.checks import check_close

    nbformat.write(source_nb, folder / f"{NOTEBOOK}.ipynb")
    cell = next(c for c in source_nb.cells if grade_id(c) == "test_written_key")
    slide_k = torch.tensor([[1., 0, 1], [0, 1, 0], [1, 0, 1]])
    namespace = {"torch": torch, "check_close": check_close, "slide_k": slide_k}
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        exec(compile(cell.source, "test_written_key", "exec"), namespace)
    finally:
        os.chdir(cwd)


def test_the_answer_key_is_checked_against_the_computation(tmp_path, capsys):
    run_key_cell(tmp_path, nbformat.read(SOURCE, as_version=4))
    assert "cross-correlation gives [6.0, 3.0, 1.0] and convolution [6.0, 5.0, 3.0]" in capsys.readouterr().out


@pytest.mark.parametrize("old, new", [
    ("gives `[6, 3, 1]`", "gives `[6, 5, 3]`"),          # the results swapped (the old key's error)
    ("kernel `[3, 2, 1]`", "kernel `[1, 2, 3]`"),
    ("* 1 point:", "* 1.5 points:"),                      # rubric no longer adds up to the cell's points
])
def test_an_answer_key_that_disagrees_with_the_computation_fails(tmp_path, old, new):
    nb = nbformat.read(SOURCE, as_version=4)
    cell = next(c for c in nb.cells if grade_id(c) == "written_flip")
    assert old in cell.source
    cell.source = cell.source.replace(old, new, 1)
    with pytest.raises(AssertionError):
        run_key_cell(tmp_path, nb)


def test_the_key_check_skips_a_students_copy(tmp_path, capsys):
    nb = nbformat.read(SOURCE, as_version=4)
    next(c for c in nb.cells if grade_id(c) == "written_flip").source = "Both kernels are symmetric."
    run_key_cell(tmp_path, nb)
    assert capsys.readouterr().out == ""
    assert json.loads((tmp_path / f"{NOTEBOOK}.ipynb").read_text())["cells"]
