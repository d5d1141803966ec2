"""Render: LaTeX math as MathML, written into the feedback when it is generated: no MathJax, no network.

A student opens the feedback file on their own laptop, offline or behind a strict network, where
nbconvert's MathJax (loaded from a CDN) never arrives and the math stays raw `$$...$$`. Browsers
render MathML themselves (Chromium since 109, Firefox, Safari), so the formulas are converted once,
by latex2mathml (pure Python, pinned), as the feedback is written.

The LaTeX can be the student's own (a written answer), and latex2mathml passes some of it through
as markup (`\\text{<b>}` becomes a <b> element, `\\href` an href attribute): its output is parsed
and rebuilt from an allow-list of MathML elements and attributes, and anything else makes the
formula fall back to its escaped source, as nbconvert shows it without MathJax.

    to_mathml(r"\\text{out}[i] = \\sum_m x[i + m]\\,k[m]", display="block")   # '<math ...>...</math>'
    to_mathml(r"\\text{<script>}")                                           # None: not MathML only
"""
import xml.etree.ElementTree as ET

# imported with the module (feedback.py, worker.py): the batch's forked workers inherit it
from latex2mathml.converter import convert

MATHML = "http://www.w3.org/1998/Math/MathML"
ELEMENTS = {
    "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msub", "msup", "msubsup", "mfrac", "msqrt", "mroot",
    "mover", "munder", "munderover", "mtable", "mtr", "mtd", "mstyle", "mpadded", "mphantom", "menclose", "merror",
    "mmultiscripts", "mprescripts", "none", "semantics", "annotation",
}
ATTRIBUTES = {
    "display", "stretchy", "mathvariant", "fence", "separator", "lspace", "rspace", "minsize", "maxsize",
    "movablelimits", "accent", "accentunder", "columnalign", "rowalign", "columnspacing", "rowspacing", "columnlines",
    "rowlines", "frame", "width", "height", "depth", "linethickness", "displaystyle", "scriptlevel", "notation",
    "symmetric", "largeop", "form", "columnspan", "rowspan", "encoding", "mathcolor", "mathbackground",
}


def _clean(element) -> bool:
    """True when `element` and everything in it is MathML of the allow-list (unknown attributes
    are dropped; an unknown element fails the whole formula)."""
    tag = element.tag.split("}", 1)[-1]
    if not element.tag.startswith("{" + MATHML + "}") and element.tag != tag or tag not in ELEMENTS:
        return False
    for name in list(element.attrib):
        if name not in ATTRIBUTES:
            del element.attrib[name]
    return all(_clean(child) for child in element)


def to_mathml(latex: str, display: str = "inline") -> str | None:
    """The MathML of `latex` ("inline" or "block"), or None where latex2mathml cannot convert it or
    its output holds anything but allowed MathML."""
    try:
        root = ET.fromstring(convert(latex, display=display))
    except Exception:   # latex2mathml raises its own errors, and others, on LaTeX it does not know
        return None
    if not _clean(root):
        return None
    ET.register_namespace("", MATHML)
    return ET.tostring(root, encoding="unicode", short_empty_elements=False)
