"""The feedback exporter: nbgrader's (nbconvert's HTMLExporter with the feedback template), with
the compiled Jinja templates kept on disk for the whole batch and highlighted code remembered.

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

    remember_highlights([Path("exercises/ps_convolution/convolution.ipynb")])   # before forking
    cfg.GenerateFeedback.exporter_class = FeedbackExporter
    cfg.FeedbackExporter.bytecode_dir = "/tmp/dlg-.../templates"
"""
import json

from jinja2 import FileSystemBytecodeCache
from nbconvert.exporters import HTMLExporter
from nbconvert.filters.highlight import Highlight2HTML
from traitlets import Unicode

# (lexer, language, magics_language, formatter options, source) -> HTML: filled in the batch's
# process (remember_highlights), read and added to in each worker
HIGHLIGHTED: dict[tuple, str] = {}


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


class FeedbackExporter(HTMLExporter):
    """HTMLExporter whose Jinja environment loads compiled templates from `bytecode_dir` and
    whose code highlighter remembers its results (RememberingHighlighter)."""

    bytecode_dir = Unicode("", help="folder for Jinja's compiled templates, shared by the batch's "
                           "workers ('': compile in every process, as nbconvert does)").tag(config=True)

    def _create_environment(self):
        environment = super()._create_environment()
        if self.bytecode_dir:
            environment.bytecode_cache = FileSystemBytecodeCache(self.bytecode_dir)
        return environment

    def register_filter(self, name, jinja_filter):
        if name == "highlight_code" and isinstance(jinja_filter, Highlight2HTML):   # HTMLExporter's own, per notebook
            jinja_filter = RememberingHighlighter(jinja_filter)
        return super().register_filter(name, jinja_filter)
