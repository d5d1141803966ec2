"""The instructor's report (lib/dlcourse/grading/report.py) on a class with planted mistakes and
planted copies, graded by the batch grader and opened in headless Chromium.

The class (the tiny assignment, tests/fixtures/tiny_assignment.py): the model answer, the untouched
release, two named mistakes on add (a subtraction and a float where an int is due, each planted in
several students), integer division in mean, six independent answers to mean written in different
styles, two planted copies of one of them (every name changed, comments and spacing added), an
answer that copies a function of the course library, a notebook nbgrader cannot process, and
an endless loop (a cell at its time limit) and a written answer graded by hand (half marks must
not count as failing).

Screenshots go to $DLCOURSE_SCREENSHOTS (or the test's temporary folder).
"""
import csv
import inspect
import os
from pathlib import Path

import pytest

from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK
from nbgrader_harness import solved, tiny_course
from system_packages import ensure_debian_packages
from test_grader_hostile import _json, _zip
from test_grader_hostile_html import browser, visit  # noqa: F401 (browser: the shared Chromium fixture)

from dlcourse.grading.batch import Settings, grade_batch
from dlcourse.grading.report_tables import actionable_reason, failing_fractions, mistake_key
from dlcourse.grading.sandbox import Limits

SUBTRACTS = "def add(a, b):\n    return a - b\n"          # the visible check: expected 3, got -1
MULTIPLIES = "def add(a, b):\n    return a * b\n"         # expected 3, got 2: the same mistake group (numbers aside)
FLOAT_SUM = "def add(a, b):\n    return float(a + b)\n"   # the hidden check: "must be the int 42"
FLOOR_MEAN = "def mean(xs):\n    return sum(xs) // len(xs)\n"

# independent answers to mean, each long enough to compare (copydetect's fingerprints)
HONEST = {
    "h_loop": '''def mean(xs):
    total = 0
    count = 0
    for value in xs:
        total = total + value
        count += 1
    if count == 0:
        raise ValueError("mean of an empty list")
    return total / count
''',
    "h_stats": '''import statistics

def mean(xs):
    """Average of a non-empty list, as a float."""
    if not xs:
        raise ValueError("xs must not be empty")
    return float(statistics.fmean(xs))
''',
    "h_reduce": '''from functools import reduce
import operator

def mean(xs):
    assert len(xs) > 0, "empty"
    return reduce(operator.add, xs, 0.0) / len(xs)
''',
    "h_while": '''def mean(xs):
    i, acc = 0, 0.0
    while i < len(xs):
        acc += xs[i]
        i += 1
    return acc / i if i else float("nan")
''',
    "h_numpy": '''import numpy as np

def mean(xs):
    arr = np.asarray(xs, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("need at least one number")
    return float(arr.sum() / arr.size)
''',
    "h_enumerate": '''def mean(xs):
    running = 0.0
    for n, x in enumerate(xs, start=1):
        running += (x - running) / n     # the running mean, one value at a time
    return float(running)
''',
}
# h_loop's answer, copied: every name changed, a comment and blank lines added
COPIES = {
    "c_copy1": '''def mean(xs):
    # add up and count
    s = 0
    n = 0

    for item in xs:
        s = s + item
        n += 1
    if n == 0:
        raise ValueError("mean of an empty list")
    return s / n
''',
    "c_copy2": '''def mean(numbers):
    acc = 0
    k = 0
    for v in numbers:
        acc = acc + v
        k += 1
    if k == 0:
        raise ValueError("cannot average nothing")
    return acc / k
''',
}


# independent answers to a longer task (valid 2-D cross-correlation, ps_convolution's corr2d)
CORR2D = {
"ann": '''def corr2d(x, k):
    kh, kw = k.shape
    out = torch.zeros(x.shape[0] - kh + 1, x.shape[1] - kw + 1)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = (x[i:i + kh, j:j + kw] * k).sum()
    return out
''',
"ben": '''def corr2d(x, k):
    H, W = x.shape
    h, w = k.shape
    rows = []
    for r in range(H - h + 1):
        row = []
        for c in range(W - w + 1):
            total = 0.0
            for a in range(h):
                for b in range(w):
                    total += x[r + a, c + b] * k[a, b]
            row.append(total)
        rows.append(torch.stack(row) if isinstance(row[0], torch.Tensor) else torch.tensor(row))
    return torch.stack(rows)
''',
"cat": '''def corr2d(x, k):
    # unfold the image into patches and multiply with the flattened kernel
    kh, kw = k.shape
    patches = x.unfold(0, kh, 1).unfold(1, kw, 1)      # (H', W', kh, kw)
    return torch.einsum("ijab,ab->ij", patches, k)
''',
"dan": '''def corr2d(x, k):
    n_rows = x.size(0) - k.size(0) + 1
    n_cols = x.size(1) - k.size(1) + 1
    result = x.new_zeros((n_rows, n_cols))
    for a in range(k.size(0)):
        for b in range(k.size(1)):
            result += k[a, b] * x[a:a + n_rows, b:b + n_cols]
    return result
''',
"eve": '''def corr2d(x, k):
    out_h = x.shape[0] - k.shape[0] + 1
    out_w = x.shape[1] - k.shape[1] + 1
    values = [[float((x[i:i + k.shape[0], j:j + k.shape[1]] * k).sum()) for j in range(out_w)]
              for i in range(out_h)]
    return torch.tensor(values, dtype=x.dtype)
''',
"fay": '''def corr2d(x, k):
    import torch.nn.functional as F_
    kh, kw = k.shape
    cols = F_.unfold(x[None, None], (kh, kw))            # (1, kh*kw, L)
    out = (k.reshape(1, -1) @ cols[0]).reshape(x.shape[0] - kh + 1, x.shape[1] - kw + 1)
    return out
''',
}
# ben's answer copied: every name changed, comments and spacing added
CORR2D_COPY = '''def corr2d(image, kernel):
    # 2-D cross correlation
    height, width = image.shape
    kh, kw = kernel.shape
    lines = []
    for y in range(height - kh + 1):
        line = []
        for x_ in range(width - kw + 1):
            acc = 0.0
            for p in range(kh):

                for q in range(kw):
                    acc += image[y + p, x_ + q] * kernel[p, q]
            line.append(acc)
        lines.append(torch.stack(line) if isinstance(line[0], torch.Tensor) else torch.tensor(line))
    return torch.stack(lines)
'''


def _library_copy() -> str:
    """An answer to mean built on dlcourse.conv.conv_output_size's code, renamed."""
    from dlcourse import conv
    src = inspect.getsource(conv.conv_output_size)
    for old, new in (("conv_output_size", "window_count"), ("stride", "step"), ("padding", "pad")):
        src = src.replace(old, new)
    return src + "\n\ndef mean(xs):\n    return sum(xs) / len(xs)\n"


PLANTED = {  # student: {cell: source}
    "m_sub1": {"add": SUBTRACTS}, "m_sub2": {"add": SUBTRACTS}, "m_sub3": {"add": MULTIPLIES},
    "m_float1": {"add": FLOAT_SUM}, "m_float2": {"add": FLOAT_SUM}, "m_floor": {"mean": FLOOR_MEAN},
    **{s: {"mean": src} for s, src in HONEST.items()},
    **{s: {"mean": src} for s, src in COPIES.items()},
    "t_library": {"mean": _library_copy()},
    "l_loop": {"mean": "def mean(xs):\n    while True:\n        pass\n"},   # runs into the cell's time limit
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    root = tmp_path_factory.mktemp("course")
    course = tiny_course(root)
    files = {"alice/tiny.ipynb": _json(solved(course, ASSIGNMENT, NOTEBOOK)),
             "bob/tiny.ipynb": _json(course.read("exercises", ASSIGNMENT, f"{NOTEBOOK}.ipynb"))}
    for student, cells in PLANTED.items():
        files[f"{student}/tiny.ipynb"] = _json(solved(course, ASSIGNMENT, NOTEBOOK, cells))
    broken = solved(course, ASSIGNMENT, NOTEBOOK)
    broken.cells[2].metadata.nbgrader["points"] = "two"   # a tampered cell: nbgrader cannot read its points
    files["x_broken/tiny.ipynb"] = _json(broken)
    archive = root.parent / "export.zip"
    archive.write_bytes(_zip(files))
    settings = Settings(cell_timeout=5, budget=60, workers=2,
                        limits=Limits(memory_mb=1536, processes=40, cpu_seconds=30))
    grade_batch(root, ASSIGNMENT, archive, settings, progress=False)
    # the written answer (1 point) graded by hand: half marks are a grade, not a failure
    _grade_by_hand(course, {"alice": 0.5, "bob": 0.0})
    rows = {r["student"]: r for r in grade_batch(root, ASSIGNMENT, archive, settings, progress=False)}
    return course, rows


def _grade_by_hand(course, scores: dict) -> None:
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course.path('gradebook.db')}", "dlcourse") as gb:
        for student, score in scores.items():
            grade = gb.find_grade("written", NOTEBOOK, ASSIGNMENT, student)
            grade.manual_score = score
        gb.db.commit()


def _csv(course, name: str) -> list[dict]:
    with open(course.path("grades", ASSIGNMENT, name)) as f:
        return list(csv.DictReader(f))


def test_mistakes_are_grouped_by_the_tests_message(graded):
    course, _ = graded
    groups = {(r["part"], mistake_key(r["message"])): r["students"].split() for r in _csv(course, "mistakes.csv")}
    assert groups[("test_add", "AssertionError: add(#, #): expected #, got #")] == ["m_sub1", "m_sub2", "m_sub3"]
    assert groups[("test_add", "AssertionError: add(#, #) must be the int #")] == ["m_float1", "m_float2"]
    assert groups[("test_mean", "AssertionError: mean([#, #]): expected #, got #")] == ["m_floor"]
    assert "bob" in groups[("test_add", "NotImplementedError:")]


def test_planted_copies_are_found_and_honest_answers_are_not(graded):
    course, _ = graded
    rows = _csv(course, "similarity.csv")
    pairs = {(r["first"], r["second"]): (float(r["similarity_first"]), float(r["similarity_second"]))
             for r in rows if r["kind"] == "copied pair"}
    print("similarity of copied pairs:", pairs)
    assert set(pairs) == {("c_copy1", "c_copy2"), ("c_copy1", "h_loop"), ("c_copy2", "h_loop")}, pairs
    assert all(min(s) >= 0.8 for s in pairs.values()), pairs
    twins = [(r["first"], r["second"], r["similarity_first"]) for r in rows if r["kind"] == "library twin"]
    assert twins and twins[0][:2] == ("t_library", "dlcourse/conv.py: conv_output_size"), twins


@pytest.mark.parametrize("honest, copies, copied_from", [(HONEST, COPIES, "h_loop"),
                                                         (CORR2D, {"gus": CORR2D_COPY}, "ben")], ids=["mean", "corr2d"])
def test_honest_answers_score_well_below_the_threshold(honest, copies, copied_from):
    """The numbers behind the threshold: every pair of independent answers that shares a fingerprint,
    and each planted copy (renamed, reformatted, commented)."""
    from dlcourse.grading import similarity
    pairs = similarity.similar_answers({"cell": {**honest, **copies}}, threshold=0.0)
    independent = [m.score for m in pairs if m.first in honest and m.second in honest]
    copied = [m.score for m in pairs if {m.first, m.second} <= set(copies) | {copied_from}]
    print(f"independent answers: at most {max(independent, default=0):.2f} over {len(independent)} pairs sharing a "
          f"fingerprint ({len(honest) * (len(honest) - 1) // 2} pairs in all); planted copies: {sorted(copied)}")
    assert max(independent, default=0) < 0.6 <= similarity.THRESHOLD
    assert len(copied) == len(copies) * (len(copies) + 1) // 2 and min(copied) >= similarity.THRESHOLD


def test_a_crowd_with_one_program_is_one_group():
    """More students than `COMMON` sharing one program (names aside) are too many for pairs: they
    are one group, the honest answers stay out of it."""
    from dlcourse.grading import similarity
    crowd = {f"s{i:02d}": COPIES["c_copy1"].replace("item", f"value_{i}") for i in range(similarity.COMMON + 5)}
    pairs, crowds = similarity.compare_class({"mean": {**crowd, **HONEST}})
    assert [(c.cell, c.students) for c in crowds] == [("mean", sorted([*crowd, "h_loop"]))]
    assert pairs == []


def test_a_written_answer_graded_by_hand_is_not_failing(graded):
    course, rows = graded
    assert rows["alice"]["parts"]["written"] == 0.5
    maxima = {"test_add": 2, "test_mean": 3, "written": 1}
    fractions = failing_fractions(list(rows.values()), maxima, manual=["written"])
    assert "written" not in fractions and fractions["test_add"] > 0
    page = course.path("grades", ASSIGNMENT, "report.html").read_text()
    failing = page.split('id="failing"')[1].split("</table>")[0]
    assert "written" not in failing


def test_a_broken_notebook_gets_a_reason_a_person_can_act_on(graded):
    _, rows = graded
    reason = rows["x_broken"]["reason"]
    assert rows["x_broken"]["status"] == "failed"
    assert "There was an error processing" not in reason and "metadata" in reason or "notebook" in reason, reason


def test_actionable_reason_reads_the_log():
    log = ("[ERROR] There was an error processing assignment: /c/submitted/x/ps\n[ERROR] Traceback (most recent "
           "call last):\n  File \"x.py\", line 1\nnbgrader.api.MissingEntry: No grade cell with name 'test_x'\n")
    reason = actionable_reason("There was an error processing assignment: /c/submitted/x/ps", log)
    assert "does not match the assignment" in reason and "MissingEntry" in reason
    assert actionable_reason("the notebook file is not valid JSON") == "the notebook file is not valid JSON"


def screenshot(page, name: str, default: Path) -> Path:
    """A full-page screenshot in $DLCOURSE_SCREENSHOTS (or `default`); its path is printed."""
    shots = Path(os.environ.get("DLCOURSE_SCREENSHOTS", default))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / name), full_page=True)
    print("screenshot:", shots / name)
    return shots / name


def test_report_in_a_browser(graded, browser, tmp_path):
    course, _ = graded
    report = course.path("grades", ASSIGNMENT, "report.html")
    html = report.read_text()
    assert "http://" not in html.replace('xmlns="http://', "") and "https://" not in html, "the report loads nothing"
    seen = visit(browser, report.as_uri())
    assert seen["pwned"] == []
    text = seen["text"]
    for words in ("Fraction failing each test", "must be the int 42", "m_float1, m_float2", "c_copy1 and c_copy2",
                  "copies dlcourse/conv.py: conv_output_size", "Time per submission", "Written answers graded by hand",
                  "test_mean\ttime\tl_loop"):
        assert words in text, words
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(report.as_uri(), wait_until="load")
        assert page.locator(".pair.copied mark").count() > 0, "the copied parts are highlighted"
        assert page.evaluate("[...document.images].every(i => i.naturalWidth > 0)"), "every chart is shown"
        screenshot(page, "report.png", tmp_path)
    finally:
        page.close()
