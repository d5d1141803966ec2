"""The feedback a student reads (nbgrader_config.py's feedback preprocessors and exporter), graded by
the batch grader and opened in headless Chromium with every network request refused:

* the math is rendered (MathML written when the feedback is made: mathml.py, feedback.py), with
  no MathJax to fetch;
* a written answer nobody has graded yet reads "awaiting grading by hand" and the header gives the
  score so far out of the points graded so far (awaiting.py and the course's template);
* each part opens with its result and the failing test's message (part_results.py), escaped.

Screenshots go to $DLCOURSE_SCREENSHOTS (or the test's temporary folder).
"""
import nbformat
import pytest

from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK
from nbgrader_harness import solved, tiny_course
from system_packages import ensure_debian_packages
from test_grader_hostile import _json, _zip
from test_grader_hostile_html import browser  # noqa: F401 (the shared Chromium fixture)
from test_grader_report import screenshot

from dlcourse.grading.batch import Settings, grade_batch
from dlcourse.grading.mathml import to_mathml
from dlcourse.grading.part_results import PartResults, parts
from dlcourse.grading.sandbox import Limits

MATH = ("Because addition commutes: $a + b = b + a$, as for the sum of the slide,\n\n"
        "$$\\text{out}[i] = \\sum_{m} x[i + m]\\, k[m]$$\n")
EVIL = "<img src=x onerror=window.pwned_message=1>"
STUDENTS = {  # student: {cell: source}
    "float_add": {"add": "def add(a, b):\n    return float(a + b)\n", "written": MATH},   # hidden test: "must be the int 42"
    "evil": {"add": f"def add(a, b):\n    raise AssertionError({EVIL!r})\n",
             "written": "$\\text{<img src=x onerror=window.pwned_math=1>}$ and $$\\href{javascript:window.pwned_href=1}{x}$$"},
}


@pytest.fixture(scope="module")
def feedback(tmp_path_factory):
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    root = tmp_path_factory.mktemp("course")
    course = tiny_course(root)
    files = {f"{s}/tiny.ipynb": _json(solved(course, ASSIGNMENT, NOTEBOOK, cells)) for s, cells in STUDENTS.items()}
    archive = root.parent / "export.zip"
    archive.write_bytes(_zip(files))
    settings = Settings(cell_timeout=60, budget=300, workers=2,
                        limits=Limits(memory_mb=1536, processes=40, cpu_seconds=30))
    rows = {r["student"]: r for r in grade_batch(root, ASSIGNMENT, archive, settings, progress=False)}
    assert all(r["status"] == "graded" for r in rows.values()), rows
    return {s: course.path("feedback", s, ASSIGNMENT, f"{NOTEBOOK}.html") for s in STUDENTS}


def offline_page(browser, url: str):
    """A page that may load nothing from the network (file: URLs only): a student offline."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    blocked = []
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
               else (blocked.append(route.request.url), route.abort()))
    page.goto(url, wait_until="load", timeout=60_000)
    page.wait_for_timeout(300)
    return page, blocked


def test_feedback_reads_well_offline(feedback, browser, tmp_path):
    page, blocked = offline_page(browser, feedback["float_add"].as_uri())
    try:
        assert not any("mathjax" in url.lower() for url in blocked), f"MathJax was requested: {blocked}"
        seen = page.evaluate("""() => ({
            text: document.body.innerText,
            math: [...document.querySelectorAll('math')].map(m => {
                const r = m.getBoundingClientRect();
                return {display: m.getAttribute('display'), width: r.width, height: r.height, text: m.textContent};
            }),
            box: [...document.querySelectorAll('.dlcourse-part-result')].map(b => b.innerText),
            boxBeforeTest: (() => {
                const box = [...document.querySelectorAll('.dlcourse-part-result')].find(b => b.innerText.includes('test_add'));
                const test = document.querySelector('a[name="test_add"]');
                return !!(box && test && (box.compareDocumentPosition(test) & Node.DOCUMENT_POSITION_FOLLOWING));
            })(),
        })""")
        # the math: rendered by the browser (laid out boxes), none of it left as raw TeX
        block = [m for m in seen["math"] if m["display"] == "block"]
        assert block and block[0]["width"] > 50 and block[0]["height"] > 10, seen["math"]
        assert any("out" in m["text"] and "∑" in m["text"] for m in seen["math"]), seen["math"]
        assert "$$" not in seen["text"] and "\\text{out}" not in seen["text"]
        # the written answer nobody graded yet, and the score so far
        assert "awaiting grading by hand" in seen["text"]
        assert "Written response (awaiting grading by hand" in seen["text"]
        assert "Score so far: 3.0 / 5.0; 1.0 more points awaiting grading by hand" in seen["text"], seen["text"][:400]
        assert "Score: 0.0 / 1.0" not in seen["text"]
        # each part's result at its top, with the named mistake
        assert len(seen["box"]) == 3, seen["box"]
        assert any("test_add: 0 / 2" in b and "must be the int 42" in b for b in seen["box"]), seen["box"]
        assert any("test_mean: 3 / 3" in b for b in seen["box"]), seen["box"]
        assert seen["boxBeforeTest"], "the result box must come before the test cell"
        screenshot(page, "feedback.png", tmp_path)
    finally:
        page.close()


def test_student_text_in_the_box_and_the_math_stays_text(feedback, browser):
    page, _ = offline_page(browser, feedback["evil"].as_uri())
    try:
        seen = page.evaluate("""() => ({pwned: Object.keys(window).filter(k => k.startsWith('pwned')),
                                       box: [...document.querySelectorAll('.dlcourse-part-result')].map(b => b.innerText),
                                       hrefs: [...document.querySelectorAll('math [href]')].length})""")
        assert seen["pwned"] == [] and seen["hrefs"] == 0, seen
        assert any(EVIL in b for b in seen["box"]), "the student's message is shown as text"
    finally:
        page.close()


@pytest.mark.parametrize("latex", ["\\text{<script>alert(1)</script>}", "\\text{<img src=x onerror=alert(1)>}"])
def test_markup_inside_latex_is_not_mathml(latex):
    assert to_mathml(latex) is None


def test_attributes_outside_the_allow_list_are_dropped():
    out = to_mathml("\\href{javascript:alert(1)}{x} + \\style{background:url(http://x)}{y}")
    assert out and "javascript" not in out and "url(" not in out and "<mi>x</mi>" in out


def test_parts_end_with_their_graded_cells():
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    def graded(gid, **meta):
        return new_code_cell("", metadata={"nbgrader": {"grade": True, "grade_id": gid, "points": 1, "score": 1, **meta}})
    nb = new_notebook(cells=[new_markdown_cell("# Title"), new_code_cell("import x"), new_markdown_cell("## Part 1"),
                             new_code_cell("x = 1"), graded("t1"), graded("t2"),
                             new_markdown_cell("## Part 2"), graded("t3"), new_markdown_cell("the end")])
    assert [(start, [c.metadata.nbgrader.grade_id for c in cells]) for start, cells in parts(nb.cells)] == \
        [(0, ["t1", "t2"]), (6, ["t3"])]
    nb, _ = PartResults().preprocess(nb, {})
    kinds = [c.cell_type for c in nb.cells]
    assert kinds == ["markdown", "code", "markdown", "raw", "code", "code", "code", "markdown", "raw", "code",
                     "markdown"], kinds
    assert nbformat.validate(nb) is None


def test_plain_nbgrader_feedback_has_the_same_additions(tmp_path):
    """`make feedback` (a plain `nbgrader generate_feedback` with the course's config) writes the
    same feedback: the result boxes, MathML and no MathJax script."""
    course = tiny_course(tmp_path / "course")
    course.submit("float_add", ASSIGNMENT, NOTEBOOK, solved(course, ASSIGNMENT, NOTEBOOK, STUDENTS["float_add"]))
    course.autograde(ASSIGNMENT)
    proc = course.feedback(ASSIGNMENT)
    page = course.path("feedback", "float_add", ASSIGNMENT, f"{NOTEBOOK}.html")
    assert page.exists(), proc.stderr[-3000:]
    text = page.read_text()
    assert 'class="dlcourse-part-result' in text and "must be the int 42" in text
    assert "<math" in text, "the math must be MathML"
    assert "cdnjs.cloudflare.com" not in text and "MathJax.js" not in text and "latest.js" not in text
    assert "awaiting grading by hand" in text
