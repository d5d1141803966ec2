"""The batch grader against submissions that attack whoever reads the feedback (python -m dlcourse.grading).

One course with the tiny assignment (tests/fixtures/tiny_assignment.py), one submission per case,
one grading run with 2 workers. Two kinds of attack:

* the student's HTML runs in someone else's browser: a `<script>` or an `<img onerror>` in a
  text/html output, an `<svg onload>` (inline HTML and image/svg+xml), a JavaScript output, and
  raw HTML and a `javascript:` link in the written (markdown) answer. Each payload sets a
  `window.pwned_*` variable; headless Chromium opens the student's feedback file and formgrader's
  manual-grading page (a real `jupyter server` with nbgrader's formgrader on the graded course,
  which renders the stored autograded notebook), and no `pwned_*` may be set, while the
  submission's legitimate PNG and plain output still show;
* the hidden tests leak: the student's function reads its caller's source (`linecache` with
  `sys._getframe`, `inspect`) and prints it in the test cell, raises it as the exception's
  message, or stashes it and prints it (plain, base64, reversed) in a later cell. No hidden-test
  line may reach the feedback.

Each row names the defence that stops it (dlcourse.grading.sanitize.SanitizeStudentOutput on the
stored autograded notebook and again before the feedback; HideHiddenTests and RedactHiddenSource
in the feedback).
"""
import base64
import html
import io
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import nbformat
import pytest

from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK, TEST_ADD, TEST_MEAN
from nbgrader_harness import grade_id, solved, tiny_course
from system_packages import ensure_debian_packages
from test_lab import free_port

from dlcourse.grading.batch import Settings, grade_batch
from dlcourse.grading.report import write_outputs
from dlcourse.grading.sandbox import Limits

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# a 4x4 red PNG (what a plot is to the feedback) and a line of plain output: both must still show
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAEElEQVR4nGM4IScHRwzEcQCxYxBBO0tjggAAAABJRU5ErkJggg=="
LEGIT = (f"import base64\nfrom IPython.display import HTML, SVG, Image, Javascript, display\n"
         f"display(Image(data=base64.b64decode('{PNG}')))\nprint('plain-output-ok')\n")
ADD = "def add(a, b):\n    return a + b\n"
SANITIZER = "SanitizeStudentOutput"
PAYLOADS = {  # student: (code run before a correct add, the defence that must stop it)
    "html_script": ('display(HTML("<b>bold-ok</b><script>window.pwned_html_script = 1</script>"))\n',
                    f"{SANITIZER}: <script> removed from a text/html output"),
    "html_img": ("display(HTML('<img src=\"x\" onerror=\"window.pwned_html_img = 1\">'))\n",
                 f"{SANITIZER}: onerror removed from a text/html output"),
    "svg": ("display(HTML('<svg width=\"8\" height=\"8\" onload=\"window.pwned_svg_html = 1\"></svg>'))\n"
            "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"8\" height=\"8\" "
            "onload=\"window.pwned_svg = 1\"><circle cx=\"4\" cy=\"4\" r=\"3\"/></svg>'))\n",
            f"{SANITIZER}: onload removed from text/html and image/svg+xml outputs"),
    "js": ("display(Javascript('window.pwned_js = 1'))\n",
           f"{SANITIZER}: application/javascript output dropped"),
}
MARKDOWN = ("**Because** addition commutes: $a + b = b + a$.\n\n"
            "<img src=\"x\" onerror=\"window.pwned_markdown_img = 1\">\n"
            "<script>window.pwned_markdown_script = 1</script>\n\n"
            "See [this](javascript:window.pwned_markdown_link=1) and <b onmouseover=\"window.pwned_md_b=1\">this</b>.")
CASES = {**PAYLOADS, "markdown": (None, f"{SANITIZER}: raw HTML and javascript: links cleaned in the written answer")}

# the hidden tests' lines that would tell a student what is checked (from the fixture)
HIDDEN = [line.strip() for src in (TEST_ADD, TEST_MEAN)
          for line in src.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0].splitlines() if line.strip()]
LEAKS = {  # student: ({cell: source}, the defence that must stop it)
    "leak_stack": ({"add": "import sys, linecache\ndef add(a, b):\n"
                           "    print(''.join(linecache.getlines(sys._getframe(1).f_code.co_filename)))\n"
                           "    return a + b\n"},
                   "HideHiddenTests: a test cell with hidden tests shows no output but its error"),
    "leak_raise": ({"add": "import inspect\ndef add(a, b):\n    if (a, b) == (20, 22):\n"
                           "        raise AssertionError(inspect.getsource(inspect.stack()[1].frame))\n"
                           "    return a + b\n"},
                   "RedactHiddenSource: an error message quoting hidden tests is redacted"),
    "leak_stash": ({"add": "import sys, linecache, builtins\ndef add(a, b):\n"
                           "    builtins.stash = ''.join(linecache.getlines(sys._getframe(1).f_code.co_filename))\n"
                           "    return a + b\n",
                    "mean": "import base64\nprint(stash)\nprint(base64.b64encode(stash.encode()).decode())\n"
                            "print(stash[::-1])\ndef mean(xs):\n    return sum(xs) / len(xs)\n"},
                   "RedactHiddenSource: a later cell's output quoting hidden tests (plain, base64, reversed) is redacted"),
}


def _json(nb) -> bytes:
    return nbformat.writes(nb).encode()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    root = tmp_path_factory.mktemp("course")
    course = tiny_course(root)
    files = {}
    for student, (code, _) in PAYLOADS.items():
        files[f"{student}/tiny.ipynb"] = _json(solved(course, ASSIGNMENT, NOTEBOOK, {"add": LEGIT + code + ADD}))
    files["markdown/tiny.ipynb"] = _json(solved(course, ASSIGNMENT, NOTEBOOK, {"add": LEGIT + ADD, "written": MARKDOWN}))
    for student, (cells, _) in LEAKS.items():
        files[f"{student}/tiny.ipynb"] = _json(solved(course, ASSIGNMENT, NOTEBOOK, cells))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    archive = root.parent / "export.zip"
    archive.write_bytes(buf.getvalue())
    settings = Settings(cell_timeout=60, budget=300, workers=2,
                        limits=Limits(memory_mb=1536, processes=40, cpu_seconds=30))
    rows = {r["student"]: r for r in grade_batch(root, ASSIGNMENT, archive, settings, progress=False)}
    for student in files:
        row = rows[student.split("/")[0]]
        assert row["status"] == "graded", f"{row['student']}: {row['status']}: {row.get('reason')} {row.get('notes')}"
    return course, rows


@pytest.fixture(scope="module")
def browser():
    ensure_debian_packages(["chromium"], ["chromium"])
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def formgrader(graded, tmp_path_factory):
    """(base URL, token) of a jupyter server with nbgrader's formgrader serving the graded course."""
    course, _ = graded
    home = tmp_path_factory.mktemp("home")
    port, token = free_port(), secrets.token_hex(8)
    env = dict(os.environ, HOME=str(home), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    env.pop("DLCOURSE_GRADEBOOK_URL", None)
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "jupyter"), "server", "--no-browser", "--allow-root",
                             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                             f"--ServerApp.token={token}", f"--ServerApp.root_dir={course.root}"],
                            cwd=course.root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
                time.sleep(0.3)
        yield url, token
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def submission_id(course, student: str) -> str:
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course.path('gradebook.db')}", "dlcourse") as gb:
        return gb.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student).id


def visit(browser, url: str) -> dict:
    """What a page did once loaded: the pwned_* variables its scripts set, javascript: links, and
    whether the PNG, the plain output and the markdown answer are shown."""
    page = browser.new_page()
    # the feedback loads jQuery from a CDN, out of reach here; a JavaScript output starts with `$(...)`
    page.add_init_script("window.$ = window.$ || function () { return {}; };")
    try:
        page.goto(url, wait_until="load", timeout=60_000)
        page.wait_for_timeout(300)   # an onerror/onload fires after the image fails or the SVG loads
        return page.evaluate("""() => ({
            pwned: Object.keys(window).filter(k => k.startsWith('pwned')),
            js_links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))
                      .filter(h => /^\\s*javascript:/i.test(h)),
            png: [...document.images].some(i => i.src.startsWith('data:image/png') && i.naturalWidth === 4),
            text: document.body.innerText,
            html: document.body.innerHTML,
        })""")
    finally:
        page.close()


def stored(course, student: str):
    return course.read("autograded", student, ASSIGNMENT, f"{NOTEBOOK}.ipynb")


@pytest.mark.parametrize("student, defence", [(s, d) for s, (_, d) in CASES.items()], ids=list(CASES))
@pytest.mark.parametrize("where", ["feedback", "formgrader"])
def test_student_html_does_not_run_in_a_browser(graded, browser, formgrader, where, student, defence):
    course, _ = graded
    if where == "feedback":
        url = course.path("feedback", student, ASSIGNMENT, f"{NOTEBOOK}.html").as_uri()
    else:
        base, token = formgrader
        url = f"{base}/formgrader/submissions/{submission_id(course, student)}?token={token}"
    seen = visit(browser, url)
    assert seen["pwned"] == [], f"{where}: the student's payload ran ({seen['pwned']}); expected defence: {defence}"
    assert seen["js_links"] == [], f"{where}: javascript: links left ({seen['js_links']}); expected defence: {defence}"
    assert seen["png"], f"{where}: the student's PNG output is no longer shown"
    assert "plain-output-ok" in seen["text"], f"{where}: the student's plain output is no longer shown"
    if student == "html_script":
        assert "<b>bold-ok</b>" in seen["html"], f"{where}: harmless HTML must still render"
    if student == "markdown":
        assert "<strong>Because</strong>" in seen["html"], f"{where}: the answer's markdown must still render"
        mathml = "<mi>a</mi><mo>+</mo><mi>b</mi><mo>=</mo><mi>b</mi><mo>+</mo><mi>a</mi>" in seen["html"]
        assert "a + b = b + a" in seen["text"] or where == "feedback" and mathml, \
            f"{where}: the answer's LaTeX must be kept (as MathML in the feedback: grading/mathml.py)"


@pytest.mark.parametrize("student, defence", [(s, d) for s, (_, d) in CASES.items()], ids=list(CASES))
def test_stored_autograded_notebook_is_clean(graded, student, defence):
    """What formgrader, JupyterLab or any other viewer reads: no active MIME type, no event
    handler, no script, whatever renders it; the instructor's own cells are untouched."""
    course, _ = graded
    nb = stored(course, student)
    release = course.read("exercises", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    rendered = [c.outputs if c.cell_type == "code" else c.source for c in nb.cells]   # code itself is shown as text
    text = json.dumps([rendered, nb.metadata]).lower()
    for bad in ("<script", "onerror", "onload", "onmouseover", "javascript:", "application/javascript"):
        assert bad not in text, f"{student}: {bad!r} is still in the stored notebook; expected defence: {defence}"
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the PNG output must be kept"
    if student == "svg":
        assert any("image/svg+xml" in o.get("data", {}) for o in outputs), "the cleaned SVG must be kept"
    ours = {grade_id(c): c.source for c in nb.cells if grade_id(c) and c.cell_type == "markdown" and grade_id(c) != "written"}
    assert ours == {grade_id(c): c.source for c in release.cells if grade_id(c) in ours}


def test_clean_notebooks_are_left_byte_for_byte():
    """The course's own notebooks (outputs, and markdown as if a student could edit all of it)
    come out of the sanitizer unchanged: honest work is stored and shown as it was."""
    from dlcourse.grading.sanitize import SanitizeStudentOutput
    repo = Path(__file__).resolve().parents[1]
    for path in sorted([*repo.glob("solutions/*/*.ipynb"), *repo.glob("exercises/*/*.ipynb")]):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            cell.metadata.pop("nbgrader", None)
        before = nbformat.writes(nb)
        assert nbformat.writes(SanitizeStudentOutput().preprocess(nb, {})[0]) == before, f"{path.name} was changed"


def feedback_text(course, student: str) -> str:
    return html.unescape(course.path("feedback", student, ASSIGNMENT, f"{NOTEBOOK}.html").read_text())


@pytest.mark.parametrize("student, defence", [(s, d) for s, (_, d) in LEAKS.items()], ids=list(LEAKS))
def test_hidden_tests_do_not_leak_into_feedback(graded, student, defence):
    course, _ = graded
    text = feedback_text(course, student)
    assert "_hid" not in text and "_hm" not in text, f"{student}: hidden test source reached the feedback; {defence}"
    for line in HIDDEN:
        assert line not in text, f"{student}: {line!r} reached the feedback; expected defence: {defence}"
    if student == "leak_raise":
        assert "AssertionError" in text, "the failing check's error name must still show"
    for run in re.findall(r"[A-Za-z0-9+/=]{40,}", text):
        decoded = base64.b64decode(run + "=" * (-len(run) % 4), validate=False).decode("latin-1")
        assert "_hid" not in decoded, f"{student}: base64 of the hidden tests reached the feedback; {defence}"
    assert "_hid"[::-1] not in text, f"{student}: the hidden tests reversed reached the feedback; {defence}"


def test_a_leak_is_redacted_with_a_visible_note(graded):
    course, rows = graded
    text = feedback_text(course, "leak_stash")
    assert "quoted the hidden tests" in text
    assert rows["leak_stash"]["parts"]["test_add"] == 2 and rows["leak_stash"]["parts"]["test_mean"] == 3


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def test_redaction_catches_evident_encodings():
    """RedactHiddenSource on a notebook whose outputs carry the hidden tests in every evident
    disguise: each becomes the note; the honest outputs (the visible check's line, the failing
    check's message) stay as they were."""
    import codecs
    import zlib

    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from dlcourse.grading.redact import NOTE, RedactHiddenSource
    src = "\n".join(HIDDEN)
    meta = {"nbgrader": {"grade": True, "locked": True, "solution": False, "grade_id": "test_add", "points": 2,
                         "schema_version": 3}}
    disguised = {
        "plain": src, "upper case": src.upper(), "repr": repr(src), "json": json.dumps(src),
        "coloured": "\x1b[0;32m".join(src.split(" ")), "reversed": src[::-1], "rot13": codecs.encode(src, "rot13"), "hex": src.encode().hex(),
        "base64": base64.b64encode(src.encode()).decode(),
        "zlib + urlsafe base64": base64.urlsafe_b64encode(zlib.compress(src.encode())).decode(),
    }
    honest = [new_output("stream", name="stdout", text="add: visible checks passed\n"),
              new_output("error", ename="AssertionError", evalue="add(20, 22) must be the int 42",   # its own
                         traceback=[f"----> 6 \x1b[0;32m{HIDDEN[1]}"])]   # traceback: HideHiddenTests drops it
    hostile = [new_output("stream", name="stdout", text=f"{how}: {text}\n") for how, text in disguised.items()]
    hostile += [new_output("display_data", data={"text/html": html.escape(src), "text/plain": "x"}),
                new_output("display_data", data={"text/plain": "ok"}, metadata={"image/png": {"alt": src}}),
                new_output("error", ename=HIDDEN[0], evalue="x", traceback=[])]
    cells = [new_code_cell(TEST_ADD, metadata=meta, outputs=honest)] + [new_code_cell("", outputs=[o]) for o in hostile]
    nb = new_notebook(cells=cells, metadata={"widgets": {"application/vnd.jupyter.widget-state+json": {"state": {
        "m": {"model_name": "HTMLModel", "model_module": "@jupyter-widgets/controls", "state": {"value": src}}}}}})
    nb, _ = RedactHiddenSource().preprocess(nb, {})
    assert nb.cells[0].outputs == honest
    for how, output in zip([*disguised, "text/html", "metadata", "ename"], _outputs(nb)[2:]):
        assert NOTE in json.dumps(output) and "_hid" not in json.dumps(output).lower(), f"{how} was not redacted"
    assert "widgets" not in nb.metadata, "widget state quoting the hidden tests must go"


def test_redaction_catches_a_line_printed_in_pieces():
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from dlcourse.grading.redact import NOTE, RedactHiddenSource
    meta = {"nbgrader": {"grade": True, "locked": True, "solution": False, "grade_id": "test_add", "points": 2,
                         "schema_version": 3}}
    line = HIDDEN[0]
    pieces = [line[:len(line) // 2], line[len(line) // 2:]]
    nb = new_notebook(cells=[new_code_cell(TEST_ADD, metadata=meta)] + [
        new_code_cell("", outputs=[new_output("stream", name="stdout", text=p + "\n")]) for p in pieces])
    nb, _ = RedactHiddenSource().preprocess(nb, {})
    assert all(o.text == NOTE + "\n" for o in _outputs(nb)), _outputs(nb)


def test_a_line_that_a_tests_own_message_quotes_is_not_redacted():
    """ps_gan's hidden tests run `opt_d.step()` and say "expected one opt_d.step() and then ...":
    a student failing that check must read the message."""
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from dlcourse.grading.redact import RedactHiddenSource
    source = ("### BEGIN HIDDEN TESTS\ncounter.opt_d_step()\n_seen = counter.calls\nassert _seen == 1, "
              "f'expected one counter.opt_d_step() call, got {_seen}'\n### END HIDDEN TESTS")
    meta = {"nbgrader": {"grade": True, "locked": True, "solution": False, "grade_id": "t", "points": 1,
                         "schema_version": 3}}
    error = new_output("error", ename="AssertionError", evalue="expected one counter.opt_d_step() call, got 2",
                       traceback=[])
    nb = new_notebook(cells=[new_code_cell(source, metadata=meta, outputs=[error])])
    nb, _ = RedactHiddenSource().preprocess(nb, {})
    assert nb.cells[0].outputs[0].evalue == "expected one counter.opt_d_step() call, got 2"


def test_widget_state_keeps_only_standard_widgets_cleaned():
    """The widget embedder loads a model's code by its module name from a CDN, and an HTML
    widget's value is set as HTML: only @jupyter-widgets models stay, their HTML cleaned."""
    from nbformat.v4 import new_notebook

    from dlcourse.grading.sanitize import SanitizeStudentOutput
    state = {"html": {"model_name": "HTMLModel", "model_module": "@jupyter-widgets/controls",
                      "state": {"_view_module": "@jupyter-widgets/controls",
                                "value": "<b>ok</b><img src=x onerror=window.pwned_widget=1>"}},
             "evil": {"model_name": "AnyModel", "model_module": "some-npm-package", "state": {}},
             "slider": {"model_name": "IntSliderModel", "model_module": "@jupyter-widgets/controls",
                        "state": {"value": 3, "description": "a & b"}}}
    nb = new_notebook(metadata={"widgets": {"application/vnd.jupyter.widget-state+json": {"state": state}}})
    nb, _ = SanitizeStudentOutput().preprocess(nb, {})
    kept = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    assert set(kept) == {"html", "slider"}
    assert kept["html"]["state"]["value"] == '<b>ok</b><img src="x">'
    assert kept["slider"]["state"] == {"value": 3, "description": "a & b"}


def test_report_escapes_what_students_control(tmp_path, browser):
    """report.html: a student id, a failure reason and a flag full of HTML are shown as text."""
    evil = "<img src=x onerror=window.pwned_report=1>"
    rows = [{"student": f"s{evil}", "status": "failed", "reason": f"bad {evil}", "notes": [evil], "flags": [],
             "parts": {}, "score": None, "max_score": 5},
            {"student": "t", "status": "graded", "score": 5, "max_score": 5, "parts": {"test_add": 5},
             "flags": [f"flag {evil}"], "notes": [evil], "pending": []}]
    write_outputs(tmp_path, f"ps{evil}", rows, {"test_add": 5})
    seen = visit(browser, (tmp_path / "report.html").as_uri())
    assert seen["pwned"] == [], "the report ran a student's HTML"
    assert evil in seen["text"], "the student's text must be shown as text"
