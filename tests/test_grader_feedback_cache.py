"""The feedback exporter (lib/dlcourse/grading/feedback.py) writes the very HTML that nbconvert's
own HTMLExporter writes, whether its compiled templates come from the batch's cache or not
(shown with nbconvert's default template; nbgrader's feedback template extends it)."""
from pathlib import Path

import nbformat
from nbconvert.exporters import HTMLExporter
from traitlets.config import Config

from dlcourse.grading.feedback import FeedbackExporter

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "solutions" / "ps_convolution" / "convolution.ipynb"


def config(**extra) -> Config:
    cfg = Config()
    for key, value in extra.items():
        setattr(cfg.FeedbackExporter, key, value)
    return cfg


def test_cached_templates_give_the_same_html(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    stock, _ = HTMLExporter(config=config()).from_notebook_node(nb)
    cache = tmp_path / "templates"
    cache.mkdir()
    first, _ = FeedbackExporter(config=config(bytecode_dir=str(cache))).from_notebook_node(nb)
    stored = sorted(p.name for p in cache.iterdir())
    assert stored, "no compiled template was stored"
    second, _ = FeedbackExporter(config=config(bytecode_dir=str(cache))).from_notebook_node(nb)
    assert sorted(p.name for p in cache.iterdir()) == stored   # the second one only read them
    assert first == stock
    assert second == stock


def test_remembered_highlights_give_the_same_html(monkeypatch):
    """Code highlighted ahead (remember_highlights, in the batch's process) is not highlighted
    again, and the HTML is byte for byte nbconvert's; another lexer is not taken from memory."""
    from nbconvert.filters.highlight import Highlight2HTML

    from dlcourse.grading import feedback
    monkeypatch.setattr(feedback, "HIGHLIGHTED", {})
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}   # as the kernel reports it
    stock, _ = HTMLExporter(config=config()).from_notebook_node(nb)
    feedback.remember_highlights([NOTEBOOK])
    calls = []
    highlight = Highlight2HTML.__call__
    monkeypatch.setattr(Highlight2HTML, "__call__", lambda self, *a, **k: calls.append(a) or highlight(self, *a, **k))
    ours, _ = FeedbackExporter(config=config()).from_notebook_node(nb)
    assert ours == stock
    assert calls == [], f"{len(calls)} cells were highlighted again"
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "python3"}
    stock, _ = HTMLExporter(config=config()).from_notebook_node(nb)
    assert FeedbackExporter(config=config()).from_notebook_node(nb)[0] == stock
    assert len(calls) == sum(c.cell_type == "code" for c in nb.cells) * 2   # stock's and ours: nothing from memory


def test_markdown_rendered_ahead_gives_the_same_html(monkeypatch, tmp_path):
    """Markdown cells rendered ahead (compile_feedback_templates, in the batch's process, from the
    release) are not rendered again, and the HTML is byte for byte what the exporter writes
    without them, with the math as MathML (offline_math) and without; the one setting does not
    answer for the other."""
    from nbconvert.exporters import HTMLExporter as Stock

    from dlcourse.grading import feedback
    from dlcourse.grading.runner import compile_feedback_templates
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for offline in (True, False):
        monkeypatch.setattr(feedback, "RENDERED", {})
        fresh, _ = FeedbackExporter(config=config(offline_math=offline)).from_notebook_node(nb)
        monkeypatch.setattr(feedback, "RENDERED", {})
        (tmp_path / f"templates-{offline}").mkdir()
        compile_feedback_templates(config(offline_math=offline), tmp_path / f"templates-{offline}", [NOTEBOOK])
        rendered = {key[1] for key in feedback.RENDERED}
        assert {c.source for c in nb.cells if c.cell_type == "markdown"} <= rendered
        calls = []
        render = feedback.FeedbackExporter._markdown2html
        monkeypatch.setattr(feedback.FeedbackExporter, "_markdown2html",
                            lambda self, *a: calls.append(a) or render(self, *a))
        ahead, _ = FeedbackExporter(config=config(offline_math=offline)).from_notebook_node(nb)
        assert ahead == fresh
        assert calls == [], f"{len(calls)} markdown cells were rendered again"
        monkeypatch.setattr(feedback.FeedbackExporter, "_markdown2html", render)
        if not offline:
            assert ahead == Stock(config=config()).from_notebook_node(nb)[0]
    assert "<math" in FeedbackExporter(config=config(offline_math=True)).from_notebook_node(nb)[0]


def test_without_a_folder_nothing_is_cached():
    exporter = FeedbackExporter(config=config())
    assert exporter.environment.bytecode_cache is None


def test_warm_up_leaves_a_worker_nothing_to_import():
    """After batch.warm_up (in the batch's process), rendering an autograded notebook's HTML (what
    each forked worker does for the feedback: code, outputs, a failed test's traceback) imports no
    module: the lexers and filters are loaded already."""
    import subprocess
    import sys
    code = f"""
import sys
import nbformat
from nbconvert.exporters import HTMLExporter
from dlcourse.grading.batch import warm_up
warm_up()
before = set(sys.modules)
nb = nbformat.read({str(NOTEBOOK)!r}, as_version=4)
nb.metadata["language_info"] = {{"name": "python", "pygments_lexer": "ipython3", "version": "3"}}
code = next(c for c in nb.cells if c.cell_type == "code")
code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="checked"),
                nbformat.v4.new_output("error", ename="AssertionError", evalue="no",
                                       traceback=["\x1b[0;31mAssertionError\x1b[0m: no"])]
HTMLExporter().from_notebook_node(nb)
print(sorted(set(sys.modules) - before))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
