"""Render: SanitizeStudentOutput, what a student produced is safe to render as HTML.

The feedback file, formgrader's manual-grading page (served from the instructor's own Jupyter
origin) and JupyterLab all render a graded notebook's outputs and markdown as HTML. Without this
step a student's `display(HTML("<script>..."))`, `<img src=x onerror=...>` or raw HTML in a
written answer runs in whoever opens it (the instructor's session, in formgrader). nbconvert's
own `sanitize_html` escapes ordinary markdown (paragraphs, headings, images), so the notebook is
cleaned here instead, with bleach (the allow-list sanitizer nbconvert itself uses):

* outputs of every code cell (the kernel made them, whoever's cell it is): text/html and
  image/svg+xml are cleaned with an allow-list of tags, attributes, URL schemes and CSS
  properties; text/markdown like a markdown cell (below); plain text, LaTeX, JSON, raster images
  and widget views are kept as they are; every other MIME type (application/javascript and any
  type a viewer might execute) is dropped;
* markdown cells the student can edit (answers, added cells, unlocked release text): the raw HTML
  inside them is cleaned where it stands and links or images whose URL scheme is not safe
  (`javascript:` and the like) lose their URL, so the markdown and the LaTeX stay as written;
* widget state in the notebook's metadata: only the standard @jupyter-widgets models are kept
  (the widget embedder loads any other model's code by name from a CDN) and their HTML values
  are cleaned.

Cells whose source nbgrader restores from the instructor's copy (locked cells, tests) keep their
source. Clean content is left byte for byte as it is: bleach returns safe, well-formed HTML
unchanged, and markdown without raw HTML or unsafe links is not touched.

    cfg.Autograde.autograde_preprocessors = [..., SanitizeStudentOutput]   # batch.autograde_preprocessors
    c.GenerateFeedback.preprocessors = [..., "dlcourse.grading.sanitize.SanitizeStudentOutput", ...]
"""

import bleach
from bleach.css_sanitizer import ALLOWED_CSS_PROPERTIES, ALLOWED_SVG_PROPERTIES, CSSSanitizer
from mistune.renderers.html import HTMLRenderer
from nbconvert.filters.markdown_mistune import MarkdownWithMath
from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader import utils

HTML_TAGS = {
    "a", "abbr", "acronym", "b", "big", "blockquote", "br", "caption", "center", "cite", "code", "col", "colgroup",
    "dd", "del", "details", "dfn", "div", "dl", "dt", "em", "figcaption", "figure", "font", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span",
    "strike", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u",
    "ul", "var",
}
SVG_TAGS = {
    "svg", "g", "defs", "symbol", "use", "title", "desc", "path", "rect", "circle", "ellipse", "line", "polyline",
    "polygon", "text", "tspan", "clipPath", "mask", "pattern", "marker", "linearGradient", "radialGradient", "stop",
}
HTML_ATTRIBUTES = {
    "*": {"class", "title", "style", "align", "valign", "dir", "lang"},
    "a": {"href"}, "img": {"src", "alt", "width", "height"}, "font": {"color", "size", "face"},
    "ol": {"start", "type"}, "td": {"colspan", "rowspan", "width"}, "th": {"colspan", "rowspan", "width", "scope"},
    "table": {"border", "cellpadding", "cellspacing", "width"}, "col": {"span", "width"}, "colgroup": {"span"},
    "details": {"open"}, "abbr": {"title"},
}
SVG_ATTRIBUTES = {
    "id", "class", "style", "transform", "width", "height", "x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "r", "rx",
    "ry", "d", "points", "viewBox", "preserveAspectRatio", "xmlns", "xlink", "version", "fill", "fill-opacity",
    "fill-rule", "stroke", "stroke-width", "stroke-linecap", "stroke-linejoin", "stroke-dasharray",
    "stroke-dashoffset", "stroke-miterlimit", "stroke-opacity", "opacity", "clip-path", "clip-rule", "mask",
    "font-family", "font-size", "font-style", "font-weight", "text-anchor", "dominant-baseline", "dx", "dy",
    "offset", "stop-color", "stop-opacity", "gradientUnits", "gradientTransform", "patternUnits", "markerWidth",
    "markerHeight", "markerUnits", "refX", "refY", "orient", "href", "clipPathUnits",
}
PROTOCOLS = {"http", "https", "mailto", "data"}
DATA_IMAGES = ("data:image/png", "data:image/jpeg", "data:image/gif", "data:image/webp", "data:image/svg+xml")
KEPT_TYPES = {"text/plain", "text/latex", "application/json", "image/png", "image/jpeg", "image/gif", "image/bmp",
              "image/webp", "application/pdf", "application/vnd.jupyter.widget-view+json"}
WIDGET_MODULES = {"@jupyter-widgets/base", "@jupyter-widgets/controls", "@jupyter-widgets/output"}
HTML_WIDGETS = {"HTMLModel", "HTMLMathModel"}
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
CSS = CSSSanitizer(allowed_css_properties=ALLOWED_CSS_PROPERTIES, allowed_svg_properties=ALLOWED_SVG_PROPERTIES)
_URLS = HTMLRenderer()   # mistune's own check of a markdown link's URL (nbconvert turns it off)


def _attribute_allowed(tag: str, name: str, value: str) -> bool:
    if tag in SVG_TAGS:
        # a reference inside the drawing (matplotlib's <use xlink:href="#m...">), nothing outside it
        return name in SVG_ATTRIBUTES and (name != "href" or value.strip().startswith("#"))
    if name not in HTML_ATTRIBUTES["*"] and name not in HTML_ATTRIBUTES.get(tag, ()):
        return False
    if value.strip().lower().startswith("data:"):   # bleach checks the other schemes itself
        return tag == "img" and name == "src" and value.strip().lower().startswith(DATA_IMAGES)
    return True


def clean_html(text: str) -> str:
    """`text` with every tag, attribute, URL scheme and CSS property outside the allow-list removed
    (bleach; the text of a removed element stays as text). Safe, well-formed HTML comes back
    unchanged."""
    return bleach.clean(text, tags=HTML_TAGS | SVG_TAGS, attributes=_attribute_allowed, protocols=PROTOCOLS,
                        css_sanitizer=CSS, strip=True, strip_comments=True)


def _inline_tag(fragment: str) -> str:
    """One raw HTML tag of a markdown paragraph, cleaned on its own: an end tag of an allowed
    element stays; a start tag keeps its allowed attributes (without the end tag bleach adds)."""
    stripped = fragment.strip()
    if stripped.startswith("</"):
        name = stripped[2:-1].strip().lower()
        return fragment if stripped.endswith(">") and name in {t.lower() for t in HTML_TAGS | SVG_TAGS} else ""
    cleaned = clean_html(fragment)
    end = f"</{stripped[1:].split(None, 1)[0].rstrip('/>').lower()}>" if stripped.startswith("<") else ""
    if end != "</>" and cleaned.lower().endswith(end) and not fragment.lower().endswith(end):
        cleaned = cleaned[:-len(end)]
    return cleaned


def _unsafe_parts(tokens: list):
    """(raw text, its replacement) of every raw HTML piece and unsafe URL in mistune's tokens."""
    for token in tokens:
        kind, attrs = token.get("type"), token.get("attrs") or {}
        if kind in ("block_html", "inline_html"):
            raw = token.get("raw", "")
            clean = clean_html(raw) if kind == "block_html" else _inline_tag(raw)
            if clean != raw:
                yield raw, clean
        url = attrs.get("url")
        if kind in ("link", "image") and url is not None:
            embedded = kind == "image" and url.startswith("attachment:")   # nbconvert inlines the cell's attachment
            if not embedded and _URLS.sanitize_url(url) != url:
                yield url, "#harmful-link"
        yield from _unsafe_parts(token.get("children") or [])


def clean_markdown(source: str) -> str:
    """Markdown with its raw HTML cleaned where it stands and unsafe link URLs replaced; the
    rest (markdown, LaTeX) unchanged. Parsed the way nbconvert renders it (mistune with math).
    Where a piece cannot be found in the source as written (HTML inside a block quote), the
    whole cell is shown as literal text instead."""
    for _ in range(5):   # cleaning can join pieces into new HTML ("<scr<b>ipt>"): clean until nothing changes
        parts = list(_unsafe_parts(MarkdownWithMath(renderer=None)(source)))
        if not parts:
            return source
        out, cursor = [], 0
        for raw, clean in parts:
            at = source.find(raw, cursor)
            if at < 0 and raw.endswith("\n"):   # mistune ends the last block with a newline the source may lack
                raw, clean = raw[:-1], clean[:-1] if clean.endswith("\n") else clean
                at = source.find(raw, cursor)
            if at < 0:
                return as_literal(source)
            out += [source[cursor:at], clean]
            cursor = at + len(raw)
        source = "".join(out) + source[cursor:]
    return as_literal(source)


def as_literal(source: str) -> str:
    """Markdown that shows `source` as a code block (its HTML never rendered)."""
    longest = run = 0
    for ch in source:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"*(shown as text: it held HTML that could not be cleaned in place)*\n\n{fence}\n{source}\n{fence}"


def clean_output(output):
    """The output with its rich data made safe (see the module's docstring); None when nothing
    of it can be shown safely. An output that needs no change is returned as it is."""
    if "data" not in output:   # stream and error: the templates escape their text
        return output
    data = {}
    for mime, value in output["data"].items():
        text = "".join(value) if isinstance(value, list) else value
        if mime in KEPT_TYPES:
            data[mime] = value
        elif mime in ("text/html", "image/svg+xml") and isinstance(text, str):
            data[mime] = _unless_same(value, clean_html(text))
        elif mime == "text/markdown" and isinstance(text, str):
            data[mime] = _unless_same(value, clean_markdown(text))
    if data == output["data"]:
        return output
    if not data:
        return None
    output["data"] = data
    return output


def _unless_same(value, cleaned: str):
    """`value` itself (a string or nbformat's list of lines) where cleaning changed nothing."""
    return value if cleaned == ("".join(value) if isinstance(value, list) else value) else cleaned


def clean_widget_state(metadata: dict) -> None:
    """Keep the standard widgets' models only, with their HTML values (and an Output widget's
    outputs) cleaned, in the notebook's metadata."""
    state = metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state")
    if not isinstance(state, dict):
        return
    for model_id, model in list(state.items()):
        fields = model.get("state", {}) if isinstance(model, dict) else {}
        modules = {model.get("model_module") if isinstance(model, dict) else None, fields.get("_view_module"),
                   fields.get("_model_module")} - {None}
        if not modules or not modules <= WIDGET_MODULES:
            del state[model_id]
            continue
        html_model = model.get("model_name") in HTML_WIDGETS
        for key in ("value", "description") if html_model else ("description",) if fields.get("description_allow_html") else ():
            if isinstance(fields.get(key), str):
                fields[key] = clean_html(fields[key])
        if isinstance(fields.get("outputs"), list):
            fields["outputs"] = [o for o in (clean_output(o) for o in fields["outputs"]) if o is not None]


class SanitizeStudentOutput(NbGraderPreprocessor):
    """Make what the student produced safe to render as HTML: outputs, the markdown they can
    edit, widget state. A no-op on a notebook with nothing to clean."""

    def preprocess(self, nb, resources):
        changed = 0
        for cell in nb.cells:
            if cell.cell_type == "code":
                before = len(cell.outputs)
                kept = [o for o in (clean_output(o) for o in cell.outputs) if o is not None]
                if len(kept) != before:
                    cell.outputs = kept
            elif cell.cell_type == "markdown" and not utils.is_locked(cell):
                cleaned = clean_markdown(cell.source)
                if cleaned != cell.source:
                    changed += 1
                    cell.source = cleaned
        clean_widget_state(nb.metadata)
        if changed:
            self.log.info("Cleaned HTML in %d markdown cells", changed)
        return nb, resources
