"""Render: the feedback exporter, nbgrader's (nbconvert's HTMLExporter with the feedback template),
with the compiled Jinja templates kept on disk for the whole batch and highlighted code remembered.

Each grading worker is a new process, so nbconvert compiled the same nine templates again for
every submission (about 0.16 s of the 0.5 s that a feedback file takes). Jinja's own bytecode
cache stores them once in the batch's private work folder, keyed by the template's source, so
the HTML is byte for byte what nbconvert writes without it.

Most code cells of a feedback file are the same for every student: the instructions' code and
the test cells once their hidden part is cleared. `remember_highlights(release notebooks)` in the
batch's process highlights those once; the workers, its forks, inherit the results and
highlight only what differs (the students' own code). A highlighted cell is a pure function of
its source, the lexer and the formatter's options, which together are the key.

The exporter renders what it is given: the students' HTML is cleaned before it gets here
(SanitizeStudentOutput, among the feedback's preprocessors), not with nbconvert's `sanitize_html`,
whose short allow-list shows ordinary markdown (paragraphs, headings, images) as escaped tags.

The course's additions, each a setting (`nbgrader_config.py` turns them on; off, the HTML is
nbconvert's and nbgrader's byte for byte, tests/test_grader_feedback_cache.py):

* `offline_math`: the markdown's math is written as MathML when the file is made (mathml.py) and
  the MathJax script (from a CDN) is left out: a student who opens the file offline, or behind a
  strict network, reads the formulas. LaTeX that latex2mathml cannot convert stays as its source.
* `template_file = "dlcourse_feedback.html.j2"` (TEMPLATE, below): nbgrader's feedback template
  with a part awaiting grading by hand (awaiting.py) saying so instead of "Score: 0.0 / 2.0", and
  the header giving the score so far out of the points graded so far (not 11 / 13 while 2 points
  wait for a person).

    remember_highlights([Path("exercises/ps_convolution/convolution.ipynb")])   # before forking
    cfg.GenerateFeedback.exporter_class = FeedbackExporter
    cfg.FeedbackExporter.bytecode_dir = "/tmp/dlg-.../templates"
"""
import json

from jinja2 import ChoiceLoader, DictLoader, FileSystemBytecodeCache, pass_context
from nbconvert.exporters import HTMLExporter
from nbconvert.filters.highlight import Highlight2HTML
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from traitlets import Bool, Unicode

from dlcourse.grading.mathml import to_mathml

# (lexer, language, magics_language, formatter options, source) -> HTML: filled in the batch's
# process (remember_highlights), read and added to in each worker
HIGHLIGHTED: dict[tuple, str] = {}
# (offline math, source, attachments, embed images, path, anchor options, lexer options) -> HTML:
# the markdown cells, rendered in the batch's process for the release (compile_feedback_templates)
RENDERED: dict[tuple, str] = {}


class RememberingHighlighter:
    """nbconvert's Highlight2HTML (`inner`), each result kept in HIGHLIGHTED."""

    def __init__(self, inner: Highlight2HTML):
        self.inner = inner

    def __call__(self, source, language=None, metadata=None):
        # the metadata matters to the highlighting only through its magics_language (nbconvert's _pygments_highlight)
        key = (self.inner.pygments_lexer, language, (metadata or {}).get("magics_language"),
               json.dumps(self.inner.extra_formatter_options, sort_keys=True, default=repr), source)
        if key not in HIGHLIGHTED:
            HIGHLIGHTED[key] = self.inner(source, language=language, metadata=metadata)
        return HIGHLIGHTED[key]


def remember_highlights(notebooks, lexer: str = "ipython3") -> None:
    """Highlight the code cells of these notebooks (the release: what every student's copy
    shares) with `lexer` (what a Python kernel reports) into HIGHLIGHTED."""
    import nbformat
    highlight = RememberingHighlighter(Highlight2HTML(pygments_lexer=lexer))
    for path in notebooks:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                highlight(cell.source, metadata=cell.metadata)


class MathMLRenderer(IPythonRenderer):
    """nbconvert's markdown renderer with the math written as MathML (mathml.py); a formula that
    cannot be converted stays as nbconvert writes it (escaped LaTeX)."""

    def block_math(self, body: str) -> str:
        return to_mathml(body, display="block") or super().block_math(body)

    def inline_math(self, body: str) -> str:
        return to_mathml(body, display="inline") or super().inline_math(body)

    def latex_environment(self, name: str, body: str) -> str:
        return to_mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", display="block") or \
            super().latex_environment(name, body)


# The math is MathML already: nothing for MathJax to do, and no script to fetch from a CDN.
NO_MATHJAX = "{%- macro mathjax(url=None) -%}{%- endmacro -%}"

TEMPLATE_NAME = "dlcourse_feedback.html.j2"
# nbgrader's feedback template (its index.html.j2, found first on the template path by that name),
# with a graded cell awaiting grading by hand saying so: its header, its entry in the table of
# contents and the notebook's score (out of the points graded so far). Only those blocks differ.
TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- macro awaiting(cell) -%}awaiting grading by hand, {{ cell.metadata.nbgrader.points | float | round(2) }} points{%- endmacro -%}
{% block body %}
{%- set info = resources.nbgrader -%}
{%- set waiting = info.awaiting_points | default(0) -%}
<body>
<style>
.dlcourse-part-result { border-left: 4px solid #3c763d; background: #f7f7f7; padding: .4em .8em; margin: .4em 0 .8em; }
.dlcourse-part-result.dlcourse-failed { border-left-color: #a94442; }
.dlcourse-part-result.dlcourse-awaiting { border-left-color: #8a6d3b; }
.dlcourse-part-result ul { margin: .2em 0 0 1.2em; padding: 0; }
li.dlcourse-passed { color: #3c763d; } li.dlcourse-failed { color: #a94442; } li.dlcourse-awaiting { color: #8a6d3b; }
.dlcourse-message { font-family: monospace; white-space: pre-wrap; color: #222; }
</style>
  <a name="top"></a>
  <div class="container">
    <div class="panel panel-default">
      <div class="panel-heading">
        {%- if waiting > 0 %}
        <h4>{{ info.notebook }} (Score so far: {{ info.score | float | round(2) }} / {{ (info.max_score - waiting) | float | round(2) }};
          {{ waiting | float | round(2) }} more points <span class="dlcourse-awaiting">awaiting grading by hand</span>)</h4>
        {%- else %}
        <h4>{{ info.notebook }} (Score: {{ info.score | float | round(2) }} / {{ info.max_score | float | round(2) }})</h4>
        {%- endif %}
        <div id="toc">
          <ol>
          {% for cell in nb.cells %}
            {% set g = cell.metadata.nbgrader %}
            {% if g and g.grade %}
            {% set kind = "Test cell" if not g.solution else "Coding free-response" if cell.cell_type == "code" else "Written response" %}
            <li><a href="#{{ g.grade_id }}">{{ kind }}</a> ({% if g.awaiting %}{{ awaiting(cell) }}{% else %}Score: {{ g.score | float | round(2) }} / {{ g.points | float | round(2) }}{% endif %})</li>
            {% elif cell.cell_type == "markdown" and g and g.task %}
            <li><a href="#{{ g.grade_id }}">Task</a> (Score: {{ g.score | float | round(2) }} / {{ g.points | float | round(2) }})</li>
            {% endif %}
            {% if g and g.comment %}
            <li><a href="#comment-{{ g.grade_id }}">Comment</a></li>
            {% endif %}
          {% endfor %}
          {% if info.late_penalty > 0 %}
            <li class="late-penalty">Late submission penalty (Score: -{{ info.late_penalty | float | round(2) }})</li>
          {% endif %}
          </ol>
        </div>
      </div>
      <div class="panel-body">
        <div id="notebook" class="border-box-sizing">
          <div class="container" id="notebook-container">
            {{ super.super() }}
          </div>
        </div>
      </div>
    </div>
  </div>
</body>
{%- endblock body %}
{% block markdowncell scoped %}
{%- if cell.metadata.nbgrader and cell.metadata.nbgrader.awaiting -%}
<div class="cell border-box-sizing text_cell rendered">
  {{ self.empty_in_prompt() }}
  <div class="panel panel-primary nbgrader_cell">
    <a name="{{ cell.metadata.nbgrader.grade_id }}"></a>
    <div class="panel-heading"><span class="nbgrader-label">Student's answer</span>
      <span class="pull-right dlcourse-awaiting">{{ awaiting(cell) | capitalize }} <a href="#top">(Top)</a></span></div>
    <div class="panel-body">
      <div class="text_cell_render border-box-sizing rendered_html">
        {{ cell.source | markdown2html | strip_files_prefix }}
      </div>
    </div>
  </div>
</div>
{%- else -%}
{{ super() }}
{%- endif -%}
{% endblock markdowncell %}
"""


class FeedbackExporter(HTMLExporter):
    """HTMLExporter whose Jinja environment loads compiled templates from `bytecode_dir` and
    whose code highlighter remembers its results (RememberingHighlighter)."""

    bytecode_dir = Unicode("", help="folder for Jinja's compiled templates, shared by the batch's "
                           "workers ('': compile in every process, as nbconvert does)").tag(config=True)

    offline_math = Bool(False, help="write the markdown's math as MathML and leave out the MathJax script "
                        "(loaded from a CDN): the math renders with no network").tag(config=True)

    def _create_environment(self):
        environment = super()._create_environment()
        if self.bytecode_dir:
            environment.bytecode_cache = FileSystemBytecodeCache(self.bytecode_dir)
        ours = {TEMPLATE_NAME: TEMPLATE, **({"mathjax.html.j2": NO_MATHJAX} if self.offline_math else {})}
        environment.loader = ChoiceLoader([DictLoader(ours), environment.loader])
        return environment

    @pass_context
    def markdown2html(self, context, source):
        """nbconvert's markdown filter (HTMLExporter.markdown2html), with the math as MathML where
        `offline_math` is on; each result kept in RENDERED (a pure function of the source, the
        cell's attachments, the folder where images are embedded from and the exporter's options)."""
        cell = context.get("cell", {})
        path = context.get("resources", {}).get("metadata", {}).get("path", "") if self.embed_images else ""
        key = (self.offline_math, source, json.dumps(cell.get("attachments", {}), sort_keys=True), self.embed_images,
               path, self.anchor_link_text, self.exclude_anchor_links,
               json.dumps(self.lexer_options, sort_keys=True, default=repr))
        if key not in RENDERED:
            RENDERED[key] = self._markdown2html(context, source)
        return RENDERED[key]

    def _markdown2html(self, context, source):
        if not self.offline_math:
            return super().markdown2html(context, source)
        cell = context.get("cell", {})
        renderer = MathMLRenderer(escape=False, attachments=cell.get("attachments", {}), embed_images=self.embed_images,
                                  path=context.get("resources", {}).get("metadata", {}).get("path", ""),
                                  anchor_link_text=self.anchor_link_text,
                                  exclude_anchor_links=self.exclude_anchor_links, **self.lexer_options)
        return MarkdownWithMath(renderer=renderer).render(source)

    def register_filter(self, name, jinja_filter):
        if name == "highlight_code" and isinstance(jinja_filter, Highlight2HTML):   # HTMLExporter's own, per notebook
            jinja_filter = RememberingHighlighter(jinja_filter)
        return super().register_filter(name, jinja_filter)
